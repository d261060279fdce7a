"""`bertclf train` end to end on the tiny BERT: the run directory contract, options, refusals."""

import hashlib
import json

import pytest
from conftest import EXAMPLES, pretrain_dir, run_bertclf, write_csv

from bertclf.errors import EXIT_DATA, EXIT_NO_INPUT, EXIT_USAGE

RUN_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "bertclf.json",
             "metrics.json", "train_log.jsonl", "README.md"}


def test_run_directory_is_complete_and_self_describing(tiny_run):
    assert RUN_FILES <= {p.name for p in tiny_run.iterdir()}
    manifest = json.loads((tiny_run / "bertclf.json").read_text())
    assert manifest["completed"] is True
    assert manifest["labels"] == ["cooking", "sports", "technology", "weather"]
    assert manifest["text_column"] == "text" and manifest["label_column"] == "label"
    assert manifest["max_length"] == 128 and manifest["truncation"] == "head+tail"
    assert manifest["data"]["train"]["encoding"] == "utf-8-sig"
    assert len(manifest["data"]["train"]["sha256"]) == 64
    assert manifest["learning_rate"] == 2e-3 and manifest["learning_rate_source"] == "--lr"
    assert manifest["seed"] == 42 and manifest["threads"] >= 1 and manifest["world_size"] == 1
    assert manifest["versions"]["torch"] and manifest["argv"]
    assert manifest["best_step"] >= 1
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["id2label"] == {"0": "cooking", "1": "sports", "2": "technology", "3": "weather"}
    assert config["label2id"]["weather"] == 3
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert 0.0 <= metrics["macro_f1"] <= 1.0 and metrics["step"] == manifest["best_step"]
    log = [json.loads(line) for line in (tiny_run / "train_log.jsonl").read_text().splitlines()]
    # 216 training rows in batches of 16: 14 steps an epoch, an evaluation after each of 20 epochs (tiny_run)
    assert [r["step"] for r in log if r["type"] == "eval"] == list(range(14, 281, 14))
    assert all(0.0 <= r["val_macro_f1"] <= 1.0 for r in log if r["type"] == "eval")
    assert any(r["type"] == "train" and r["loss"] > 0 and r["learning_rate"] >= 0 for r in log)
    card = (tiny_run / "README.md").read_text()
    assert "cooking" in card and "bertclf predict" in card


def test_tiny_model_learns_the_example_topics(tiny_run, cli):
    """Learning, measured where it is not luck: with 24 validation rows a random 32-wide model's best validation
    accuracy moves between 0.33 and 0.79 from seed to seed (native and fast dropout alike, 8 seeds each), so
    the test reads the training loss and how well the kept model fits the file it was trained on."""
    log = [json.loads(line) for line in (tiny_run / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["type"] == "train"]
    assert losses[-1] < 0.75 * losses[0], losses
    code, stdout, stderr = cli("eval", tiny_run, EXAMPLES / "en_topics.csv", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["metrics"]["accuracy"] > 0.5  # 4 balanced classes: chance is 0.25


def test_transformers_pipeline_loads_the_run_unchanged(tiny_run):
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(tiny_run))
    out = classifier(["The team won the match.", "Bake the bread for an hour."])
    assert {o["label"] for o in out} <= {"cooking", "sports", "technology", "weather"}


def test_json_summary_and_determinism(tiny_model_dir, tmp_path, cli):
    data = EXAMPLES / "en_topics.csv"
    hashes = []
    for name in ("a", "b"):
        code, stdout, stderr = cli("train", data, "-m", tiny_model_dir, "-o", tmp_path / name, "--max-steps", "6",
                                   "--batch-size", "8", "--json", "--cpu")
        assert code == 0, stderr
        summary = json.loads(stdout)
        assert summary["run_dir"] == str(tmp_path / name) and summary["steps"] == 6
        assert set(summary["timings"]) == {"train_seconds", "samples_per_second", "compile_seconds"}
        assert summary["timings"]["compile_seconds"] is None and summary["compile"]["enabled"] is False
        assert "macro_f1" in summary["validation_metrics"]
        hashes.append(hashlib.sha256((tmp_path / name / "model.safetensors").read_bytes()).hexdigest())
    assert hashes[0] == hashes[1]  # same seed, data, threads and versions: byte-identical weights


def test_non_empty_output_is_refused_unless_overwrite(tiny_model_dir, tmp_path, cli):
    output = tmp_path / "run"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    args = ["train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", output, "--max-steps", "2", "--cpu"]
    code, _, stderr = cli(*args)
    assert code == EXIT_USAGE and "--overwrite" in stderr
    code, _, stderr = cli(*args, "--overwrite")
    assert code == 0, stderr
    assert (output / "keep.txt").read_text() == "mine"  # only our own files are replaced


def test_validation_file_with_unseen_label_is_a_data_error(tiny_model_dir, tmp_path, cli):
    val = write_csv(tmp_path / "val.csv", [("rain all day", "weather"), ("new phone", "gadgets")])
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "--validation", val,
                          "-o", tmp_path / "run", "--cpu")
    assert code == EXIT_DATA and "'gadgets' (1)" in stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--lr", "fast"], EXIT_USAGE, "--lr"),
    (["--batch-size", "0"], EXIT_USAGE, "--batch-size"),
    (["--truncation", "middle"], EXIT_USAGE, "--truncation"),
    (["--text-column", "body"], EXIT_DATA, "Columns found: text, label"),
])
def test_option_validation(tiny_model_dir, tmp_path, cli, args, code, message):
    exit_code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", tmp_path / "r",
                               *args)
    assert exit_code == code and message in stderr


