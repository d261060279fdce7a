"""The reliability diagram of `bertclf eval --output DIR` (single-label runs): accuracy against confidence in
the 15 equal-width bins the ECE uses, with the share of rows in each bin below."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from bertclf.metrics import ECE_BINS, calibration_metrics, confidence_bins


def bin_table(probs: np.ndarray, gold: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per bin: rows, mean top probability and accuracy (NaN for an empty bin)."""
    top = probs.max(axis=1)
    which = confidence_bins(top, bins)
    rows = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=top, minlength=bins) / rows
        accuracy = np.bincount(which, weights=probs.argmax(axis=1) == gold, minlength=bins) / rows
    return {"rows": rows, "confidence": confidence, "accuracy": accuracy}


def write_reliability_diagram(probs: np.ndarray, gold: np.ndarray, path: Path) -> None:
    """Draw the diagram (matplotlib, Agg: no display) and write the PNG whole through a temporary file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertclf.ci_reports import write_bytes

    table = bin_table(probs, gold)
    scores = calibration_metrics(probs, gold)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    width = edges[1] - edges[0]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    try:
        filled = table["rows"] > 0
        top.bar(edges[:-1][filled], table["accuracy"][filled], width=width, align="edge", edgecolor="black",
                color="#4c72b0", label="accuracy")
        accuracy, confidence = table["accuracy"][filled], table["confidence"][filled]
        # The gap to the bin's mean confidence, hatched so it shows over the bar when accuracy exceeds it.
        top.bar(edges[:-1][filled], np.abs(confidence - accuracy), bottom=np.minimum(confidence, accuracy),
                width=width, align="edge", fill=False, hatch="//", edgecolor="#c44e52", label="gap to confidence")
        top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        top.set_title(f"Reliability: ECE {scores['ece']:.3f}, Brier {scores['brier']:.3f}, NLL {scores['nll']:.3f}")
        top.legend(loc="upper left", fontsize=8)
        bottom.bar(edges[:-1], table["rows"] / max(len(gold), 1), width=width, align="edge", color="gray")
        bottom.set_xlim(0, 1)
        bottom.set_xlabel("confidence (top probability)")
        bottom.set_ylabel("share of rows")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120)
    finally:
        plt.close(fig)
    write_bytes(Path(path), buffer.getvalue(), f"--output {path}")
