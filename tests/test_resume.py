"""Never lose a run: interrupted and resumed training ends exactly where an uninterrupted one does."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import EXAMPLES, ROOT, write_csv

from bertclf.errors import EXIT_NO_INPUT, EXIT_SIGTERM, EXIT_USAGE

# 216 training rows in batches of 16: 14 batches an epoch, 42 optimizer steps in 3 epochs.
BASE = ["--epochs", "3", "--batch-size", "16", "--lr", "2e-3", "--cpu", "--save-every", "7", "--keep", "10",
        "--log-every", "3"]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _losses(run):
    return [(r["step"], r.get("loss"), r.get("val_macro_f1"))
            for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cli, tiny_model_dir):
    runs = {}
    for accum in ("1", "2"):
        out = tmp_path_factory.mktemp("full") / f"accum{accum}"
        code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", out, *BASE,
                              "--grad-accum", accum)
        assert code == 0, stderr
        runs[accum] = out
    return runs


@pytest.mark.parametrize(("stop_at", "accum"), [(5, "1"), (14, "1"), (4, "2")],
                         ids=["mid-epoch", "epoch-boundary", "grad-accum-2"])
def test_resume_gives_bitwise_equal_weights_and_the_same_loss_log(stop_at, accum, uninterrupted, tmp_path, cli,
                                                                    tiny_model_dir, monkeypatch):
    out = tmp_path / "run"
    args = ["train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", out, *BASE, "--grad-accum", accum]
    monkeypatch.setenv("BERTCLF_STOP_AFTER_STEP", str(stop_at))
    code, _, stderr = cli(*args)
    assert code == EXIT_SIGTERM and "--resume" in stderr
    assert json.loads((out / "bertclf.json").read_text())["completed"] is False
    monkeypatch.delenv("BERTCLF_STOP_AFTER_STEP")
    code, _, stderr = cli(*args, "--resume", "latest")
    assert code == 0, stderr
    full = uninterrupted[accum]
    final = max((full / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1])).name
    assert _sha(out / "checkpoints" / final / "model.safetensors") == _sha(full / "checkpoints" / final /
                                                                          "model.safetensors")
    assert _sha(out / "model.safetensors") == _sha(full / "model.safetensors")  # the best model, too
    assert _losses(out) == _losses(full)
    assert json.loads((out / "bertclf.json").read_text())["completed"] is True


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(uninterrupted, tmp_path, cli, tiny_model_dir,
                                                                  monkeypatch):
    out = tmp_path / "run"
    args = ["train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", out, *BASE]
    monkeypatch.setenv("BERTCLF_STOP_AFTER_STEP", "21")
    assert cli(*args)[0] == EXIT_SIGTERM
    monkeypatch.delenv("BERTCLF_STOP_AFTER_STEP")
    newest = out / "checkpoints" / "step-21" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a truncated weights file
    code, _, stderr = cli(*args, "--resume", "latest")
    assert code == 0, stderr
    assert "Skipping checkpoint" in stderr and "step-21" in stderr and "step 14" in stderr
    final = out / "checkpoints" / "step-42" / "model.safetensors"
    assert _sha(final) == _sha(uninterrupted["1"] / "checkpoints" / "step-42" / "model.safetensors")


def test_resume_with_changed_settings_or_data_is_refused(uninterrupted, tmp_path, cli, tiny_model_dir):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(uninterrupted["1"], out)
    args = ["-m", tiny_model_dir, "-o", out, *BASE, "--resume", "latest"]
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", *args, "--lr", "1e-3")
    assert code == EXIT_USAGE and "lr" in stderr
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", *args, "--pooling", "mean")
    assert code == EXIT_USAGE and "pooling" in stderr  # the same weights read another way: not a resume
    other = write_csv(tmp_path / "other.csv", [("sunny day", "weather"), ("goal", "sports")] * 20)
    code, _, stderr = cli("train", other, *args)
    assert code == EXIT_USAGE and "data" in stderr
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", *args, "--epochs", "4")  # may change
    assert code == 0, stderr


def test_rotation_keeps_the_newest_complete_checkpoints(tmp_path, cli, tiny_model_dir):
    out = tmp_path / "run"
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", out, "--max-steps", "12",
                          "--save-every", "3", "--keep", "2", "--cpu")
    assert code == 0, stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-12", "step-9"]


def test_sigterm_mid_training_writes_a_checkpoint_and_resume_matches(uninterrupted, tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "bertclf", "train", str(EXAMPLES / "en_topics.csv"), "-m", str(tiny_model_dir),
            "-o", str(out), *BASE]
    env = {**os.environ, "BERTCLF_STEP_DELAY": "0"}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == EXIT_SIGTERM, stderr
    assert "Resume with" in stderr and "Traceback" not in stderr
    assert list((out / "checkpoints").glob("step-*"))
    resumed = subprocess.run([*args, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    full = uninterrupted["1"]
    assert _sha(out / "checkpoints" / "step-42" / "model.safetensors") == _sha(
        full / "checkpoints" / "step-42" / "model.safetensors")


def test_pickle_weights_and_code_files_in_a_run_dir_are_never_executed(tmp_path, uninterrupted, cli):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted["1"], run, ignore=shutil.ignore_patterns("checkpoints"))
    marker = tmp_path / "pwned"
    # A custom code file and an auto_map that would run it under trust_remote_code:
    (run / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = json.loads((run / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.Evil"}
    (run / "config.json").write_text(json.dumps(config))
    code, _, stderr = cli("predict", run, "--text", "hello", "--cpu")
    assert code == 0, stderr and not marker.exists()
    # A pickle in place of the safetensors weights is refused, not loaded:
    (run / "model.safetensors").unlink()
    (run / "pytorch_model.bin").write_bytes(b"\x80\x04cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    code, _, stderr = cli("predict", run, "--text", "hello", "--cpu")
    assert code != 0 and "pickle" in stderr and not marker.exists()


def test_disk_full_while_checkpointing_exits_74_and_keeps_earlier_files(tmp_path, cli, tiny_model_dir, monkeypatch):
    import errno

    import safetensors.torch

    from bertclf.errors import EXIT_IO

    out = tmp_path / "run"
    real_save = safetensors.torch.save_file
    calls = {"n": 0}

    def failing_save(tensors, filename, *args, **kwargs):
        if "checkpoints" in str(filename):
            calls["n"] += 1
            if calls["n"] == 5:  # two files a checkpoint: the third checkpoint hits a full disk
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", out, "--max-steps", "12",
                          "--save-every", "3", "--keep", "5", "--cpu")
    assert code == EXIT_IO and "No space left on device" in stderr
    from bertclf.checkpoint import list_checkpoints

    assert [c.step for c in list_checkpoints(out / "checkpoints")] == [3, 6]  # both earlier ones verify
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert json.loads((out / "bertclf.json").read_text())["completed"] is False


def test_non_finite_loss_stops_with_exit_4_and_keeps_the_last_good_checkpoint(tmp_path, cli, tiny_model_dir,
                                                                              monkeypatch):
    import torch

    from bertclf.checkpoint import list_checkpoints
    from bertclf.errors import EXIT_DIVERGED

    real_cross_entropy = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def exploding(*args, **kwargs):
        calls["n"] += 1
        loss = real_cross_entropy(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 8 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", exploding)
    out = tmp_path / "run"
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", out, "--max-steps", "12",
                          "--save-every", "3", "--cpu", "--eval-every", "100")
    # The loss is read at log lines, evaluations and checkpoints (not every batch): the NaN of step 8 is found
    # at step 9's checkpoint, before it is written, and the message names the steps since the last reading.
    assert code == EXIT_DIVERGED and "nan" in stderr.lower() and "between steps 7 and 9" in stderr
    assert [c.step for c in list_checkpoints(out / "checkpoints")] == [3, 6]


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.mark.parametrize("data", ["en_topics.csv", "zh_reviews.csv"])  # zh: with its bigram table (bigrams.py)
def test_resumed_scratch_run_reuses_its_saved_vocabulary_and_ends_bitwise_equal(data, tmp_path, cli, monkeypatch):
    import bertclf.scratch

    args = ["train", EXAMPLES / data, "-m", "scratch:tiny", "--max-steps", "12", "--save-every", "4",
            "--eval-every", "4", "--keep", "5", "--cpu"]
    full, out = tmp_path / "full", tmp_path / "run"
    code, _, stderr = cli(*args, "-o", full)
    assert code == 0, stderr
    monkeypatch.setenv("BERTCLF_STOP_AFTER_STEP", "6")
    assert cli(*args, "-o", out)[0] == EXIT_SIGTERM
    monkeypatch.delenv("BERTCLF_STOP_AFTER_STEP")
    saved = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir() if p.name in TOKENIZER_FILES}
    assert "vocab.txt" in saved

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a resumed scratch run rebuilt its vocabulary")

    monkeypatch.setattr(bertclf.scratch, "build_scratch_vocab", no_rebuild)
    code, _, stderr = cli(*args, "-o", out, "--resume", "latest")
    assert code == 0, stderr
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()
            if p.name in TOKENIZER_FILES} == saved  # neither rewritten nor touched
    for name in ("model.safetensors", *saved, "checkpoints/step-12/model.safetensors"):
        assert _sha(out / name) == _sha(full / name), name
    assert _losses(out) == _losses(full)


def test_resume_of_a_scratch_run_without_its_vocabulary_is_refused(tmp_path, cli, monkeypatch):
    out = tmp_path / "run"
    args = ["train", EXAMPLES / "en_topics.csv", "-m", "scratch:tiny", "--max-steps", "6", "--cpu", "-o", out]
    monkeypatch.setenv("BERTCLF_STOP_AFTER_STEP", "3")
    assert cli(*args)[0] == EXIT_SIGTERM
    monkeypatch.delenv("BERTCLF_STOP_AFTER_STEP")
    for name in TOKENIZER_FILES:
        (out / name).unlink(missing_ok=True)
    listing = sorted(p.name for p in out.iterdir())
    code, _, stderr = cli(*args, "--resume", "latest")
    assert code == EXIT_NO_INPUT and str(out) in stderr and "vocab.txt" in stderr
    assert sorted(p.name for p in out.iterdir()) == listing  # no vocabulary was built in its place


def test_resume_from_weights_that_do_not_fit_the_model_is_refused(tmp_path, cli, monkeypatch):
    """A checkpoint of a Chinese scratch run written before bigram tables (simulated: the table taken out of its
    weights) cannot be resumed into today's model: refused with a usage error naming --resume, no traceback."""
    from safetensors.torch import load_file, save_file

    out = tmp_path / "run"
    args = ["train", EXAMPLES / "zh_reviews.csv", "-m", "scratch:tiny", "--max-steps", "6", "--save-every", "3",
            "--cpu", "-o", out]
    monkeypatch.setenv("BERTCLF_STOP_AFTER_STEP", "3")
    assert cli(*args)[0] == EXIT_SIGTERM
    monkeypatch.delenv("BERTCLF_STOP_AFTER_STEP")
    weights = out / "checkpoints" / "step-3" / "model.safetensors"
    tensors = load_file(weights)
    del tensors["bert.embeddings.bigram_embeddings.weight"]
    save_file(tensors, weights)
    state_file = weights.parent / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["sha256"]["model.safetensors"] = _sha(weights)  # a consistent checkpoint, only of another model
    state_file.write_text(json.dumps(state))
    code, _, stderr = cli(*args, "--resume", "latest")
    assert code == EXIT_USAGE and "--resume" in stderr and "do not fit" in stderr
    assert "Traceback" not in stderr