def test_missing_file_and_single_label_exit_codes_without_traceback(tmp_path):
    result = run_bertclf("train", tmp_path / "nope.csv", "-m", "scratch:tiny")
    assert result.returncode == EXIT_NO_INPUT and "no such file" in result.stderr
    one = write_csv(tmp_path / "one.csv", [("a", "x"), ("b", "x")])
    result = run_bertclf("train", one, "-m", "scratch:tiny")
    assert result.returncode == EXIT_DATA and "single label" in result.stderr
    assert "Traceback" not in result.stderr


def test_scratch_model_trains_on_chinese_without_download(tmp_path, cli):
    code, stdout, stderr = cli("train", EXAMPLES / "zh_reviews.csv", "-m", "scratch:tiny", "-o", tmp_path / "zh",
                               "--max-steps", "8", "--json", "--cpu")
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "zh" / "bertclf.json").read_text())
    assert manifest["model"]["source"] == "scratch" and manifest["learning_rate_source"] == "auto"
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(str(tmp_path / "zh"))
    assert tokenizer.tokenize("质量很好") == ["质", "量", "很", "好"]  # one token per Chinese character


def test_mixed_precision_auto_follows_the_hardware():
    from bertclf.train import resolve_mixed_precision

    assert resolve_mixed_precision("auto", False, cuda=True, cuda_bf16=True) == "bf16"
    assert resolve_mixed_precision("auto", False, cuda=True, cuda_bf16=False) == "fp16"
    assert resolve_mixed_precision("auto", True, cuda=True, cuda_bf16=True, cpu_flags="avx2") == "no"
    assert resolve_mixed_precision("auto", False, cuda=False, cpu_flags="fpu avx2 avx512f") == "no"
    assert resolve_mixed_precision("auto", False, cuda=False, cpu_flags="avx2 avx512_bf16") == "bf16"
    assert resolve_mixed_precision("auto", False, cuda=False, cpu_flags="amx_bf16") == "bf16"
    assert resolve_mixed_precision("fp16", False, cuda=False, cpu_flags="") == "fp16"


def test_missing_tracker_package_is_named(tmp_path, cli, tiny_model_dir):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", tmp_path / "r",
                          "--report-to", "wandb")
    assert code == EXIT_USAGE and "pip install wandb" in stderr


