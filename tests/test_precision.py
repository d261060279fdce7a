"""--precision (bertclf.precision): bf16 inference only where the hardware has it and training found its labels
equal to fp32's; what each command reports; what cannot work says so."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import EXAMPLES

from bertclf.errors import UsageError
from bertclf.precision import MIN_BF16_AGREEMENT, label_agreement, native_bf16, resolve_precision

needs_native_bf16 = pytest.mark.skipif(not native_bf16("cpu"), reason="this CPU has no AMX or AVX512-BF16")


def _manifest(agreement: float | None) -> dict:
    return {} if agreement is None else {"inference": {"bf16": {"texts": 400, "label_agreement": agreement}}}


def test_label_agreement_single_and_multi_label():
    fp32 = np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    assert label_agreement(fp32, fp32 + [[-0.2, 0.2], [0, 0], [0, 0]], None) == pytest.approx(2 / 3)
    thresholds = np.array([0.5, 0.5])
    assert label_agreement(fp32, fp32 + [[0, 0], [0, 0], [-0.01, 0]], thresholds) == pytest.approx(2 / 3)
    assert label_agreement(fp32[:0], fp32[:0], None) == 1.0


@pytest.mark.parametrize(("native", "agreement", "expected"), [
    (True, 1.0, "bf16"),
    (True, MIN_BF16_AGREEMENT, "bf16"),
    (True, 0.99, "fp32"),  # below the bar: labels would change
    (True, None, "fp32"),  # never checked (an older run, or trained without native bf16)
    (False, 1.0, "fp32"),  # emulated bf16 is several times slower than fp32
])
def test_auto_uses_bf16_only_where_native_and_checked(monkeypatch, native, agreement, expected):
    monkeypatch.setattr("bertclf.precision.cpu_has_native_bf16", lambda flags=None: native)
    choice = resolve_precision("auto", "cpu", _manifest(agreement))
    assert choice.precision == expected, choice.reason
    assert resolve_precision("fp32", "cpu", _manifest(1.0)).precision == "fp32"
    assert resolve_precision("auto", "cpu", _manifest(1.0), quantize="int8").precision == "fp32"
    assert resolve_precision("auto", "cpu", _manifest(1.0), backend="onnx").precision == "fp32"


def test_bad_precision_values_are_usage_errors():
    with pytest.raises(UsageError, match="--precision"):
        resolve_precision("fp16", "cpu", {})
    with pytest.raises(UsageError, match="--quantize int8"):
        resolve_precision("bf16", "cpu", {}, quantize="int8")


@pytest.mark.parametrize("command", ["predict", "eval", "serve"])
def test_bad_precision_flag_exits_2_naming_it(command, cli, tiny_run):
    args = {"predict": ["--text", "a text"], "eval": [EXAMPLES / "en_topics.csv"], "serve": []}[command]
    code, stdout, stderr = cli(command, tiny_run, *args, "--precision", "half")
    assert code == 2 and stdout == ""
    assert "--precision" in stderr and "auto, fp32, bf16" in stderr


def test_training_records_the_bf16_check_where_native(tiny_run):
    manifest = json.loads((tiny_run / "bertclf.json").read_text())
    if not native_bf16("cpu"):
        assert "inference" not in manifest
        return
    check = manifest["inference"]["bf16"]
    assert check["checked_on"] == "validation" and check["texts"] == manifest["validation_rows"]
    assert 0.0 <= check["label_agreement"] <= 1.0 and check["max_probability_difference"] < 0.1


@needs_native_bf16
def test_predict_and_eval_in_bf16_keep_labels_and_say_so(cli, tiny_run):
    with (EXAMPLES / "en_topics.csv").open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    outputs = {}
    for precision in ("fp32", "bf16"):
        args = [arg for text in texts for arg in ("--text", text)]
        code, stdout, stderr = cli("predict", tiny_run, *args, "--precision", precision, "--all-probs", "--cpu")
        assert code == 0, stderr
        outputs[precision] = [json.loads(line) for line in stdout.splitlines()]
    labels = {p: [row["label"] for row in rows] for p, rows in outputs.items()}
    assert np.mean(np.array(labels["fp32"]) == np.array(labels["bf16"])) >= 0.97
    # bf16 is not fp32: the probabilities differ a little, and only a little.
    fp32 = np.array([list(row["probs"].values()) for row in outputs["fp32"]])
    bf16 = np.array([list(row["probs"].values()) for row in outputs["bf16"]])
    assert 0 < np.abs(fp32 - bf16).max() < 0.05
    code, stdout, stderr = cli("eval", tiny_run, EXAMPLES / "en_topics.csv", "--json", "--bootstrap", "0",
                               "--precision", "bf16", "--cpu")
    assert code == 0, stderr
    assert json.loads(stdout)["precision"] == {"precision": "bf16", "reason": "--precision bf16"}
    # The same command twice: the same bytes (bf16 is deterministic here too).
    again = cli("eval", tiny_run, EXAMPLES / "en_topics.csv", "--json", "--bootstrap", "0", "--precision", "bf16",
                "--cpu")[1]
    assert json.loads(again)["metrics"] == json.loads(stdout)["metrics"]


def test_bf16_casts_the_model_once_and_fp32_leaves_it(tiny_run):
    """bf16 prediction holds bf16 weights (no recast of every weight matrix per batch, as autocast did); its
    probabilities are those of the fp32 model under autocast to within bf16's rounding, and come back as fp32."""
    import torch

    from bertclf.inference import predict_logits
    from bertclf.predict import Predictor

    texts = ["a short text", "another, somewhat longer text about sports and weather"]
    bf16 = Predictor.from_dir(tiny_run, cpu=True, precision="bf16")
    fp32 = Predictor.from_dir(tiny_run, cpu=True, precision="fp32")
    assert bf16.model.dtype == torch.bfloat16 and fp32.model.dtype == torch.float32
    cast_probs = bf16.predict_proba(texts)
    assert cast_probs.dtype == np.float64 and np.isfinite(cast_probs).all()
    encoded = bf16.probabilities_of(texts)[1]
    autocast_logits = predict_logits(fp32.model, fp32.tokenizer, encoded, 8, device="cpu", precision="bf16")
    cast_logits = predict_logits(bf16.model, bf16.tokenizer, encoded, 8, device="cpu", precision="bf16")
    assert cast_logits.dtype == np.float32
    assert np.abs(cast_logits - autocast_logits).max() < 0.1
    assert np.abs(fp32.predict_proba(texts) - cast_probs).max() < 0.05