def test_resume_from_an_optimizer_state_of_the_whole_embedding_matrix_is_refused(tmp_path, cli, tiny_model_dir,
                                                                                  monkeypatch):
    """A checkpoint written before bertclf.used_rows holds AdamW moments for every word-embedding row, where
    today's optimizer trains only the used rows: refused before the first step (without the check the run went
    on, exit 0, its fused step reading moments of the wrong shape), a usage error naming --resume."""
    import torch

    out = tmp_path / "run"
    args = ["train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "--max-steps", "6", "--save-every", "3",
            "--cpu", "-o", out]
    monkeypatch.setenv("BERTCLF_STOP_AFTER_STEP", "3")
    assert cli(*args)[0] == EXIT_SIGTERM
    monkeypatch.delenv("BERTCLF_STOP_AFTER_STEP")
    rows = json.loads((out / "bertclf.json").read_text())["embedding_rows"]
    assert rows["trained"] < rows["of"]
    optimizer_file = out / "checkpoints" / "step-3" / "optimizer.pt"
    saved = torch.load(optimizer_file, weights_only=True)
    widened = 0
    for state in saved["optimizer"]["state"].values():
        if state["exp_avg"].shape[0] == rows["trained"]:  # the used rows' moments, made the whole matrix's
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = torch.zeros(rows["of"], *state[key].shape[1:])
            widened += 1
    assert widened == 1
    torch.save(saved, optimizer_file)
    state_file = optimizer_file.parent / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["sha256"]["optimizer.pt"] = _sha(optimizer_file)
    state_file.write_text(json.dumps(state))
    code, _, stderr = cli(*args, "--resume", "latest")
    assert code == EXIT_USAGE and "--resume" in stderr and "optimizer state" in stderr
    assert "Traceback" not in stderr
