"""Temperature scaling (bertclf.calibration): fitted on validation, folded into the classifier, so every
consumer of the run directory reads the calibrated scores and no prediction changes."""

import csv
import json

import numpy as np
import pytest
from conftest import EXAMPLES

from bertclf.calibration import cross_validated_nll, fit_temperature, fold_temperature, pooled_probs
from bertclf.labels import LabelSpace
from bertclf.metrics import calibration_metrics

TRAIN = ["--epochs", "6", "--batch-size", "16", "--lr", "2e-3", "--cpu"]


class _OneSequencePerText:
    def __init__(self, n):
        self.n_texts = n
        self.text_index = list(range(n))

    def __len__(self):
        return self.n_texts


def test_fitted_temperature_lowers_nll_and_keeps_every_argmax_on_overconfident_logits():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, 400)
    # Logits that point at the right label 70% of the time, scaled up 6x: badly overconfident.
    noisy = np.where(rng.random(400) < 0.7, targets, rng.integers(0, 4, 400))
    logits = 6.0 * (np.eye(4)[noisy] + rng.normal(0, 0.3, (400, 4)))
    space, encoded = LabelSpace(("a", "b", "c", "d")), _OneSequencePerText(400)
    temperature, left_raw = fit_temperature(logits, targets, space, encoded)
    assert left_raw is None
    before, after = pooled_probs(logits, 1.0, space, encoded), pooled_probs(logits, temperature, space, encoded)
    assert temperature > 2.0  # it cools the scores down
    assert calibration_metrics(after, targets)["nll"] < calibration_metrics(before, targets)["nll"]
    assert calibration_metrics(after, targets)["ece"] < calibration_metrics(before, targets)["ece"]
    assert np.array_equal(before.argmax(axis=1), after.argmax(axis=1))
    # Deterministic: the same logits give the same temperature, bit for bit.
    assert fit_temperature(logits, targets, space, encoded) == (temperature, None)


def test_validation_that_cannot_pin_the_temperature_down_leaves_the_scores_raw():
    rng = np.random.default_rng(1)
    space = LabelSpace(("a", "b", "c", "d"))
    # Every row right: the NLL keeps falling as T shrinks, whatever the model's real error rate.
    targets = rng.integers(0, 4, 60)
    logits = 3.0 * np.eye(4)[targets] + rng.normal(0, 0.3, (60, 4))
    assert fit_temperature(logits, targets, space, _OneSequencePerText(60)) == (
        1.0, "all 60 validation texts are classified right, which says nothing of how often the model is wrong")
    # Too few rows to check a fit on.
    temperature, left_raw = fit_temperature(logits[:10], targets[:10], space, _OneSequencePerText(10))
    assert temperature == 1.0 and left_raw.startswith("only 10 validation texts")
    # One confident mistake in 30 rows: fitted on all, T would sharpen; the fold that holds the mistake, scored
    # with a T fitted on the others, shows the sharpening does not carry over to rows it was not fitted on.
    targets, logits = targets[:30].copy(), logits[:30].copy()
    logits[0] = 3.0 * np.eye(4)[(targets[0] + 1) % 4]
    raw, scaled = cross_validated_nll(logits, targets, space, _OneSequencePerText(30))
    assert scaled > raw
    temperature, left_raw = fit_temperature(logits, targets, space, _OneSequencePerText(30))
    assert temperature == 1.0 and "did not lower the NLL of the rest" in left_raw


