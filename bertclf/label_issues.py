"""`bertclf eval --label-issues`: the rows of the evaluated file whose given label the model most doubts.

cleanlab's `find_label_issues` (confident learning, Northcutt et al. 2021) on the model's probabilities for
the evaluated rows: they are out-of-sample when the file was not trained on, as a test file is. The result
is a review queue ranked by the model's confidence in the given label, lowest first; never a verdict (about
half of such flags survive human review), and never part of a gate.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

FILE = "label_issues.csv"
FIELDS = ["rank", "row", "text", "given_label", "suggested_label", "confidence"]


def find_issues(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Indices (into probs' rows) of likely label errors, the least likely given label first: cleanlab's
    default prune_by_noise_rate filter, ranked by self-confidence (the probability of the given label)."""
    from cleanlab.filter import find_label_issues

    gold = np.asarray(gold, dtype=np.int64)
    if len(gold) < 2:  # confident learning estimates per-class noise rates: nothing to estimate from one row
        return np.zeros(0, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # cleanlab checks that rows sum to 1 (float32 rounding)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about classes with few rows: expected on test files
        # n_jobs=1: the same ranking every time, and no worker processes forked from a process holding a model.
        found = find_label_issues(gold, probs, filter_by="prune_by_noise_rate",
                                  return_indices_ranked_by="self_confidence", n_jobs=1)
    return np.asarray(found, dtype=np.int64)


def issue_rows(data, keep: list[int], rows, names: tuple[str, ...] | list[str]) -> list[dict]:
    """The rows of label_issues.csv: `data` the evaluated file, `keep` its evaluated row indices, `rows` the
    per-row predictions (intervals.Rows, single-label)."""
    pairs = data.pairs_at(keep)
    found = find_issues(rows.probs, rows.gold)
    issues = []
    for rank, j in enumerate(found.tolist(), start=1):
        i, given = keep[j], int(rows.gold[j])
        suggested = int(np.argmax(rows.probs[j]))
        record = {"rank": rank, "row": data.row_numbers[i], "text": data.texts[i], "given_label": names[given],
                  "suggested_label": names[suggested], "confidence": round(float(rows.probs[j, given]), 6)}
        if pairs is not None:
            record["text_pair"] = pairs[j]
        issues.append(record)
    return issues


def write_issues(path: Path, issues: list[dict], pairs: bool) -> None:
    """label_issues.csv, through a temporary file renamed into place (exit 74 naming the file on failure)."""
    import csv

    from bertclf.safe_write import atomic_output

    fields = [*FIELDS[:3], "text_pair", *FIELDS[3:]] if pairs else FIELDS
    with atomic_output(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(issues)


def check_task(multi_label: bool) -> None:
    from bertclf.errors import UsageError

    if multi_label:
        raise UsageError("--label-issues works on single-label runs only; this run is multi-label.",
                         hint="Drop --label-issues, or audit a single-label run.")


def audit(data, keep: list[int], rows, names) -> tuple[dict, list[dict]]:
    """The report's "label_issues" entry ({"count": n, ...}) and label_issues.csv's rows."""
    issues = issue_rows(data, keep, rows, names)
    return {"count": len(issues), "rows_audited": len(keep),
            "method": "cleanlab find_label_issues (prune_by_noise_rate, ranked by self-confidence)"}, issues
