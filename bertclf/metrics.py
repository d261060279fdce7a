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


def scalar_metrics(metrics: dict) -> dict:
    """Only the single-number metrics (for tables, logs and gates)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