def test_gradient_checkpointing_trains(tmp_path, cli, tiny_model_dir):
    code, stdout, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", tmp_path / "r",
                               "--max-steps", "3", "--gradient-checkpointing", "--json", "--cpu")
    assert code == 0, stderr
    manifest = json.loads((tmp_path / "r" / "bertclf.json").read_text())
    assert manifest["config"]["gradient_checkpointing"] is True and manifest["mixed_precision"] in ("no", "bf16")


def test_train_can_run_twice_in_one_process_with_different_precisions(tmp_path, tiny_model_dir):
    from bertclf.config import TrainConfig
    from bertclf.train import train

    for precision in ("fp16", "no"):  # fp16 autocast on CPU is accepted by accelerate; the point is the switch
        result = train(TrainConfig(train_file=EXAMPLES / "en_topics.csv", model=str(tiny_model_dir),
                                   output=tmp_path / precision, max_steps=1, cpu=True, mixed_precision=precision))
        assert result.manifest["mixed_precision"] == precision


def test_class_weights_balanced_and_explicit(tmp_path, cli, tiny_model_dir):
    from safetensors.torch import load_file

    rows = [("the match was won", "sports")] * 3 + [("a sunny and warm day", "weather")] * 9
    data = write_csv(tmp_path / "skewed.csv", rows * 4)
    code, _, stderr = cli("train", data, "-m", tiny_model_dir, "-o", tmp_path / "b", "--max-steps", "2", "--cpu",
                          "--class-weights", "balanced")
    assert code == 0, stderr
    weights = json.loads((tmp_path / "b" / "bertclf.json").read_text())["class_weights"]
    train_rows = json.loads((tmp_path / "b" / "bertclf.json").read_text())["train_rows"]
    assert weights["sports"] > 1 > weights["weather"]  # n / (2 * count): rare class weighs more
    assert weights["sports"] == pytest.approx(train_rows / (2 * round(train_rows * 0.25)), rel=0.1)

    # All weights 1 follows the weighted-loss path and must train exactly like no weights (within float noise).
    common = ["train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "--max-steps", "4", "--cpu",
              "--mixed-precision", "no", "--eval-every", "100"]
    assert cli(*common, "-o", tmp_path / "plain")[0] == 0
    code, _, stderr = cli(*common, "-o", tmp_path / "ones", "--class-weights", "sports=1,weather=1")
    assert code == 0, stderr
    plain, ones = load_file(str(tmp_path / "plain" / "model.safetensors")), load_file(
        str(tmp_path / "ones" / "model.safetensors"))
    assert all((plain[k] - ones[k]).abs().max() < 1e-5 for k in plain)

    code, _, stderr = cli(*common, "-o", tmp_path / "bad", "--class-weights", "gadgets=2")
    assert code == EXIT_USAGE and "--class-weights" in stderr


def test_is_better_breaks_ties_on_the_metric_by_the_lower_loss():
    from bertclf.train_loop import is_better

    assert is_better(0.5, 0.9, None, None, greater_is_better=True)  # the first evaluation
    assert is_better(0.6, 0.9, 0.5, 0.1, greater_is_better=True)
    assert not is_better(0.4, 0.1, 0.5, 0.9, greater_is_better=True)
    assert is_better(0.5, 0.69, 0.5, 0.98, greater_is_better=True)  # tied: the lower loss wins
    assert not is_better(0.5, 0.98, 0.5, 0.69, greater_is_better=True)
    assert not is_better(0.5, 0.69, 0.5, 0.69, greater_is_better=True)  # a full tie keeps the earlier step
    assert is_better(0.2, 0.5, 0.3, 0.4, greater_is_better=False)  # hamming_loss: lower is better
    assert not is_better(0.5, 0.1, 0.5, None, greater_is_better=True)  # no recorded loss: the earlier step


