"""Character-bigram embeddings (bertclf.bigrams): chosen for Chinese scratch models, saved, read back alike."""

import json

import pytest
import torch
from conftest import EXAMPLES
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from bertclf.bigrams import (
    CONFIG_KEY,
    DEFAULT_BUCKETS,
    HASH_KEY,
    HASH_VERSION,
    LEGACY_HASH_VERSION,
    TENSOR_NAME,
    auto_bigram_buckets,
    bigram_ids,
)
from bertclf.errors import EXIT_DATA, EXIT_USAGE
from bertclf.pooling import classifier_class, set_pooling


def _tiny_classifier(pooling: str = "cls", buckets: int = 101):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, num_labels=3)
    setattr(config, CONFIG_KEY, buckets)
    set_pooling(config, pooling)
    return classifier_class(config)(config).eval()


def test_each_position_pairs_with_the_next_token_and_the_last_with_padding():
    ids = torch.tensor([[2, 7, 8, 3]])
    # The first release's hash (version 1) is the pair's index itself, modulo the table size.
    assert bigram_ids(ids, 10**9, 0, LEGACY_HASH_VERSION).tolist() == [
        [2 * 1_000_003 + 7, 7 * 1_000_003 + 8, 8 * 1_000_003 + 3, 3 * 1_000_003]]
    assert bigram_ids(ids, 97, 0).max() < 97
    padded = torch.tensor([[2, 7, 8, 3, 0, 0]])
    assert bigram_ids(padded, 50_000, 0)[:, :4].tolist() == bigram_ids(ids, 50_000, 0).tolist()


def test_the_hash_spreads_pairs_over_the_whole_table():
    # 40,000 distinct pairs of 200 tokens into 50,000 rows: a random hash fills 1 - e^-0.8 of them (27.5k).
    # Version 1 put (a, b) in row (3a + b) mod 50,000, so these pairs shared 797 rows; every table size above
    # 30,225 rows used the same ones for a 7,557-token vocabulary.
    tokens = torch.arange(1000, 1200)
    pairs = torch.stack([tokens.repeat_interleave(200), tokens.repeat(200)], dim=1)
    rows = bigram_ids(pairs, 50_000, 0)[:, 0]
    assert 26_500 < rows.unique().numel() < 28_500
    assert bigram_ids(pairs, 50_000, 0, LEGACY_HASH_VERSION)[:, 0].unique().numel() == 797
    large = bigram_ids(pairs, 200_000, 0)[:, 0]
    assert large.max() >= 150_000 and large.unique().numel() > 35_000


def test_a_model_without_a_hash_version_keeps_the_first_releases_buckets():
    model = _tiny_classifier(buckets=97)
    assert model.bert.embeddings.bigram_hash == LEGACY_HASH_VERSION  # no bigram_hash in its config
    config = model.config
    setattr(config, HASH_KEY, HASH_VERSION)
    assert classifier_class(config)(config).bert.embeddings.bigram_hash == HASH_VERSION


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_a_text_gets_the_same_logits_alone_or_padded_and_the_table_counts(pooling):
    model = _tiny_classifier(pooling)
    assert type(model.bert.embeddings).__name__ == "BigramBertEmbeddings"
    short = torch.tensor([[2, 7, 8, 9, 3]])
    batch = torch.tensor([[2, 7, 8, 9, 3, 0, 0, 0], [2, 11, 12, 13, 14, 15, 16, 3]])
    with torch.no_grad():
        alone = model(input_ids=short, attention_mask=torch.ones_like(short)).logits
        padded = model(input_ids=batch, attention_mask=(batch != 0).long()).logits
        model.bert.embeddings.bigram_embeddings.weight.zero_()
        without = model(input_ids=short, attention_mask=torch.ones_like(short)).logits
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=0)
    assert (alone - without).abs().max() > 1e-3  # the table is part of the input, not decoration


def test_saved_and_loaded_the_table_comes_back_and_plain_transformers_would_drop_it(tmp_path):
    model = _tiny_classifier()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config[CONFIG_KEY] == 101 and config["architectures"] == ["BertForSequenceClassification"]
    loaded = classifier_class(config).from_pretrained(tmp_path).eval()
    plain = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected, atol=0, rtol=0)
        assert (plain(input_ids=ids).logits - expected).abs().max() > 1e-4


def test_bigrams_are_chosen_for_chinese_text_only():
    assert auto_bigram_buckets(["质量很好，物流也快", "太差了"]) == DEFAULT_BUCKETS
    assert auto_bigram_buckets(["rain falls", "a dog runs"]) == 0


