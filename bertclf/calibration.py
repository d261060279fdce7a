"""Temperature scaling of a trained single-label classifier (Guo et al. 2017), folded into its weights.

One temperature T > 0 is fitted on the validation logits to minimise the negative log-likelihood; then the
classifier's weight and bias are divided by T, so the saved model itself outputs logits / T. Every consumer
of the run directory (bertclf, `transformers.pipeline`, an ONNX export, TEI) reads calibrated scores with no
extra step, and since dividing by a positive number keeps the order of the logits, no prediction changes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bertclf.encoding import pool_windows
from bertclf.metrics import calibration_metrics

# The search runs on log T, bounded: T from 0.02 to 50 covers every model seen (the demo's MiniLM fits
# about 0.3) and keeps a degenerate validation set (every row right, NLL falling as T -> 0) finite.
LOG_T_BOUNDS = (math.log(0.02), math.log(50.0))
# A temperature is fitted only where validation can check it: at least this many texts, split into this many
# folds for the cross-validated check.
MIN_ROWS = 20
CV_FOLDS = 5


def pooled_probs(logits: np.ndarray, temperature: float, space, encoded) -> np.ndarray:
    """Per-text probabilities of logits divided by `temperature` (windows averaged, as inference does)."""
    return pool_windows(space.probabilities(np.asarray(logits, dtype=np.float64) / temperature), encoded)


def _per_text_nll(logits: np.ndarray, temperature: float, space, encoded, targets: np.ndarray) -> np.ndarray:
    probs = pooled_probs(logits, temperature, space, encoded)
    return -np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-300, None))


def _fit_on(logits: np.ndarray, targets: np.ndarray, space, encoded, rows: np.ndarray) -> float:
    """The T minimising the mean NLL of the texts `rows`: a bounded Brent search on log T, deterministic (the
    same logits give the same T, bit for bit). Never worse on those rows than leaving the model as it is."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        return float(_per_text_nll(logits, math.exp(log_t), space, encoded, targets)[rows].mean())

    found = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-7})
    return float(math.exp(found.x)) if found.fun < nll(0.0) else 1.0


def cross_validated_nll(logits: np.ndarray, targets: np.ndarray, space, encoded) -> tuple[float, float]:
    """(raw, scaled): the mean NLL of every validation text at T = 1 and at a T fitted on the other folds.

    A temperature fitted on a few hundred rows generalises; one fitted on two dozen, with one or no mistakes
    among them, pins T to wherever its few rows happen to lie and makes unseen rows' scores worse (the demo's
    24 all-right rows fitted T = 0.04 and raised the test NLL). Scoring each fold with a T it was not fitted on
    tells the two apart on the validation set alone. Folds are texts taken in turn (text i in fold i mod k),
    so a file sorted by label still spreads every label over the folds."""
    n_texts = len(targets)
    folds = np.arange(n_texts) % min(CV_FOLDS, n_texts)
    raw = _per_text_nll(logits, 1.0, space, encoded, targets)
    scaled = np.empty(n_texts)
    for fold in np.unique(folds):
        held_out = folds == fold
        temperature = _fit_on(logits, targets, space, encoded, np.flatnonzero(~held_out))
        scaled[held_out] = _per_text_nll(logits, temperature, space, encoded, targets)[held_out]
    return float(raw.mean()), float(scaled.mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray, space, encoded) -> tuple[float, str | None]:
    """(T, why T is 1): T minimises the validation NLL of softmax(logits / T), or is 1 (the scores left raw,
    with the reason) where validation cannot tell a good T: fewer than MIN_ROWS texts; no misclassified text
    (the NLL then falls without end as T shrinks, whatever the model's true error rate); or a T fitted on part
    of validation that does not lower the NLL of the rest (`cross_validated_nll`)."""
    targets = np.asarray(targets, dtype=np.int64)
    n_texts = len(targets)
    if n_texts < MIN_ROWS:
        return 1.0, f"only {n_texts} validation texts (at least {MIN_ROWS} are needed to fit a temperature)"
    predicted = pooled_probs(logits, 1.0, space, encoded).argmax(axis=1)
    if np.array_equal(predicted, targets):
        return 1.0, (f"all {n_texts} validation texts are classified right, which says nothing of how often "
                     "the model is wrong")
    raw, scaled = cross_validated_nll(logits, targets, space, encoded)
    if not scaled < raw:
        return 1.0, (f"a temperature fitted on part of validation did not lower the NLL of the rest ({CV_FOLDS}-fold: "
                     f"{raw:.4f} raw, {scaled:.4f} scaled)")
    return _fit_on(logits, targets, space, encoded, np.arange(n_texts)), None


def fold_temperature(model, temperature: float) -> None:
    """classifier(x) / T == (W / T) x + b / T: divide the classifier's weight and bias in place."""
    import torch

    with torch.no_grad():
        model.classifier.weight.div_(temperature)
        model.classifier.bias.div_(temperature)


def calibrate_saved_model(run_dir: Path, tokenizer, encoded, targets: np.ndarray, space, batch_size: int,
                          device) -> tuple[dict[str, Any], np.ndarray | None]:
    """Fit T on the best model saved in `run_dir`, fold it in and save the model again. Returns the
    manifest's "calibration" record and the calibrated validation probabilities; or, where the model is left
    as it is, a record that says why ({"method", "skipped"}) and None: validation cannot pin T down
    (`fit_temperature`), or folding would change a prediction (possible only with --long-text chunks, where
    the windows' probabilities are averaged)."""
    from bertclf import console
    from bertclf.inference import predict_logits
    from bertclf.model import load_run_model

    model = load_run_model(run_dir).to(device)
    # Full precision, batches as eval runs them: T fits the scores eval and predict will see.
    before_logits = predict_logits(model, tokenizer, encoded, batch_size, device=device)
    before = pooled_probs(before_logits, 1.0, space, encoded)
    temperature, left_raw = fit_temperature(before_logits, targets, space, encoded)
    if left_raw is not None:
        console.info(f"Scores left uncalibrated: {left_raw}. A validation set of a few hundred rows lets "
                     "bertclf calibrate them.")
        return {"method": "temperature_scaling", "skipped": left_raw}, None
    fold_temperature(model, temperature)
    after = pooled_probs(predict_logits(model, tokenizer, encoded, batch_size, device=device), 1.0, space, encoded)
    if not np.array_equal(before.argmax(axis=1), after.argmax(axis=1)):
        changed = int((before.argmax(axis=1) != after.argmax(axis=1)).sum())
        left_raw = (f"temperature {temperature:.4f} would change {changed} validation prediction(s) (windows of "
                    "long texts average differently)")
        console.warn(f"Calibration skipped: {left_raw}; the model keeps its raw scores.")
        return {"method": "temperature_scaling", "skipped": left_raw}, None
    model.save_pretrained(str(run_dir), safe_serialization=True)
    del model
    stats_before, stats_after = calibration_metrics(before, targets), calibration_metrics(after, targets)
    record = {"method": "temperature_scaling", "temperature": temperature, "fitted_on": "validation",
              "ece_before": stats_before["ece"], "ece_after": stats_after["ece"],
              "nll_before": stats_before["nll"], "nll_after": stats_after["nll"],
              "brier_before": stats_before["brier"], "brier_after": stats_after["brier"]}
    return record, after
