"""Classification metrics, computed locally with scikit-learn (nothing fetched from the Hub)."""

from __future__ import annotations

import warnings

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str],
                           probs: np.ndarray | None = None) -> dict:
    """Scalars, a per-class report and the confusion matrix, all keyed by label name."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        matthews_corrcoef,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    ids = list(range(len(labels)))
    result: dict = {"accuracy": float(accuracy_score(y_true, y_pred))}
    with warnings.catch_warnings():
        # A class absent from both y_true and y_pred has no precision; count it as 0, silently.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for average in ("macro", "micro", "weighted"):
            p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=average,
                                                         zero_division=0)
            result[f"{average}_precision"], result[f"{average}_recall"], result[f"{average}_f1"] = (
                float(p), float(r), float(f))
        result["mcc"] = float(matthews_corrcoef(y_true, y_pred))
        p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    result["roc_auc"] = _roc_auc(roc_auc_score, y_true, probs, len(labels))
    if probs is not None:
        result.update(calibration_metrics(probs, y_true))
    result["per_class"] = {
        label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
        for i, label in enumerate(labels)
    }
    result["confusion_matrix"] = {
        "labels": list(labels),
        "matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),  # rows: gold, columns: predicted
    }
    return result


def _roc_auc(roc_auc_score, y_true: np.ndarray, probs: np.ndarray | None, num_labels: int) -> float | None:
    """ROC-AUC where it is defined: every class present in y_true (one-vs-rest, macro for multi-class)."""
    if probs is None or len(np.unique(y_true)) < num_labels:
        return None
    if num_labels == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=list(range(num_labels))))


# Equal-width bins of the top probability for the expected calibration error (Guo et al. 2017 use 15).
ECE_BINS = 15


def confidence_bins(top: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Bin index of each top probability; bin b holds (b/bins, (b+1)/bins], bin 0 also 0 itself."""
    return np.clip(np.ceil(top * bins).astype(np.int64) - 1, 0, bins - 1)


def row_brier(probs: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Per row, the sum over classes of (probability - one-hot gold)^2 (the multi-class Brier score)."""
    squared = np.square(probs.astype(np.float64))
    rows = np.arange(len(y_true))
    return squared.sum(axis=1) - 2 * probs[rows, y_true] + 1.0


def row_nll(probs: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Per row, -log of the gold class's probability (clipped at 1e-12: a 0 would be infinite)."""
    return -np.log(np.clip(probs[np.arange(len(y_true)), y_true].astype(np.float64), 1e-12, None))


def calibration_metrics(probs: np.ndarray, y_true: np.ndarray) -> dict:
    """Single-label calibration: ECE (15 equal-width bins on the top probability; 0 is perfectly
    calibrated), Brier score (mean over rows of the squared distance to the one-hot gold, 0 to 2) and NLL."""
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    if len(y_true) == 0:
        return {"ece": None, "brier": None, "nll": None}
    top = probs.max(axis=1)
    gap = np.bincount(confidence_bins(top), weights=(probs.argmax(axis=1) == y_true) - top, minlength=ECE_BINS)
    return {"ece": float(np.abs(gap).sum() / len(y_true)), "brier": float(row_brier(probs, y_true).mean()),
            "nll": float(row_nll(probs, y_true).mean())}


def scalar_metrics(metrics: dict) -> dict:
    """Only the single-number metrics (for tables, logs and gates)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str],
                       probs: np.ndarray | None = None, thresholds: list[float] | None = None) -> dict:
    """Multi-label scores on multi-hot matrices (n_texts, n_labels): subset accuracy (the whole label set
    right), Hamming loss (share of wrong label decisions), micro/macro/weighted/samples F1, and a
    per-label report with the decision threshold used and the label's confusion counts."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import (
        accuracy_score,
        hamming_loss,
        multilabel_confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    result: dict = {"subset_accuracy": float(accuracy_score(y_true, y_pred)),
                    "hamming_loss": float(hamming_loss(y_true, y_pred))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for average in ("micro", "macro", "weighted", "samples"):
            p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
            if average != "samples":
                result[f"{average}_precision"], result[f"{average}_recall"] = float(p), float(r)
            result[f"{average}_f1"] = float(f)
        p, r, f, support = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    # ROC-AUC over the labels that have both positive and negative rows (macro); None if none has.
    defined = [j for j in range(len(labels)) if 0 < y_true[:, j].sum() < len(y_true)]
    result["roc_auc"] = (float(roc_auc_score(y_true[:, defined], probs[:, defined], average="macro"))
                         if probs is not None and defined else None)
    confusion = multilabel_confusion_matrix(y_true, y_pred)  # per label: [[tn, fp], [fn, tp]]
    result["per_class"] = {
        label: {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]), "support": int(support[j]),
                "threshold": None if thresholds is None else round(float(thresholds[j]), 6),
                "tp": int(confusion[j, 1, 1]), "fp": int(confusion[j, 0, 1]), "fn": int(confusion[j, 1, 0]),
                "tn": int(confusion[j, 0, 0])}
        for j, label in enumerate(labels)
    }
    return result


def score(probs: np.ndarray, targets: np.ndarray, space, thresholds=None) -> dict:
    """All metrics of probabilities against targets (label ids, or multi-hot rows), plus the loss."""
    names = list(space.names)
    if space.multi_label:
        metrics = multilabel_metrics(targets, space.decide(probs, thresholds), names, probs, thresholds)
    else:
        metrics = classification_metrics(targets, space.decide(probs), names, probs)
    metrics["loss"] = space.loss(probs, targets)
    return metrics