def test_a_chinese_scratch_run_trains_saves_and_is_read_back_with_its_bigrams(tmp_path, cli):
    run = tmp_path / "run"
    code, _, stderr = cli("train", EXAMPLES / "zh_reviews.csv", "-m", "scratch:tiny", "--max-steps", "3", "--cpu",
                          "-o", run)
    assert code == 0, stderr
    assert "character-bigram embeddings" in " ".join(stderr.split())
    saved = json.loads((run / "config.json").read_text())
    assert saved[CONFIG_KEY] == DEFAULT_BUCKETS and saved[HASH_KEY] == HASH_VERSION
    assert json.loads((run / "bertclf.json").read_text())["bigram_buckets"] == DEFAULT_BUCKETS
    assert list(load_file(run / "model.safetensors")[TENSOR_NAME].shape) == [DEFAULT_BUCKETS, 128]
    card = (run / "README.md").read_text()
    assert "pipeline(" not in card and "bigram_buckets" in card
    outputs = []
    for batch in ("1", "5"):  # fp32: on a CPU with native bf16, auto would predict in bf16, whose scores move by
        # about 1e-4 with the batch a text is padded in (README, --precision); the table lookup is what is tested
        code, stdout, stderr = cli("predict", run, EXAMPLES / "zh_reviews_test.csv", "--batch-size", batch,
                                   "--all-probs", "--precision", "fp32")
        assert code == 0, stderr
        outputs.append([json.loads(line)["probs"] for line in stdout.splitlines()])
    assert len(outputs[0]) > 10
    for one, five in zip(*outputs, strict=True):
        assert one == pytest.approx(five, abs=1e-4)
    code, stdout, stderr = cli("export", run, "--json", "--check-rows", "32")
    assert code == 0, stderr
    assert json.loads(stdout)["fp32"]["passed"]  # ONNX gives torch's probabilities, bigrams included
    # A hash version this release does not know is refused, naming the field.
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, HASH_KEY: 7}))
    code, stdout, stderr = cli("predict", run, EXAMPLES / "zh_reviews_test.csv")
    assert code == EXIT_DATA and stdout == "" and HASH_KEY in stderr
    # Weights with a table the config does not name would be loaded without it: refused, naming both.
    del config[CONFIG_KEY]
    (run / "config.json").write_text(json.dumps(config))
    code, stdout, stderr = cli("predict", run, EXAMPLES / "zh_reviews_test.csv")
    assert code == EXIT_DATA and stdout == ""
    assert "config.json" in stderr and TENSOR_NAME in stderr


def test_an_english_scratch_run_has_no_bigram_table(tmp_path, cli):
    run = tmp_path / "run"
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", "scratch:tiny", "--max-steps", "2", "--cpu",
                          "-o", run)
    assert code == 0, stderr
    assert CONFIG_KEY not in json.loads((run / "config.json").read_text())
    assert TENSOR_NAME not in load_file(run / "model.safetensors")
    assert "pipeline(" in (run / "README.md").read_text()


def test_bigram_buckets_sizes_a_scratch_table_in_train_and_pretrain(tmp_path, cli):
    run = tmp_path / "run"
    code, _, stderr = cli("train", EXAMPLES / "zh_reviews.csv", "-m", "scratch:tiny", "--max-steps", "2", "--cpu",
                          "--bigram-buckets", "3000", "-o", run)
    assert code == 0, stderr
    assert json.loads((run / "config.json").read_text())[CONFIG_KEY] == 3000
    assert list(load_file(run / "model.safetensors")[TENSOR_NAME].shape) == [3000, 128]
    assert json.loads((run / "bertclf.json").read_text())["config"]["bigram_buckets"] == 3000
    none = tmp_path / "none"
    code, _, stderr = cli("train", EXAMPLES / "zh_reviews.csv", "-m", "scratch:tiny", "--max-steps", "2", "--cpu",
                          "--bigram-buckets", "0", "-o", none)
    assert code == 0, stderr
    assert CONFIG_KEY not in json.loads((none / "config.json").read_text())
    assert TENSOR_NAME not in load_file(none / "model.safetensors")
    model = tmp_path / "pretrained"
    code, _, stderr = cli("pretrain", EXAMPLES / "zh_reviews.csv", "-m", "scratch:tiny", "--max-steps", "2",
                          "--batch-size", "4", "--max-length", "32", "--cpu", "--bigram-buckets", "2000", "-o", model)
    assert code == 0, stderr
    assert json.loads((model / "config.json").read_text())[CONFIG_KEY] == 2000
    # A pretrained model's table size is fixed by its config: the flag is refused, not ignored.
    code, stdout, stderr = cli("train", EXAMPLES / "zh_reviews.csv", "-m", model, "--max-steps", "1", "--cpu",
                               "--bigram-buckets", "5000", "-o", tmp_path / "refused")
    assert code == EXIT_USAGE and stdout == "" and "--bigram-buckets" in stderr
    assert not (tmp_path / "refused").exists()
    # A Hub model is refused before anything is fetched (the tests run offline: a lookup would exit 69).
    code, _, stderr = cli("train", EXAMPLES / "zh_reviews.csv", "-m", "someone/chinese-bert", "--cpu",
                          "--bigram-buckets", "5000", "-o", tmp_path / "hub")
    assert code == EXIT_USAGE and "--bigram-buckets" in stderr and "someone/chinese-bert" in stderr, stderr
    assert not (tmp_path / "hub").exists()
    for bad in ("-1", "lots"):
        code, _, stderr = cli("train", EXAMPLES / "zh_reviews.csv", "-m", "scratch:tiny", "--bigram-buckets", bad,
                              "-o", tmp_path / "bad")
        assert code == EXIT_USAGE and "--bigram-buckets" in stderr
