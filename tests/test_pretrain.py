"""`bertclf pretrain`: masked-LM pre-training that `bertclf train --model DIR` fine-tunes; reproducible, resumable."""

import hashlib
import json

import pytest
from conftest import SHARED_DATA, write_csv

from bertclf.errors import EXIT_DATA, EXIT_NO_INPUT, EXIT_SIGTERM

STEPS = ["--model", "scratch:tiny", "--max-steps", "6", "--batch-size", "8", "--max-length", "32", "--eval-every",
         "3", "--cpu", "--log-every", "2"]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Real unlabelled Chinese reviews, a blank line among them, plus a CSV of labelled training rows."""
    folder = tmp_path_factory.mktemp("corpus")
    lines = (SHARED_DATA / "zh_unlabelled" / "shopping_reviews.txt").read_text(encoding="utf-8").splitlines()[:300]
    text = folder / "reviews.txt"
    text.write_text("\n".join(lines[:150] + [""] + lines[150:]) + "\n", encoding="utf-8")
    table = write_csv(folder / "train.csv", [(line, "x") for line in lines[:40]])
    return text, table


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("pt") / "model"
    code, stdout, stderr = cli("pretrain", *corpus, *STEPS, "--save-every", "3", "--keep", "5", "-o", out, "--json")
    assert code == 0, stderr
    return out, json.loads(stdout), stderr


def test_pretrain_writes_a_model_directory_with_its_manifest(pretrained, corpus):
    out, summary, stderr = pretrained
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "pretrain.json", "README.md"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "pretrain.json").read_text())
    assert manifest["completed"] is True and manifest["kind"] == "pretrain"
    files = {f["path"]: f for f in manifest["corpus"]}
    assert files[str(corpus[0])]["texts"] == 300 and files[str(corpus[0])]["blank"] == 1
    assert files[str(corpus[1])]["texts"] == 40 and files[str(corpus[1])]["sha256"] == _sha(corpus[1])
    assert manifest["texts"]["train"] + manifest["texts"]["validation"] == 340
    assert "1 blank line(s)" in stderr  # left out aloud, never silently
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]
    assert config["tie_word_embeddings"] is False  # a scratch model's output layer is its own (scratch_init.py)
    assert summary["steps"] == 6 and 0 < summary["validation"]["loss"] < 20
    assert summary["validation"]["perplexity"] > 1
    assert 0 <= summary["validation"]["mask_accuracy"] <= 1
    assert "[MASK] only" in stderr and "tokens replaced by [MASK] only" in (out / "README.md").read_text()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "eval"] == [3, 6]


def test_the_pretrained_model_is_fine_tuned_by_train(pretrained, tmp_path, cli):
    out, _, _ = pretrained
    rows = [(line, label) for line, label in zip(["很好，非常满意", "太差了，退货", "质量不错", "不喜欢，很失望"] * 10,
                                              ["pos", "neg", "pos", "neg"] * 10, strict=True)]
    data = write_csv(tmp_path / "d.csv", rows)
    code, _, stderr = cli("train", data, "--model", out, "--max-steps", "2", "--cpu", "-o", tmp_path / "run")
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "run" / "bertclf.json").read_text())
    assert manifest["model"]["source"] == "local" and manifest["model"]["path"] == str(out.resolve())
    # A model pre-trained from scratch for minutes is fine-tuned at the scratch rate of its size, not at 1e-4.
    assert manifest["learning_rate"] == 1e-3 and manifest["learning_rate_source"] == "auto"
    # Its [CLS] learnt nothing in masked-LM pre-training: the classifier reads the mean of all tokens (auto).
    assert json.loads((tmp_path / "run" / "config.json").read_text())["classifier_pooling"] == "mean"
    # A Chinese corpus gives the model a bigram table (bertclf.bigrams): pre-trained, and carried into the run.
    assert json.loads((out / "config.json").read_text())["bigram_buckets"] == 50_000
    assert json.loads((tmp_path / "run" / "config.json").read_text())["bigram_buckets"] == 50_000
    # The classifier starts from the pre-trained encoder: the token embeddings are the same matrix.
    from safetensors.torch import load_file

    before = load_file(out / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    from bertclf.model import load_tokenizer

    vocab = load_tokenizer(out).get_vocab()
    assert load_tokenizer(tmp_path / "run").get_vocab() == vocab  # the run keeps the pre-trained vocabulary
    assert before.shape[0] == len(vocab)
    # The table starts at zero and learns at the full rate (scratch_init.embedding_parameters leaves it out).
    assert load_file(out / "model.safetensors")["bert.embeddings.bigram_embeddings.weight"].abs().max() > 0


def test_same_corpus_and_seed_give_the_same_bytes(pretrained, corpus, tmp_path, cli):
    out, _, _ = pretrained
    again = tmp_path / "again"
    code, _, stderr = cli("pretrain", *corpus, *STEPS, "--save-every", "3", "-o", again)
    assert code == 0, stderr
    for name in ("model.safetensors", "vocab.txt", "tokenizer.json"):
        assert _sha(again / name) == _sha(out / name), name


def test_an_interrupted_pretraining_resumes_bitwise(pretrained, corpus, tmp_path, cli, monkeypatch):
    out, _, _ = pretrained
    run = tmp_path / "run"
    args = ["pretrain", *corpus, *STEPS, "--save-every", "3", "--keep", "5", "-o", run]
    monkeypatch.setenv("BERTCLF_STOP_AFTER_STEP", "4")
    code, _, stderr = cli(*args)
    assert code == EXIT_SIGTERM and "pretrain" in stderr and "--resume" in stderr
    assert json.loads((run / "pretrain.json").read_text())["completed"] is False
    vocab = _sha(run / "vocab.txt")
    monkeypatch.delenv("BERTCLF_STOP_AFTER_STEP")
    code, _, stderr = cli(*args, "--resume", "latest")
    assert code == 0, stderr
    assert _sha(run / "vocab.txt") == vocab  # the saved vocabulary is reused, never rebuilt
    assert _sha(run / "checkpoints" / "step-6" / "model.safetensors") == \
        _sha(out / "checkpoints" / "step-6" / "model.safetensors")
    assert _sha(run / "model.safetensors") == _sha(out / "model.safetensors")


def test_whole_word_masking_masks_every_token_of_a_jieba_word():
    import torch

    from bertclf.mlm import IGNORE, Masker, PackedDataset, pack, pad_batch, tokenize_for_packing
    from bertclf.scratch import build_scratch_vocab, scratch_tokenizer

    pytest.importorskip("jieba")
    import tempfile
    from pathlib import Path

    texts = ["我们今天去北京大学参观图书馆", "这款手机的电池续航时间非常长"] * 4
    with tempfile.TemporaryDirectory() as folder:
        build_scratch_vocab(texts, Path(folder))
        tokenizer = scratch_tokenizer(Path(folder))
    ids, new_word = tokenize_for_packing(tokenizer, texts, whole_words=True)
    assert new_word[0][:4] == [True, False, True, False]  # 我们 | 今天: two-character words
    packed = pack(ids, 64, tokenizer.cls_token_id, tokenizer.sep_token_id, new_word)
    batch = pad_batch(tokenizer.pad_token_id)([PackedDataset(packed)[i] for i in range(len(packed))])
    torch.manual_seed(0)
    masked = Masker(tokenizer, 0.5, whole_words=True)(batch)["labels"] != IGNORE
    assert masked.any()
    for row, flags in enumerate(packed.new_word):
        word = -1
        words: dict[int, set] = {}
        for position, starts in enumerate(flags):
            word += starts
            words.setdefault(word, set()).add(bool(masked[row, position]))
        assert all(len(states) == 1 for states in words.values())  # a word is masked whole or not at all


def test_packing_keeps_every_token_in_order():
    from bertclf.mlm import pack

    texts = [[5, 6, 7], [8], list(range(10, 40)), [41, 42]]
    packed = pack(texts, 10, cls_id=1, sep_id=2)
    assert all(len(s) <= 10 and s[0] == 1 and s[-1] == 2 for s in packed.sequences)
    stream = [token for sequence in packed.sequences for token in sequence[1:-1]]
    assert stream == [t for ids in texts for t in [*ids, 2]]


def test_corpus_errors_name_the_file(tmp_path, cli):
    code, _, stderr = cli("pretrain", tmp_path / "missing.txt", "-o", tmp_path / "o")
    assert code == EXIT_NO_INPUT and "missing.txt" in stderr
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n", encoding="utf-8")
    code, _, stderr = cli("pretrain", blank, "-o", tmp_path / "o")
    assert code == EXIT_DATA and "blank.txt" in stderr and "no text" in stderr
    assert not (tmp_path / "o").exists()


def test_two_processes_pretrain_one_model_with_one_vocabulary(pretrained, corpus, tmp_path):
    """torchrun: the main process builds the vocabulary, the other rank loads it; one model directory."""
    from test_distributed import _torchrun

    out, _, _ = pretrained
    run = tmp_path / "ddp"
    result = _torchrun("-m", "bertclf", "pretrain", *corpus, *STEPS, "-o", run, "--max-steps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((run / "pretrain.json").read_text())
    assert manifest["completed"] is True and manifest["world_size"] == 2
    assert (run / "vocab.txt").read_bytes() == (out / "vocab.txt").read_bytes()


def test_eval_and_predict_send_a_pretrained_directory_to_train(pretrained, tmp_path, cli):
    out, _, _ = pretrained
    data = write_csv(tmp_path / "d.csv", [("很好", "pos"), ("太差", "neg")])
    for args in (("predict", out, "--text", "很好"), ("eval", out, data)):
        code, _, stderr = cli(*args)
        assert code == EXIT_NO_INPUT and "pre-trained model directory" in stderr and "bertclf train --model" in stderr


def test_mask_accuracy_leaves_out_the_unchanged_tokens_a_model_can_copy():
    """A model that copies its input scores the chosen-but-unchanged tokens in masked_accuracy and nothing in
    mask_accuracy: the second says whether the context was learned (issue 17)."""
    import torch

    from bertclf.mlm import IGNORE, evaluate_masked_lm

    mask_id, vocab = 4, 10

    class Copier(torch.nn.Module):
        def forward(self, input_ids, attention_mask, labels):
            picked = labels != IGNORE
            return type("Out", (), {"logits": torch.nn.functional.one_hot(input_ids[picked], vocab).float()})

    inputs = torch.tensor([[2, 7, mask_id, 8, mask_id, 6, 3]])
    labels = torch.tensor([[IGNORE, 7, 5, IGNORE, 9, IGNORE, IGNORE]])  # 7 chosen but left unchanged
    batch = {"input_ids": inputs, "attention_mask": torch.ones_like(inputs), "labels": labels}
    scores = evaluate_masked_lm(Copier(), [batch], "cpu", mask_token_id=mask_id)
    assert scores["masked_tokens"] == 3
    assert scores["masked_accuracy"] == 1 / 3 and scores["mask_accuracy"] == 0.0
