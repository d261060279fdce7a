"""Bootstrap confidence intervals for every scalar metric of `eval`, and paired differences for `compare`.

A replicate resamples the n evaluated rows with replacement (numpy's Generator, seeded, so the same seed
gives the same intervals) and recomputes every scalar metric from the per-row predictions. Replicates are
vectorised: accuracy, precision, recall, F1 and MCC come from confusion counts per replicate (one bincount
over all replicates at once), ROC-AUC from per-replicate rank sums, calibration and loss from per-row
values. The interval is the percentile interval of the replicates (Efron; what `scipy.stats.bootstrap`
calls "percentile"): enough for a release gate, and the same resamples serve a paired comparison.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bertclf.metrics import ECE_BINS, confidence_bins, row_brier, row_nll

# Resampled row indices held in memory at once (int64: 8 bytes each); larger jobs are cut into chunks of
# replicates, so a 1M-row file costs time, not memory.
CHUNK_CELLS = 2_000_000
# A metric undefined in more replicates than this share (ROC-AUC when a rare class drops out) gets no interval.
MIN_DEFINED_SHARE = 0.5


@dataclass(frozen=True)
class Rows:
    """The per-row predictions every metric is computed from. Single-label: label ids (n,); multi-label:
    multi-hot matrices (n, n_labels)."""

    gold: np.ndarray
    predicted: np.ndarray
    probs: np.ndarray
    multi_label: bool

    def __len__(self) -> int:
        return len(self.gold)

    @property
    def num_labels(self) -> int:
        return int(self.probs.shape[1])

    @property
    def correct(self) -> np.ndarray:
        """Per row: is the prediction right (multi-label: the whole label set)?"""
        if self.multi_label:
            return (self.gold == self.predicted).all(axis=1)
        return self.gold == self.predicted


def index_chunks(n: int, replicates: int, seed: int, num_labels: int = 2) -> Iterator[np.ndarray]:
    """Resampled row indices, (replicates in this chunk, n) at a time, always the same for one seed and n."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, min(CHUNK_CELLS // max(n, 1), 8 * CHUNK_CELLS // max(num_labels * num_labels, 1)))
    done = 0
    while done < replicates:
        size = min(per_chunk, replicates - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def replicate_metrics(rows: Rows, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every scalar metric on each resample: idx (B, n) row indices -> {metric: (B,) values}, NaN where
    a metric is undefined on that resample. idx = arange(n)[None] reproduces the point estimates."""
    if rows.multi_label:
        return _multi_label(rows, idx)
    return _single_label(rows, idx)


def bootstrap(rows: Rows, replicates: int, seed: int) -> dict[str, np.ndarray]:
    """{metric: (replicates,) values} over `replicates` seeded resamples of the rows."""
    parts = [replicate_metrics(rows, idx) for idx in index_chunks(len(rows), replicates, seed, rows.num_labels)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def paired_bootstrap(baseline: Rows, candidate: Rows, replicates: int,
                     seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Both models' metrics on the *same* resamples (a paired bootstrap): ({metric: values}, {metric: values})."""
    if len(baseline) != len(candidate):
        raise ValueError("paired rows must have the same length")
    base_parts, cand_parts = [], []
    for idx in index_chunks(len(baseline), replicates, seed, max(baseline.num_labels, candidate.num_labels)):
        base_parts.append(replicate_metrics(baseline, idx))
        cand_parts.append(replicate_metrics(candidate, idx))

    def joined(parts):
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    return joined(base_parts), joined(cand_parts)


def percentile_interval(values: np.ndarray, confidence: float) -> list[float] | None:
    """[lower, upper] of the replicates' central `confidence` share; None where too few are defined."""
    finite = values[np.isfinite(values)]
    if len(values) == 0 or len(finite) < MIN_DEFINED_SHARE * len(values):
        return None
    alpha = 1.0 - confidence
    lower, upper = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return [float(lower), float(upper)]


def intervals(replicates: dict[str, np.ndarray], point: dict, confidence: float) -> dict[str, list[float] | None]:
    """One interval per scalar metric of `point`, in its order; None where the point itself is undefined."""
    return {name: (percentile_interval(replicates[name], confidence) if point.get(name) is not None else None)
            for name in point if name in replicates}


# ----- single-label ------------------------------------------------------------------------------------------

def _resample_counts(idx: np.ndarray) -> np.ndarray:
    """How often each row is drawn in each resample: (B, n) floats, so sums over rows become products."""
    replicates, n = idx.shape
    flat = (idx + (np.arange(replicates) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=replicates * n).reshape(replicates, n).astype(np.float64)


def _single_label(rows: Rows, idx: np.ndarray) -> dict[str, np.ndarray]:
    replicates, n = idx.shape
    k = rows.num_labels
    pairs = rows.gold * k + rows.predicted  # one cell of the confusion matrix per row
    offsets = (np.arange(replicates) * (k * k))[:, None]
    confusion = np.bincount((offsets + pairs[idx]).ravel(), minlength=replicates * k * k)
    confusion = confusion.reshape(replicates, k, k).astype(np.float64)  # [replicate, gold, predicted]
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    support, predicted = confusion.sum(axis=2), confusion.sum(axis=1)
    counts = _resample_counts(idx)
    result = {"accuracy": tp.sum(axis=1) / n}
    result.update(_averaged_scores(tp, predicted - tp, support - tp, support))
    result["mcc"] = _mcc(tp.sum(axis=1), support, predicted, n)
    # ROC-AUC as metrics._roc_auc: class 1's for two classes, else the macro one-vs-rest mean; undefined on a
    # resample that lacks a class (scikit-learn refuses it).
    classes = [1] if k == 2 else range(k)
    auc = np.mean([_auc(rows.probs[:, c], rows.gold == c, counts) for c in classes], axis=0)
    result["roc_auc"] = np.where((support > 0).all(axis=1), auc, np.nan)
    result.update(_calibration(rows, counts))
    return result


def _mcc(correct: np.ndarray, support: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """Multi-class Matthews correlation (Gorodkin's R_K, as scikit-learn computes it); 0 where undefined."""
    covariance = correct * n - (support * predicted).sum(axis=1)
    denominator = np.sqrt((n * n - (predicted ** 2).sum(axis=1)) * (n * n - (support ** 2).sum(axis=1)))
    return np.divide(covariance, denominator, out=np.zeros_like(covariance), where=denominator > 0)


def _calibration(rows: Rows, counts: np.ndarray) -> dict[str, np.ndarray]:
    """ECE, Brier, NLL and the loss of each resample, as metrics.calibration_metrics and LabelSpace.loss."""
    n = len(rows)
    probs = rows.probs.astype(np.float64)
    top = probs.max(axis=1)
    gap_by_bin = np.zeros((n, ECE_BINS))
    gap_by_bin[np.arange(n), confidence_bins(top)] = rows.correct - top
    # The loss is clipped at both ends (LabelSpace.loss), the NLL at 0 only.
    loss = -np.log(np.clip(probs[np.arange(n), rows.gold], 1e-12, 1 - 1e-12))
    return {"ece": np.abs(counts @ gap_by_bin).sum(axis=1) / n, "brier": counts @ row_brier(probs, rows.gold) / n,
            "nll": counts @ row_nll(probs, rows.gold) / n, "loss": counts @ loss / n}


def _auc(scores: np.ndarray, positive: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Binary ROC-AUC of each resample: the chance that a positive outscores a negative, ties counting half
    (Mann-Whitney), with each row weighted by how often the resample drew it."""
    replicates = counts.shape[0]
    negatives = np.flatnonzero(~positive)
    negatives = negatives[np.argsort(scores[negatives], kind="stable")]
    negative_scores = scores[negatives]
    below_or_at = np.zeros((replicates, len(negatives) + 1))  # [:, j]: drawn negatives among the j lowest
    np.cumsum(counts[:, negatives], axis=1, out=below_or_at[:, 1:])
    positives = np.flatnonzero(positive)
    lower = np.searchsorted(negative_scores, scores[positives], side="left")
    upper = np.searchsorted(negative_scores, scores[positives], side="right")
    below = below_or_at[:, lower]
    ties = below_or_at[:, upper] - below
    drawn = counts[:, positives]
    wins = (drawn * (below + 0.5 * ties)).sum(axis=1)
    pairs = drawn.sum(axis=1) * below_or_at[:, -1]
    return np.divide(wins, pairs, out=np.full(replicates, np.nan), where=pairs > 0)


def _averaged_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, support: np.ndarray,
                     averages=("macro", "micro", "weighted")) -> dict[str, np.ndarray]:
    """Precision, recall and F1, macro/micro/weighted, from per-label counts (B, L); a 0/0 counts as 0,
    as scikit-learn's zero_division=0."""
    def ratio(numerator, denominator):
        return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64),
                         where=denominator > 0)

    per_label = {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn)}
    totals = {"precision": (tp.sum(1), (tp + fp).sum(1)), "recall": (tp.sum(1), (tp + fn).sum(1)),
              "f1": (2 * tp.sum(1), (2 * tp + fp + fn).sum(1))}
    result = {}
    for name, values in per_label.items():
        if "macro" in averages:
            result[f"macro_{name}"] = values.mean(axis=1)
        if "micro" in averages:
            result[f"micro_{name}"] = ratio(*totals[name])
        if "weighted" in averages:
            result[f"weighted_{name}"] = ratio((values * support).sum(axis=1), support.sum(axis=1))
    return result


# ----- multi-label -------------------------------------------------------------------------------------------

def _multi_label(rows: Rows, idx: np.ndarray) -> dict[str, np.ndarray]:
    n = idx.shape[1]
    gold, predicted = rows.gold.astype(np.float64), rows.predicted.astype(np.float64)
    counts = _resample_counts(idx)
    tp, fp, fn = counts @ (gold * predicted), counts @ ((1 - gold) * predicted), counts @ (gold * (1 - predicted))
    result = {"subset_accuracy": counts @ rows.correct.astype(np.float64) / n,
              "hamming_loss": counts @ (gold != predicted).mean(axis=1) / n}
    result.update(_averaged_scores(tp, fp, fn, counts @ gold))
    overlap, sizes = (gold * predicted).sum(axis=1), gold.sum(axis=1) + predicted.sum(axis=1)
    row_f1 = np.divide(2 * overlap, sizes, out=np.zeros(n), where=sizes > 0)
    result["samples_f1"] = counts @ row_f1 / n
    result["roc_auc"] = _multi_label_auc(rows, counts)
    p = np.clip(rows.probs.astype(np.float64), 1e-12, 1 - 1e-12)
    row_loss = -(gold * np.log(p) + (1 - gold) * np.log(1 - p)).mean(axis=1)
    result["loss"] = counts @ row_loss / n
    return result


def _multi_label_auc(rows: Rows, counts: np.ndarray) -> np.ndarray:
    """Macro ROC-AUC over the labels that have positive and negative rows in the evaluated data (as
    metrics.multilabel_metrics); a label that loses one side in a resample is left out of that mean."""
    n = len(rows)
    defined = [j for j in range(rows.num_labels) if 0 < rows.gold[:, j].sum() < n]
    if not defined:
        return np.full(counts.shape[0], np.nan)
    aucs = np.stack([_auc(rows.probs[:, j], rows.gold[:, j] > 0, counts) for j in defined])
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(aucs)
        total = np.where(finite, aucs, 0.0).sum(axis=0)
        return np.divide(total, finite.sum(axis=0), out=np.full(counts.shape[0], np.nan), where=finite.any(axis=0))
