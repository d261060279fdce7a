"""A damaged run directory is refused before any prediction: exit 65 or 66 naming the file and the field.

Each case copies the `tiny_run` fixture, damages one thing, and runs `bertclf predict` and `bertclf eval`
in-process (an escaped exception fails the test): the exit code, a message naming the file and field, nothing on
stdout. One case also runs as a subprocess, to see the whole process end without a traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLES, run_bertclf

from bertclf.errors import EXIT_DATA, EXIT_NO_INPUT


def _edit_json(name: str, change):
    def damage(run: Path) -> None:
        path = run / name
        data = json.loads(path.read_text(encoding="utf-8"))
        change(data)
        path.write_text(json.dumps(data), encoding="utf-8")
    return damage


def _set(name: str, field: str, value):
    return _edit_json(name, lambda data: data.__setitem__(field, value))


def _drop(name: str, field: str):
    return _edit_json(name, lambda data: data.pop(field))


def _remove(*names: str):
    def damage(run: Path) -> None:
        for name in names:
            (run / name).unlink()
    return damage


def _write(name: str, content: bytes):
    return lambda run: (run / name).write_bytes(content)


def _truncate(name: str, keep: float):
    def damage(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[:int(len(data) * keep)])
    return damage


def _permute_id2label(data: dict) -> None:
    ids = sorted(data["id2label"], key=int)
    values = [data["id2label"][i] for i in ids]
    data["id2label"] = dict(zip(ids, values[1:] + values[:1], strict=True))
    data["label2id"] = {label: int(i) for i, label in data["id2label"].items()}


def _threshold(value):
    def change(data: dict) -> None:
        data["task"] = "multi_label"
        data["thresholds"] = {label: 0.5 for label in data["labels"]}
        data["thresholds"][data["labels"][0]] = value
    return _edit_json("bertclf.json", change)


def _thresholds_missing_label(data: dict) -> None:
    data["task"] = "multi_label"
    data["thresholds"] = {label: 0.5 for label in data["labels"][1:]}


def _tokenizer_vocab(change):
    return _edit_json("tokenizer.json", lambda data: change(data["model"]))


def _label_tensor_shape(run: Path) -> None:
    """config.json and bertclf.json agree on one label fewer than the weights hold."""
    _edit_json("bertclf.json", lambda data: data.__setitem__("labels", data["labels"][:-1]))(run)

    def fewer(data: dict) -> None:
        data["id2label"] = {k: v for k, v in data["id2label"].items() if int(k) < len(data["id2label"]) - 1}
        data["label2id"] = {v: int(k) for k, v in data["id2label"].items()}
    _edit_json("config.json", fewer)(run)


# (case id, damage, exit code, words the message must hold: the file and the field)
CASES = [
    ("no-tokenizer", _remove("tokenizer.json"), EXIT_NO_INPUT, ["tokenizer.json", "vocab.txt"]),
    ("tokenizer-not-json", _write("tokenizer.json", b'{"model": '), EXIT_DATA, ["tokenizer.json", "JSON"]),
    ("tokenizer-no-vocab", _tokenizer_vocab(lambda model: model.pop("vocab")), EXIT_DATA,
     ["tokenizer.json", "model.vocab"]),
    ("tokenizer-too-big", _tokenizer_vocab(lambda model: model["vocab"].__setitem__("zzzextra", 10**6)),
     EXIT_DATA, ["tokenizer", "vocab_size"]),
    ("permuted-id2label", _edit_json("config.json", _permute_id2label), EXIT_DATA,
     ["config.json", "id2label", "bertclf.json", "labels"]),
    ("label2id-disagrees", _edit_json("config.json", lambda d: d.__setitem__(
        "label2id", {label: 0 for label in d["label2id"]})), EXIT_DATA, ["config.json", "label2id"]),
    ("id2label-not-object", _set("config.json", "id2label", ["a", "b"]), EXIT_DATA, ["config.json", "id2label"]),
    ("weights-empty", _write("model.safetensors", b""), EXIT_DATA, ["model.safetensors", "truncated"]),
    ("weights-truncated", _truncate("model.safetensors", 0.5), EXIT_DATA, ["model.safetensors", "truncated"]),
    ("weights-header-cut", _truncate("model.safetensors", 0.001), EXIT_DATA, ["model.safetensors", "safetensors"]),
    ("weights-missing", _remove("model.safetensors"), EXIT_NO_INPUT, ["model.safetensors"]),
    ("weights-wrong-shape", _label_tensor_shape, EXIT_DATA, ["model.safetensors", "classifier.weight"]),
    ("config-missing", _remove("config.json"), EXIT_NO_INPUT, ["config.json"]),
    ("config-not-object", _write("config.json", b"[1, 2]"), EXIT_DATA, ["config.json", "JSON object"]),
    ("config-not-utf8", _write("config.json", b'{"a": "\xff"}'), EXIT_DATA, ["config.json", "UTF-8"]),
    ("config-vocab-size", _set("config.json", "vocab_size", "many"), EXIT_DATA, ["config.json", "vocab_size"]),
    ("config-pooling-bogus", _set("config.json", "classifier_pooling", "max"), EXIT_DATA,
     ["config.json", "classifier_pooling"]),
    ("config-bigrams-bogus", _set("config.json", "bigram_buckets", "many"), EXIT_DATA,
     ["config.json", "bigram_buckets"]),
    ("config-bigrams-without-table", _set("config.json", "bigram_buckets", 64), EXIT_DATA,
     ["model.safetensors", "bert.embeddings.bigram_embeddings.weight"]),
    ("config-max-positions", _set("config.json", "max_position_embeddings", 0), EXIT_DATA,
     ["config.json", "max_position_embeddings"]),
    ("manifest-not-object", _write("bertclf.json", b'"run"'), EXIT_DATA, ["bertclf.json", "JSON object"]),
    ("manifest-not-json", _write("bertclf.json", b"{"), EXIT_DATA, ["bertclf.json", "JSON"]),
    ("manifest-missing", _remove("bertclf.json"), EXIT_NO_INPUT, ["bertclf.json"]),
    ("max-length-string", _set("bertclf.json", "max_length", "128"), EXIT_DATA, ["bertclf.json", "max_length"]),
    ("max-length-zero", _set("bertclf.json", "max_length", 0), EXIT_DATA, ["bertclf.json", "max_length"]),
    ("max-length-bool", _set("bertclf.json", "max_length", True), EXIT_DATA, ["bertclf.json", "max_length"]),
    ("max-length-missing", _drop("bertclf.json", "max_length"), EXIT_DATA, ["bertclf.json", "max_length"]),
    ("truncation-bogus", _set("bertclf.json", "truncation", "middle"), EXIT_DATA, ["bertclf.json", "truncation"]),
    ("truncation-list", _set("bertclf.json", "truncation", ["head"]), EXIT_DATA, ["bertclf.json", "truncation"]),
    ("task-bogus", _set("bertclf.json", "task", "regression"), EXIT_DATA, ["bertclf.json", "task"]),
    ("long-text-bogus", _set("bertclf.json", "long_text", "split"), EXIT_DATA, ["bertclf.json", "long_text"]),
    ("stride-negative", _set("bertclf.json", "stride", -1), EXIT_DATA, ["bertclf.json", "stride"]),
    ("stride-float", _set("bertclf.json", "stride", 1.5), EXIT_DATA, ["bertclf.json", "stride"]),
    ("stride-too-big", _set("bertclf.json", "stride", 10**6), EXIT_DATA, ["bertclf.json", "stride", "max_length"]),
    ("labels-empty", _set("bertclf.json", "labels", []), EXIT_DATA, ["bertclf.json", "labels"]),
    ("labels-duplicate", _edit_json("bertclf.json", lambda d: d.__setitem__("labels", [d["labels"][0]] * 2)),
     EXIT_DATA, ["bertclf.json", "labels"]),
    ("labels-not-strings", _set("bertclf.json", "labels", [1, 2, 3, 4]), EXIT_DATA, ["bertclf.json", "labels"]),
    ("labels-missing", _drop("bertclf.json", "labels"), EXIT_DATA, ["bertclf.json", "labels"]),
    ("thresholds-list", _set("bertclf.json", "thresholds", [0.5]), EXIT_DATA, ["bertclf.json", "thresholds"]),
    ("threshold-above-one", _threshold(1.5), EXIT_DATA, ["bertclf.json", "thresholds"]),
    ("threshold-string", _threshold("0.5"), EXIT_DATA, ["bertclf.json", "thresholds"]),
    ("thresholds-unknown-label", _edit_json("bertclf.json", lambda d: d.update(
        task="multi_label", thresholds={**{label: 0.5 for label in d["labels"]}, "ghost": 0.5})), EXIT_DATA,
     ["bertclf.json", "thresholds", "ghost"]),
    ("thresholds-missing-label", _edit_json("bertclf.json", _thresholds_missing_label), EXIT_DATA,
     ["bertclf.json", "thresholds"]),
    ("text-column-number", _set("bertclf.json", "text_column", 3), EXIT_DATA, ["bertclf.json", "text_column"]),
    ("label-separator-empty", _set("bertclf.json", "label_separator", ""), EXIT_DATA,
     ["bertclf.json", "label_separator"]),
    ("completed-string", _set("bertclf.json", "completed", "yes"), EXIT_DATA, ["bertclf.json", "completed"]),
]


@pytest.mark.parametrize(("case", "damage", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_damaged_run_dir_is_refused_before_prediction(case, damage, code, words, tiny_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    damage(run)
    for command in (["predict", run, "--text", "stock markets fell sharply", "--cpu"],
                    ["eval", run, EXAMPLES / "en_topics.csv", "--cpu"]):
        exit_code, stdout, stderr = cli(*command)
        assert exit_code == code, (command[0], stderr)
        for word in words:
            assert word in stderr, (command[0], word, stderr)
        assert stdout == ""


def test_a_run_without_its_tokenizer_fails_as_a_process_without_traceback(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    _remove(*[name for name in ("tokenizer.json", "vocab.txt") if (run / name).exists()])(run)
    result = run_bertclf("predict", run, "--text", "stock markets fell sharply", "--cpu")
    assert result.returncode == EXIT_NO_INPUT, result.stderr
    assert "Traceback" not in result.stderr and "tokenizer" in result.stderr
    assert result.stdout == ""


def test_undamaged_copy_still_predicts(tiny_run, tmp_path):
    """The checks pass a run as train writes it, wherever it is copied."""
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    result = run_bertclf("predict", run, "--text", "stock markets fell sharply", "--cpu")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["label"]


def test_check_run_dir_returns_the_manifest(tiny_run):
    from bertclf.model import check_run_dir

    manifest = check_run_dir(tiny_run)
    assert manifest == json.loads((tiny_run / "bertclf.json").read_text(encoding="utf-8"))
