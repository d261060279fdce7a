"""`train` and its --output directory (issue 13.4): one trainer per directory, and a run that fails leaves
the directory as it found it, so the retry needs no --overwrite."""

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import EXAMPLES, ROOT, write_csv

from bertclf.errors import EXIT_INTERNAL, EXIT_IO, EXIT_MODEL_UNAVAILABLE, EXIT_SIGTERM, EXIT_USAGE

DATA = EXAMPLES / "en_topics.csv"


def _snapshot(directory):
    """Every path under `directory` with its bytes and mtime: equal snapshots mean nothing was touched."""
    if not directory.exists():
        return None
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


@pytest.fixture
def earlier_run(tmp_path, cli, tiny_model_dir):
    """A finished run in tmp_path/run, as a user would have it before retrying into the same place."""
    out = tmp_path / "run"
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", out, "--max-steps", "2", "--cpu")
    assert code == 0, stderr
    return out


def _exploding_loss(monkeypatch, at_call: int):
    import torch

    real_cross_entropy = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def exploding(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise RuntimeError("simulated crash in the training loop")
        return real_cross_entropy(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", exploding)


def test_a_locked_output_is_refused_at_once_and_left_alone(earlier_run, cli, tiny_model_dir):
    before = _snapshot(earlier_run)
    fd = os.open(earlier_run, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a running `bertclf train` holds on its --output
    try:
        for extra in ([], ["--overwrite"], ["--resume", "latest"]):
            code, stdout, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", earlier_run, "--max-steps", "2",
                                       "--cpu", *extra)
            assert code == EXIT_USAGE, stderr
            assert "locked" in stderr and "flock" in stderr and str(earlier_run) in stderr and stdout == ""
    finally:
        os.close(fd)
    assert _snapshot(earlier_run) == before
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", earlier_run, "--max-steps", "2", "--cpu",
                          "--overwrite")
    assert code == 0, stderr  # the lock went with its holder


def test_a_second_train_on_a_running_run_exits_2_and_the_first_finishes_intact(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    common = ["train", str(DATA), "-m", str(tiny_model_dir), "-o", str(out), "--cpu"]
    first = subprocess.Popen([sys.executable, "-m", "bertclf", *common, "--max-steps", "100000", "--log-every", "1"],
                             cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        log = out / "train_log.jsonl"
        while first.poll() is None and not (log.exists() and log.read_text().count("\n") >= 2):
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read()
        second = subprocess.run([sys.executable, "-m", "bertclf", *common, "--max-steps", "2", "--overwrite"],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == EXIT_USAGE, second.stderr
        assert "locked" in second.stderr and str(out) in second.stderr and "Traceback" not in second.stderr
        assert (out / "bertclf.json").is_file() and (out / "tokenizer.json").is_file()  # --overwrite cleared nothing
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == EXIT_SIGTERM, stderr
    assert list((out / "checkpoints").glob("step-*"))  # an interrupted run keeps its checkpoint


@pytest.mark.parametrize("where", ["new", "nested", "empty"])
def test_unavailable_model_leaves_the_output_as_it_was(where, tmp_path, cli, tiny_model_dir):
    out = {"new": tmp_path / "run", "nested": tmp_path / "runs" / "a" / "run", "empty": tmp_path / "run"}[where]
    if where == "empty":
        out.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, stderr = cli("train", DATA, "-m", "no-such-owner/no-such-model", "-o", out, "--cpu")
    assert code == EXIT_MODEL_UNAVAILABLE and "no-such-owner/no-such-model" in stderr and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no directory left behind
    assert not out.exists() or not any(out.iterdir())
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", out, "--max-steps", "1", "--cpu")
    assert code == 0, stderr  # the retry needs no --overwrite


def test_overwrite_removes_the_earlier_run_only_once_the_new_one_can_start(earlier_run, cli, tiny_model_dir):
    before = _snapshot(earlier_run)
    code, _, stderr = cli("train", DATA, "-m", "no-such-owner/no-such-model", "-o", earlier_run, "--overwrite",
                          "--cpu")
    assert code == EXIT_MODEL_UNAVAILABLE, stderr
    assert _snapshot(earlier_run) == before  # the earlier run is still whole
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", earlier_run, "--max-steps", "2", "--cpu",
                          "--class-weights", "gadgets=2", "--overwrite")
    assert code == EXIT_USAGE and "--class-weights" in stderr
    assert _snapshot(earlier_run) == before


def test_a_bad_flag_found_while_building_leaves_no_directory(tmp_path, cli, tiny_model_dir):
    out = tmp_path / "run"
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", out, "--cpu", "--class-weights", "gadgets=2")
    assert code == EXIT_USAGE and "--class-weights" in stderr
    assert not out.exists()


def test_unwritable_or_misplaced_output_fails_before_any_model_loads(tmp_path, cli, tiny_model_dir):
    blocker = write_csv(tmp_path / "a_file.csv", [("x", "y")])
    before = blocker.read_bytes()
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", blocker / "run", "--cpu")
    assert code == EXIT_IO and str(blocker / "run") in stderr and "Model " not in stderr
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", blocker, "--cpu", "--overwrite")
    assert code == EXIT_USAGE and "not a directory" in stderr
    assert blocker.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a_file.csv"]


def test_a_crash_before_the_first_checkpoint_leaves_nothing(tmp_path, cli, tiny_model_dir, monkeypatch):
    _exploding_loss(monkeypatch, at_call=3)
    out = tmp_path / "run"
    code, stdout, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", out, "--max-steps", "6", "--save-every",
                               "4", "--eval-every", "2", "--cpu")
    assert code == EXIT_INTERNAL and stdout == "", stderr
    assert not out.exists()  # it had evaluated and saved a best model, but nothing it could resume from

    # In a directory that was there before, only what the run wrote goes; the user's own files stay.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    _exploding_loss(monkeypatch, at_call=3)
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", mine, "--max-steps", "6", "--cpu", "--overwrite")
    assert code == EXIT_INTERNAL, stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    monkeypatch.undo()
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", out, "--max-steps", "2", "--cpu")
    assert code == 0, stderr  # the retry needs no --overwrite


def test_a_crash_after_a_checkpoint_keeps_the_run_for_resume(tmp_path, cli, tiny_model_dir, monkeypatch):
    _exploding_loss(monkeypatch, at_call=6)
    out = tmp_path / "run"
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", out, "--max-steps", "8", "--save-every", "4",
                          "--cpu")
    assert code == EXIT_INTERNAL, stderr
    assert (out / "checkpoints" / "step-4").is_dir()
    assert json.loads((out / "bertclf.json").read_text())["completed"] is False
    monkeypatch.undo()
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", out, "--max-steps", "8", "--save-every", "4",
                          "--cpu", "--resume", "latest")
    assert code == 0, stderr


def test_an_interrupted_run_keeps_its_checkpoint(tmp_path, cli, tiny_model_dir, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("BERTCLF_STOP_AFTER_STEP", "2")
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", out, "--max-steps", "6", "--cpu")
    assert code == EXIT_SIGTERM and "--resume" in stderr
    assert (out / "checkpoints" / "step-2").is_dir()


def test_failed_resume_leaves_the_run_untouched(earlier_run, cli, tiny_model_dir):
    before = _snapshot(earlier_run)
    code, _, stderr = cli("train", DATA, "-m", tiny_model_dir, "-o", earlier_run, "--max-steps", "2", "--cpu",
                          "--resume", "latest")
    assert code == EXIT_USAGE and "no valid checkpoint" in stderr
    assert _snapshot(earlier_run) == before
    digest = hashlib.sha256((earlier_run / "model.safetensors").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(before["model.safetensors"][1]).hexdigest()
