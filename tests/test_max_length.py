"""`--max-length auto`: the shortest of 128/256/512 tokens that holds 95% of the training texts whole, never
longer than what the model has learnt positions for."""

from __future__ import annotations

import json

from conftest import EXAMPLES, write_csv

from bertclf.config import TrainConfig, parse_max_length
from bertclf.encoding import auto_max_length
from bertclf.errors import UsageError


def _tokenizer(directory):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(directory))


def test_auto_picks_the_shortest_length_that_holds_95_percent(tiny_model_dir):
    tokenizer = _tokenizer(tiny_model_dir)

    def texts(short: int, long: int, long_tokens: int) -> list[str]:
        return ["a " * 10] * short + ["a " * long_tokens] * long

    assert auto_max_length(tokenizer, texts(96, 4, 400), None, 512) == 128  # 4% long: cut, as before
    assert auto_max_length(tokenizer, texts(90, 10, 200), None, 512) == 256
    assert auto_max_length(tokenizer, texts(90, 10, 300), None, 512) == 512
    assert auto_max_length(tokenizer, texts(0, 10, 2000), None, 512) == 512  # the longest, not more
    assert auto_max_length(tokenizer, texts(90, 10, 300), None, 128) == 128  # what the model can take
    # [CLS] and [SEP] count: 126 tokens fit 128, 127 do not.
    assert auto_max_length(tokenizer, ["a " * 126] * 10, None, 512) == 128
    assert auto_max_length(tokenizer, ["a " * 127] * 10, None, 512) == 256
    # A pair is [CLS] a [SEP] b [SEP]: two texts of 100 tokens need 203.
    assert auto_max_length(tokenizer, ["a " * 100] * 10, ["b " * 100] * 10, 512) == 256


def test_max_length_flag_parses_auto_and_numbers():
    assert parse_max_length("auto") is None and parse_max_length("300") == 300
    try:
        parse_max_length("long")
    except UsageError as error:
        assert "--max-length" in str(error)
    else:
        raise AssertionError("a bad --max-length was accepted")
    assert TrainConfig(train_file=EXAMPLES / "en_topics.csv").max_length is None  # auto is the default
    assert TrainConfig(train_file=EXAMPLES / "en_topics.csv", stride=100).stride_for(128) == 64  # at most half


def test_train_resolves_auto_from_the_data_and_records_it(tmp_path, cli):
    """Reviews of ~200 characters: auto gives a scratch model 256 tokens (one per character), recorded in the
    manifest and used again by predict; a given --max-length is kept as given."""
    with (EXAMPLES / "zh_reviews.csv").open(encoding="utf-8") as handle:
        import csv

        rows = [(row["text"], row["label"]) for row in csv.DictReader(handle)]
    long_rows = [((text * 20)[:200], label) for text, label in rows[:40]]
    data = write_csv(tmp_path / "long.csv", long_rows)
    for name, extra, expected, source in (("auto", [], 256, "auto"), ("given", ["--max-length", "64"], 64,
                                                                        "--max-length")):
        out = tmp_path / name
        code, _, stderr = cli("train", data, "-m", "scratch:tiny", "-o", out, "--max-steps", "2", "--cpu",
                              "--no-calibration", *extra)
        assert code == 0, stderr
        manifest = json.loads((out / "bertclf.json").read_text())
        assert manifest["max_length"] == expected and manifest["max_length_source"] == source
        assert f"max length {expected} ({source})" in stderr
    code, stdout, stderr = cli("predict", tmp_path / "auto", "--text", long_rows[0][0], "--format", "jsonl")
    assert code == 0, stderr


def test_auto_stays_within_what_a_pretrained_model_learnt(tmp_path):
    """A `bertclf pretrain` model pre-trained on 128-token sequences has random position embeddings past 128, so
    auto does not go there even where the texts are long; other models: their position table."""
    from transformers import BertConfig, BertModel

    from bertclf.model import trained_length

    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=512))
    assert trained_length(model, tmp_path) == 512
    (tmp_path / "pretrain.json").write_text(json.dumps({"kind": "pretrain", "max_length": 128}))
    assert trained_length(model, tmp_path) == 128
    (tmp_path / "pretrain.json").write_text("{ damaged")
    assert trained_length(model, tmp_path) == 512
