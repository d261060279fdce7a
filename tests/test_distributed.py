"""Two processes on CPU (gloo) really train one model: gradients averaged, one set of files, exact metrics."""

import json
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import EXAMPLES, ROOT

TESTS = ROOT / "tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(*args, timeout=300):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
               "127.0.0.1", "--master_port", str(_free_port()), *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def no_dropout_model(tiny_model_dir, tmp_path_factory):
    """The tiny BERT without dropout: with dropout, one process and two draw different masks."""
    directory = tmp_path_factory.mktemp("tiny-no-dropout")
    shutil.copytree(tiny_model_dir, directory, dirs_exist_ok=True)
    config = json.loads((directory / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_two_processes_train_one_model(no_dropout_model, tmp_path, cli):
    from safetensors.torch import load_file

    validation = EXAMPLES / "en_topics_test.csv"
    out2, dumps = tmp_path / "two", tmp_path / "dumps"
    dumps.mkdir()
    result = _torchrun(TESTS / "ddp_driver.py", EXAMPLES / "en_topics.csv", no_dropout_model, out2, dumps, validation)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = load_file(str(dumps / "rank0.safetensors")), load_file(str(dumps / "rank1.safetensors"))
    assert set(rank0) == set(rank1)
    assert all((rank0[k] == rank1[k]).all() for k in rank0)  # both processes ran and stayed in sync
    assert json.loads((out2 / "bertclf.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in out2.iterdir()) == sorted(
        ["README.md", "bertclf.json", "config.json", "metrics.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json", "train_log.jsonl"])
    assert len((out2 / "train_log.jsonl").read_text().splitlines()) == 3  # two evals and a train line, once

    # One process with twice the per-process batch takes the same steps on the same batches.
    out1 = tmp_path / "one"
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", no_dropout_model, "-o", out1, "--max-steps",
                          "6", "--batch-size", "16", "--lr", "2e-3", "--cpu", "--eval-every", "3", "--mixed-precision",
                          "no", "--validation",
                          validation)
    assert code == 0, stderr
    single = load_file(str(out1 / "model.safetensors"))
    two = load_file(str(out2 / "model.safetensors"))
    for key in single:
        assert (single[key] - two[key]).abs().max() < 1e-4, key

    # The validation metrics gathered across processes equal a single-process eval of the run directory.
    code, stdout, stderr = cli("eval", out2, validation, "--json", "--cpu")
    assert code == 0, stderr
    evaluated = json.loads(stdout)["metrics"]
    distributed = json.loads((out2 / "metrics.json").read_text())
    assert distributed["confusion_matrix"] == evaluated["confusion_matrix"]
    assert distributed["accuracy"] == pytest.approx(evaluated["accuracy"])
    assert distributed["macro_f1"] == pytest.approx(evaluated["macro_f1"])


def test_bad_data_fails_every_rank_fast(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence_x,label\na,b\n", encoding="utf-8")
    started = time.monotonic()
    result = _torchrun("-m", "bertclf", "train", bad, "-m", "scratch:tiny", "-o", tmp_path / "run", timeout=120)
    assert time.monotonic() - started < 120
    assert result.returncode != 0
    # Each rank validates the data itself, so none waits in a collective for a rank that failed. Usually both
    # print the message; torchrun may stop the second rank before it does, once the first has exited.
    assert result.stderr.count("Columns found: sentence_x, label") >= 1


def test_two_processes_train_a_multi_label_run_and_tune_thresholds_once(no_dropout_model, tmp_path, cli):
    validation = EXAMPLES / "en_topics_test_multilabel.csv"
    out = tmp_path / "multi"
    result = _torchrun("-m", "bertclf", "train", EXAMPLES / "en_topics_multilabel.csv", "--multi-label", "-m",
                       no_dropout_model, "-o", out, "--max-steps", "6", "--batch-size", "8", "--lr", "2e-3", "--cpu",
                       "--eval-every", "3", "--validation", validation)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("Per-label thresholds tuned") == 1  # the main process tunes and reports them
    manifest = json.loads((out / "bertclf.json").read_text())
    assert manifest["world_size"] == 2 and set(manifest["thresholds"]) == {"cooking", "sports", "technology",
                                                                           "weather"}
    code, stdout, stderr = cli("eval", out, validation, "--json", "--cpu")
    assert code == 0, stderr
    evaluated = json.loads(stdout)["metrics"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["micro_f1"] == pytest.approx(evaluated["micro_f1"]) and saved["per_class"] == evaluated["per_class"]


def test_two_processes_train_a_scratch_model_with_one_vocabulary(tmp_path, cli):
    """The main process builds the scratch vocabulary into the run directory; the other rank loads that one
    (before, each rank built its own and DDP failed on mismatched embedding sizes)."""
    from safetensors.torch import load_file

    validation = EXAMPLES / "en_topics_test.csv"
    out, dumps = tmp_path / "two", tmp_path / "dumps"
    dumps.mkdir()
    result = _torchrun(TESTS / "ddp_driver.py", EXAMPLES / "en_topics.csv", "scratch:tiny", out, dumps, validation)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (dumps / "rank0.vocab.txt").read_text(), (dumps / "rank1.vocab.txt").read_text()
    assert rank0 == rank1 == (out / "vocab.txt").read_text(encoding="utf-8")
    weights0, weights1 = load_file(str(dumps / "rank0.safetensors")), load_file(str(dumps / "rank1.safetensors"))
    assert all(bool((weights0[k] == weights1[k]).all()) for k in weights0)

    # The command line under torchrun, and the same vocabulary as one process builds from the same rows.
    cli_run = tmp_path / "cli"
    result = _torchrun("-m", "bertclf", "train", EXAMPLES / "en_topics.csv", "--model", "scratch:tiny", "--cpu",
                       "-o", cli_run, "--max-steps", "2", "--validation", validation)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((cli_run / "bertclf.json").read_text())["world_size"] == 2
    one = tmp_path / "one"
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", "scratch:tiny", "--cpu", "-o", one,
                          "--max-steps", "1", "--validation", validation)
    assert code == 0, stderr
    for name in ("vocab.txt", "tokenizer.json"):
        assert (cli_run / name).read_bytes() == (one / name).read_bytes() == (out / name).read_bytes(), name