def test_a_tie_on_the_metric_keeps_the_step_with_the_lower_validation_loss(tiny_model_dir, tmp_path, cli):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    # At this rate the tiny BERT still predicts one class everywhere after 2 epochs: every evaluation ties on
    # macro-F1, while the validation loss, pushed up by the first large steps, falls (1.3918 -> 1.3881).
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", out, "--epochs", "2",
                          "--eval-every", "7", "--save-every", "7", "--keep", "10", "--cpu", "--batch-size", "32",
                          "--lr", "1e-2", "--no-calibration")  # the run then holds that step's weights exactly
    assert code == 0, stderr
    evals = [r for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if r["type"] == "eval"]
    top = max(r["val_macro_f1"] for r in evals)
    tied = [r for r in evals if r["val_macro_f1"] == top]
    assert len(tied) >= 2, evals  # the situation under test
    kept = min(tied, key=lambda r: r["val_loss"])
    assert kept["step"] != tied[0]["step"]  # the old rule (first tied step) would have kept another one
    assert json.loads((out / "bertclf.json").read_text())["best_step"] == kept["step"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == kept["step"] and metrics["loss"] == pytest.approx(kept["val_loss"])
    saved, at_step = load_file(str(out / "model.safetensors")), load_file(
        str(out / "checkpoints" / f"step-{kept['step']}" / "model.safetensors"))
    assert all(bool((saved[k] == at_step[k]).all()) for k in saved)  # the run holds that step's weights


def test_batch_size_auto_gives_small_files_enough_updates(tiny_model_dir, tmp_path, cli):
    """240 rows (216 trained) for 1 epoch: batch 32 would make 7 updates, so auto picks 8 (27 updates); a given
    --batch-size is kept, and the manifest says which it was."""
    for name, extra, batch, source in (("auto", [], 8, "auto"), ("given", ["--batch-size", "16"], 16, "--batch-size")):
        out = tmp_path / name
        code, stdout, stderr = cli("train", EXAMPLES / "en_topics.csv", "-m", tiny_model_dir, "-o", out, "--epochs",
                                   "1", "--json", "--cpu", *extra)
        assert code == 0, stderr
        manifest = json.loads((out / "bertclf.json").read_text())
        assert manifest["config"]["batch_size"] == batch and manifest["batch_size_source"] == source
        assert json.loads(stdout)["steps"] == -(-216 // batch)
        assert f"steps of {batch} ({source})" in stderr


def test_batch_size_auto_knows_from_scratch_models_by_name_and_directory(tiny_model_dir, tmp_path):
    """From-scratch models (300 updates) and pretrained ones (1,500) get different auto batches; the difference
    is read before any model is resolved, from --model's name or a `bertclf pretrain` directory's manifest."""
    from bertclf.train import from_scratch

    scratch_pretrained = pretrain_dir(tmp_path / "pretrained-from-scratch", "scratch")
    continued = pretrain_dir(tmp_path / "continued", "local")
    assert from_scratch("scratch") and from_scratch("scratch:tiny") and from_scratch(str(scratch_pretrained))
    assert not from_scratch(str(tiny_model_dir)) and not from_scratch(str(continued))
    assert not from_scratch("all-MiniLM-L6-v2") and not from_scratch("org/name") and not from_scratch("auto")


def test_auto_learning_rate_follows_the_model_width_and_two_labels(tiny_model_dir, tmp_path, cli):
    from bertclf.model import pretrained_learning_rate

    # A MiniLM-size (or smaller) pretrained model: 1e-4 for many labels, 5e-5 for two (see pretrained_learning_rate).
    cases = (("topics", EXAMPLES / "en_topics.csv", 1e-4), ("binary", EXAMPLES / "zh_reviews.csv", 5e-5))
    for name, data, expected in cases:
        code, _, stderr = cli("train", data, "-m", tiny_model_dir, "-o", tmp_path / name, "--max-steps", "1", "--cpu")
        assert code == 0, stderr
        manifest = json.loads((tmp_path / name / "bertclf.json").read_text())
        assert manifest["learning_rate"] == expected and manifest["learning_rate_source"] == "auto", name
    assert pretrained_learning_rate(768) == pretrained_learning_rate(768, binary=True) == 5e-5
    assert pretrained_learning_rate(1024) == 2e-5
