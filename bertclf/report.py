"""Files of `bertclf eval --output DIR`: metrics.json, confusion_matrix.csv/.png and errors.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from bertclf.errors import OutputError
from bertclf.runinfo import write_json_atomic


def write_report(report: dict, directory: Path) -> list[Path]:
    """metrics.json, errors.csv, and confusion_matrix.csv/.png (single-label) or per_label.csv (multi-label)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create --output {directory}: {exc.strerror or exc}.") from None
    written = [directory / "metrics.json", directory / "errors.csv"]
    write_json_atomic(written[0], {k: v for k, v in report.items() if k != "errors"})
    fields = ["row", "text", *(["text_pair"] if report["errors"] and "text_pair" in report["errors"][0] else []),
              "gold", "predicted", "confidence"]
    with written[1].open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(report["errors"])
    metrics = report["metrics"]
    if "confusion_matrix" not in metrics:  # multi-label: one row of counts and scores per label
        written.append(directory / "per_label.csv")
        rows = [{"label": label, **values} for label, values in metrics["per_class"].items()]
        with written[-1].open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return written
    matrix = metrics["confusion_matrix"]
    written += [directory / "confusion_matrix.csv", directory / "confusion_matrix.png"]
    with written[2].open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["gold \\ predicted", *matrix["labels"]])
        for label, row in zip(matrix["labels"], matrix["matrix"], strict=True):
            writer.writerow([label, *row])
    _plot_confusion(matrix["labels"], matrix["matrix"], written[3])
    return written


def _plot_confusion(labels: list[str], matrix: list[list[int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.asarray(matrix)
    size = max(4.0, 0.55 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    threshold = values.max() / 2 if values.size else 0
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(values[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if values[i, j] > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
