"""Scratch vocabularies are deterministic: the same texts give the same vocab.txt and tokenizer.json, byte for
byte, in one process or many, whatever PYTHONHASHSEED and TOKENIZERS_PARALLELISM say, and the same rows in
UTF-8, UTF-8 with BOM or GBK train to the same scratch model (tokenizers' WordPieceTrainer broke ties in
hash order: five builds in one process gave five vocabularies)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, encodable_rows, read_shared, run_bertclf, write_csv

from bertclf.scratch import SPECIAL_TOKENS, build_scratch, build_scratch_vocab

BUILD_SCRIPT = """
import json, sys
from pathlib import Path
from bertclf.scratch import build_scratch
texts = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
tokenizer, _ = build_scratch("tiny", texts, 128, Path(sys.argv[2]))
tokenizer.save_pretrained(sys.argv[2] + "/saved")
"""


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Chinese and English rows, where equal counts (ties) are common."""
    rows = read_shared("zh_reviews", "train", limit=800) + read_shared("en_wordnet_verbs", "train", limit=1500)
    return [text for text, _ in rows]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _built(directory: Path) -> tuple[str, str]:
    """(vocab.txt hash, tokenizer.json hash) of a build_scratch output directory."""
    return _sha(directory / "vocab.txt"), _sha(directory / "saved" / "tokenizer.json")


def test_five_builds_in_one_process_are_identical(texts, tmp_path):
    results = set()
    for i in range(5):
        tokenizer, config = build_scratch("tiny", texts, 128, tmp_path / str(i))
        tokenizer.save_pretrained(str(tmp_path / str(i) / "saved"))
        results.add((_built(tmp_path / str(i)), config.vocab_size))
    assert len(results) == 1
    ((_, vocab_size),) = results
    assert vocab_size > 1000


def test_processes_with_different_hash_seeds_and_parallelism_build_identical_vocabularies(texts, tmp_path):
    corpus = tmp_path / "texts.json"
    corpus.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    hashes = []
    for seed, parallel in (("1", "true"), ("2", "false"), ("12345", "true")):
        out = tmp_path / f"seed{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed, "TOKENIZERS_PARALLELISM": parallel}
        result = subprocess.run([sys.executable, "-c", BUILD_SCRIPT, str(corpus), str(out)], capture_output=True,
                                text=True, env=env, cwd=ROOT, timeout=300)
        assert result.returncode == 0, result.stderr
        hashes.append(_built(out))
    assert hashes[0] == hashes[1] == hashes[2]


def test_vocabulary_layout_and_ties_broken_by_the_strings(tmp_path):
    """Specials, the characters in order, their ## forms, then merges: the most frequent pair first, equal
    counts in string order; a pair seen once (under the minimum frequency of 2) is never merged."""
    texts = ["cd ab", "ab cd", "cd ab", "xy"]
    vocab = build_scratch_vocab(texts, tmp_path).read_text(encoding="utf-8").split("\n")
    assert vocab[-1] == ""
    assert vocab[:-1] == [*SPECIAL_TOKENS, "a", "b", "c", "d", "x", "y", "##b", "##d", "##y", "ab", "cd"]


def test_rare_characters_are_kept_and_words_split_as_bert_does(tmp_path):
    texts = ["我很喜欢这本书", "我不喜欢", "鼷 appears once", "Café CAFÉ café"]
    tokenizer, _ = build_scratch("tiny", texts, 64, tmp_path)
    vocab = tokenizer.get_vocab()
    assert "鼷" in vocab and "é" not in vocab  # every character seen is kept; accents are stripped
    assert "cafe" in vocab  # lower-cased and accent-free before counting, as the tokenizer sees it
    assert tokenizer.tokenize("鼷 CAFÉ") == ["鼷", "cafe"]
    assert tokenizer.unk_token not in tokenizer.tokenize("我很喜欢鼷")


def test_load_for_training_reuses_the_vocabulary_in_vocab_dir(tmp_path):
    from bertclf.model import ResolvedModel, load_for_training

    resolved = ResolvedModel("scratch:tiny", "scratch:tiny", "scratch", None, "tiny")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "vocab.txt").write_text("\n".join([*SPECIAL_TOKENS, "a", "b", "##b", "ab"]) + "\n", encoding="utf-8")
    tokenizer, model = load_for_training(resolved, ["x", "y"], ["zz zz zz"], 64, tmp_path / "work",
                                         vocab_dir=shared)
    assert tokenizer.get_vocab() == {token: i for i, token in enumerate([*SPECIAL_TOKENS, "a", "b", "##b", "ab"])}
    assert model.config.vocab_size == 9 and not (tmp_path / "work").exists()  # nothing built
    # A resumed run's output directory holds tokenizer.json only: that is reused too.
    tokenizer.save_pretrained(str(tmp_path / "run"))
    again, _ = load_for_training(resolved, ["x", "y"], ["zz zz zz"], 64, tmp_path / "work", vocab_dir=tmp_path / "run")
    assert again.get_vocab() == tokenizer.get_vocab() and not (tmp_path / "work").exists()
    # An empty vocab_dir (no vocabulary yet) builds one from the texts.
    built, _ = load_for_training(resolved, ["x", "y"], ["zz zz zz"], 64, tmp_path / "work", vocab_dir=tmp_path / "e")
    assert "zz" in built.get_vocab() and (tmp_path / "work" / "vocab.txt").is_file()


def test_gbk_bom_and_utf8_copies_train_identical_scratch_models(tmp_path, cli):
    """Whatever the file's encoding, path or name, and in another process with another hash seed."""
    rows = encodable_rows(read_shared("zh_reviews", "train", limit=300), "gbk")
    hashes = {}
    for encoding, name in (("utf-8", "a/train.csv"), ("utf-8-sig", "b/reviews-bom.csv"), ("gbk", "c/d/g.csv")):
        path = tmp_path / name
        path.parent.mkdir(parents=True)
        write_csv(path, rows, encoding=encoding)
        run = tmp_path / f"run-{encoding}"
        args = ("train", path, "--model", "scratch:tiny", "-o", run, "--max-steps", "3", "--cpu")
        if encoding == "gbk":
            result = run_bertclf(*args, env={"PYTHONHASHSEED": "99", "TOKENIZERS_PARALLELISM": "true"})
            assert result.returncode == 0, result.stderr
        else:
            code, _, stderr = cli(*args)
            assert code == 0, stderr
        manifest = json.loads((run / "bertclf.json").read_text(encoding="utf-8"))
        assert manifest["data"]["train"]["encoding"] == ("gb18030" if encoding == "gbk" else "utf-8-sig")
        hashes[encoding] = (_sha(run / "tokenizer.json"), _sha(run / "model.safetensors"))
    assert hashes["gbk"] == hashes["utf-8"] == hashes["utf-8-sig"]
