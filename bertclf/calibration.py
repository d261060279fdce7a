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


def pooled_probs(logits: np.ndarray, temperature: float, space, encoded) -> np.ndarray:
    """Per-text probabilities of logits divided by `temperature` (windows averaged, as inference does)."""
    return pool_windows(space.probabilities(np.asarray(logits, dtype=np.float64) / temperature), encoded)


def fit_temperature(logits: np.ndarray, targets: np.ndarray, space, encoded) -> float:
    """The T minimising the validation NLL of softmax(logits / T): a bounded Brent search on log T, which
    is deterministic (the same logits give the same T, bit for bit)."""
    from scipy.optimize import minimize_scalar

    targets = np.asarray(targets, dtype=np.int64)
    rows = np.arange(len(targets))

    def nll(log_t: float) -> float:
        probs = pooled_probs(logits, math.exp(log_t), space, encoded)
        return float(-np.log(np.clip(probs[rows, targets], 1e-300, None)).mean())

    found = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-7})
    # Never worse than leaving the model as it is (T = 1), whatever the search did.
    return float(math.exp(found.x)) if found.fun < nll(0.0) else 1.0


def fold_temperature(model, temperature: float) -> None:
    """classifier(x) / T == (W / T) x + b / T: divide the classifier's weight and bias in place."""
    import torch

    with torch.no_grad():
        model.classifier.weight.div_(temperature)
        model.classifier.bias.div_(temperature)


def calibrate_saved_model(run_dir: Path, tokenizer, encoded, targets: np.ndarray, space, batch_size: int,
                          device) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """Fit T on the best model saved in `run_dir`, fold it in and save the model again. Returns the
    manifest's "calibration" record and the calibrated validation probabilities, or (None, None) when
    folding would change a prediction (possible only with --long-text chunks, where the windows'
    probabilities are averaged: the model is then left as it is)."""
    from bertclf import console
    from bertclf.inference import predict_logits
    from bertclf.model import load_run_model

    model = load_run_model(run_dir).to(device)
    # Full precision, batches as eval runs them: T fits the scores eval and predict will see.
    before_logits = predict_logits(model, tokenizer, encoded, batch_size, device=device)
    before = pooled_probs(before_logits, 1.0, space, encoded)
    temperature = fit_temperature(before_logits, targets, space, encoded)
    fold_temperature(model, temperature)
    after = pooled_probs(predict_logits(model, tokenizer, encoded, batch_size, device=device), 1.0, space, encoded)
    if not np.array_equal(before.argmax(axis=1), after.argmax(axis=1)):
        changed = int((before.argmax(axis=1) != after.argmax(axis=1)).sum())
        console.warn(f"Calibration skipped: temperature {temperature:.4f} would change {changed} validation "
                     "prediction(s) (windows of long texts average differently); the model keeps its raw scores.")
        return None, None
    model.save_pretrained(str(run_dir), safe_serialization=True)
    del model
    stats_before, stats_after = calibration_metrics(before, targets), calibration_metrics(after, targets)
    record = {"method": "temperature_scaling", "temperature": temperature, "fitted_on": "validation",
              "ece_before": stats_before["ece"], "ece_after": stats_after["ece"],
              "nll_before": stats_before["nll"], "nll_after": stats_after["nll"],
              "brier_before": stats_before["brier"], "brier_after": stats_after["brier"]}
    return record, after