def test_folding_divides_the_classifier_output_by_the_temperature(tiny_model_dir):
    import torch
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=3).eval()
    inputs = {"input_ids": torch.tensor([[2, 10, 11, 12, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        raw = model(**inputs).logits
        fold_temperature(model, 2.5)
        folded = model(**inputs).logits
    assert torch.allclose(folded, raw / 2.5, atol=1e-6)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, cli, tiny_model_dir):
    """The same seeded run trained twice, calibrated and with --no-calibration, validated on a file of ours."""
    runs = {}
    for name, extra in (("calibrated", []), ("raw", ["--no-calibration"])):
        out = tmp_path_factory.mktemp("calibration") / name
        code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "--validation", EXAMPLES / "en_topics_test.csv",
                              "-m", tiny_model_dir, "-o", out, *TRAIN, *extra)
        assert code == 0, stderr
        runs[name] = out
    return runs


def _validation_logits(run):
    from bertclf.predict import Predictor

    with (EXAMPLES / "en_topics_test.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # fp32, as training measured the calibration and as transformers' pipeline runs the saved model.
    predictor = Predictor.from_dir(run, cpu=True, precision="fp32")
    probs, _ = predictor.probabilities_of([r["text"] for r in rows], None, 64)
    return probs, predictor.space.targets([r["label"] for r in rows])


def test_calibrated_run_has_lower_validation_nll_and_the_same_predictions(pair):
    manifest = json.loads((pair["calibrated"] / "bertclf.json").read_text())
    record = manifest["calibration"]
    assert record["temperature"] > 0 and record["temperature"] != 1.0
    assert record["nll_after"] < record["nll_before"]
    calibrated, gold = _validation_logits(pair["calibrated"])
    raw, _ = _validation_logits(pair["raw"])
    assert np.array_equal(calibrated.argmax(axis=1), raw.argmax(axis=1))  # every prediction unchanged
    measured_before, measured_after = calibration_metrics(raw, gold), calibration_metrics(calibrated, gold)
    assert measured_after["nll"] < measured_before["nll"]
    assert measured_before["nll"] == pytest.approx(record["nll_before"], abs=1e-5)
    assert measured_after["nll"] == pytest.approx(record["nll_after"], abs=1e-5)
    # metrics.json holds the calibrated validation metrics, and the fit.
    metrics = json.loads((pair["calibrated"] / "metrics.json").read_text())
    assert metrics["nll"] == pytest.approx(record["nll_after"], abs=1e-9)
    assert metrics["calibration"] == record
    # Recomputed from the saved model at full precision, as eval runs it (the loop's own evaluation may
    # run under bf16 autocast on CPUs that have it).
    assert metrics["accuracy"] == pytest.approx(float((raw.argmax(axis=1) == gold).mean()))


def test_no_calibration_keeps_raw_scores_and_records_null(pair):
    assert json.loads((pair["raw"] / "bertclf.json").read_text())["calibration"] is None
    assert "calibration" not in json.loads((pair["raw"] / "metrics.json").read_text())


def test_pipeline_on_the_saved_run_returns_the_calibrated_scores(pair):
    from transformers import pipeline

    run = pair["calibrated"]
    probs, _ = _validation_logits(run)
    with (EXAMPLES / "en_topics_test.csv").open(encoding="utf-8", newline="") as handle:
        texts = [r["text"] for r in csv.DictReader(handle)]
    classifier = pipeline("text-classification", model=str(run), device="cpu", top_k=None)
    labels = json.loads((run / "bertclf.json").read_text())["labels"]
    for result, row in zip(classifier(texts), probs, strict=True):
        scores = {d["label"]: d["score"] for d in result}
        assert [scores[label] for label in labels] == pytest.approx(list(row), abs=1e-5)



def test_calibrated_probabilities_are_bit_for_bit_those_of_the_saved_model(pair, tmp_path):
    """Training's bf16 check reuses the probabilities calibration returns as the saved model's fp32 ones, so they
    must be exactly what the saved model gives in fp32 with the same batches."""
    import shutil

    from bertclf.calibration import calibrate_saved_model
    from bertclf.inference import predict_probs
    from bertclf.model import load_run_model
    from bertclf.predict import Predictor

    run = tmp_path / "run"
    shutil.copytree(pair["raw"], run)
    with (EXAMPLES / "en_topics_test.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    predictor = Predictor.from_dir(run, cpu=True, precision="fp32")
    encoded = predictor.probabilities_of([r["text"] for r in rows], None, 64)[1]
    targets = predictor.space.targets([r["label"] for r in rows])
    record, probs = calibrate_saved_model(run, predictor.tokenizer, encoded, targets, predictor.space, 16, "cpu")
    assert "temperature" in record and probs is not None
    saved = predict_probs(load_run_model(run), predictor.tokenizer, encoded, predictor.space, 16, device="cpu")
    assert np.array_equal(probs, saved)
