"""Files of `bertclf eval --output DIR`: metrics.json, confusion_matrix.csv/.png and errors.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from bertclf.errors import OutputError, UsageError
from bertclf.runinfo import MANIFEST, write_json_atomic
from bertclf.safe_write import atomic_output


def write_report(report: dict, directory: Path) -> list[Path]:
    """metrics.json, errors.csv, and confusion_matrix.csv/.png (single-label) or per_label.csv (multi-label),
    each written whole through a temporary file. A run directory is refused: its metrics.json is the
    training's validation record, and the run must stay as train wrote it."""
    directory = Path(directory)
    if (directory / MANIFEST).exists():
        raise UsageError(f"--output {directory} is a run directory (it holds {MANIFEST}): the report would "
                         "overwrite the run's own metrics.json.",
                         hint=f"Give another folder, for example --output {directory / 'eval'}.")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create --output {directory}: {exc.strerror or exc}.") from None
    written = [directory / "metrics.json", directory / "errors.csv"]
    write_json_atomic(written[0], {k: v for k, v in report.items() if k != "errors"})
    fields = ["row", "text", *(["text_pair"] if report["errors"] and "text_pair" in report["errors"][0] else []),
              "gold", "predicted", "confidence"]
    _write_csv(written[1], fields, report["errors"])
    metrics = report["metrics"]
    if "confusion_matrix" not in metrics:  # multi-label: one row of counts and scores per label
        written.append(directory / "per_label.csv")
        rows = [{"label": label, **values} for label, values in metrics["per_class"].items()]
        _write_csv(written[-1], list(rows[0]), rows)
        return written
    matrix = metrics["confusion_matrix"]
    written += [directory / "confusion_matrix.csv", directory / "confusion_matrix.png"]
    with atomic_output(written[2], "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["gold \\ predicted", *matrix["labels"]])
        for label, row in zip(matrix["labels"], matrix["matrix"], strict=True):
            writer.writerow([label, *row])
    _plot_confusion(matrix["labels"], matrix["matrix"], written[3])
    return written


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with atomic_output(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


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
    try:
        with atomic_output(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=120)
    finally:
        plt.close(fig)
