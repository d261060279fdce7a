"""Labels: one per text (single-label) or a set per text (multi-label, `--multi-label`).

Turns label cells into targets, model logits into probabilities and decisions (argmax, or one
threshold per label), computes loss weights for imbalanced data, and tunes the multi-label thresholds
on validation data.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

from bertclf.errors import UsageError

DEFAULT_THRESHOLD = 0.5


def split_label_cell(cell: str, separator: str) -> list[str]:
    """One multi-label cell to label names: a JSON list (`["a", "b"]`, `[]` for none) or a delimited
    string (`a,b`). Names are stripped and de-duplicated, order kept. ValueError if the JSON is malformed."""
    cell = cell.strip()
    if cell.startswith("["):
        try:
            value = json.loads(cell)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{cell[:40]!r} starts like a JSON list but is not one ({exc.msg})") from None
        if not isinstance(value, list) or any(isinstance(v, (list, dict, bool)) or v is None for v in value):
            raise ValueError(f"{cell[:40]!r} is not a JSON list of label names")
        names = [str(v).strip() for v in value]
    else:
        names = [part.strip() for part in cell.split(separator)]
    return list(dict.fromkeys(name for name in names if name))


def label_key(label: str | list[str]) -> str:
    """One comparable string per row's label: the label itself, or a label set in sorted, joined form (for
    spotting duplicate texts with conflicting labels)."""
    return label if isinstance(label, str) else ",".join(sorted(label))


def sorted_labels(labels) -> list[str]:
    """A stable label order: numeric order for integer labels ("2" before "10"), else alphabetical."""
    unique = set(labels)
    if all(label.lstrip("-").isdigit() for label in unique):
        return sorted(unique, key=lambda label: (int(label), label))
    return sorted(unique)


def rarest_label_keys(label_sets: list[list[str]]) -> list[str]:
    """One key per row for a stratified split of multi-label data: the row's rarest label. Every label
    then lands in both splits in about its share (a cheap stand-in for iterative stratification)."""
    counts = Counter(name for names in label_sets for name in names)
    return [min(names, key=lambda n: (counts[n], n)) if names else "" for names in label_sets]


@dataclass(frozen=True)
class LabelSpace:
    """The label names of a run (index = output unit of the model) and whether a text may have several."""

    names: tuple[str, ...]
    multi_label: bool = False

    def __len__(self) -> int:
        return len(self.names)

    def targets(self, rows: list) -> np.ndarray:
        """Label ids (n,) for single-label rows; a multi-hot float matrix (n, n_labels) for label sets."""
        position = {name: i for i, name in enumerate(self.names)}
        if not self.multi_label:
            return np.asarray([position[name] for name in rows], dtype=np.int64)
        matrix = np.zeros((len(rows), len(self.names)), dtype=np.float32)
        for row, names in enumerate(rows):
            matrix[row, [position[name] for name in names]] = 1.0
        return matrix

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Softmax over labels, or one sigmoid per label for multi-label (computed in float64)."""
        logits = logits.astype(np.float64)
        if self.multi_label:
            return 1.0 / (1.0 + np.exp(-logits))
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    def loss(self, probs: np.ndarray, targets: np.ndarray) -> float:
        """Mean cross-entropy of probabilities against targets (binary per label for multi-label)."""
        p = np.clip(probs, 1e-12, 1 - 1e-12)
        if self.multi_label:
            return float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
        return float(-np.log(p[np.arange(len(targets)), targets]).mean())

    def decide(self, probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        """Predicted label ids (n,), or a multi-hot matrix: label j is predicted when its probability
        reaches thresholds[j]."""
        if not self.multi_label:
            return probs.argmax(axis=1)
        if thresholds is None:
            thresholds = np.full(len(self.names), DEFAULT_THRESHOLD)
        return (probs >= np.asarray(thresholds)[None, :]).astype(np.int64)

    def loss_weights(self, spec: str, train_targets: np.ndarray) -> list[float]:
        """--class-weights as one number per label. Single-label: class weights of the cross-entropy,
        "balanced" being n_rows / (n_labels x rows of the label), as scikit-learn computes it. Multi-label:
        the positive weight of each label's binary loss, "balanced" being negatives / positives.
        "LABEL=WEIGHT,..." sets them by hand; labels not named keep weight 1."""
        if spec.strip().lower() == "balanced":
            if self.multi_label:
                positives = train_targets.sum(axis=0)
                negatives = len(train_targets) - positives
                return [float(n / p) if p > 0 else 1.0 for p, n in zip(positives, negatives, strict=True)]
            from sklearn.utils.class_weight import compute_class_weight

            present = np.unique(train_targets)
            computed = compute_class_weight("balanced", classes=present, y=train_targets)
            weights = dict(zip(present.tolist(), computed.tolist(), strict=True))
            return [float(weights.get(i, 1.0)) for i in range(len(self.names))]
        from bertclf.config import parse_name_values

        weights = dict.fromkeys(self.names, 1.0)
        weights.update(parse_name_values(spec.split(","), self.names, "--class-weights",
                                         "balanced, or LABEL=WEIGHT pairs such as pos=2,neg=1"))
        bad = [label for label, weight in weights.items() if weight <= 0]
        if bad:
            raise UsageError(f"Invalid value for --class-weights: the weight of {bad[0]!r} must be positive.")
        return [weights[label] for label in self.names]


def tune_thresholds(probs: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per label, the decision threshold that maximises that label's F1 on these (validation) rows. The
    threshold is placed halfway between the lowest probability predicted positive and the next lower one,
    so it does not sit exactly on a validation score. Labels with no positive (or no negative) row keep 0.5:
    there is nothing to tune on."""
    from sklearn.metrics import precision_recall_curve

    thresholds = []
    for j in range(targets.shape[1]):
        gold, scores = targets[:, j], probs[:, j]
        if gold.min() == gold.max():
            thresholds.append(DEFAULT_THRESHOLD)
            continue
        precision, recall, candidates = precision_recall_curve(gold, scores)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
        best = candidates[int(np.argmax(f1))]
        below = scores[scores < best]
        thresholds.append(float((best + below.max()) / 2) if below.size else float(best / 2))
    return thresholds


def parse_threshold_option(value: str, names: tuple[str, ...] | list[str]) -> dict[str, float]:
    """--threshold 0.4 (every label) or --threshold toxic=0.3,spam=0.7 (those labels) into {label: t}."""
    from bertclf.config import parse_name_values

    try:
        number = float(value)
    except ValueError:
        chosen = parse_name_values(value.split(","), list(names), "--threshold",
                                   "a number such as 0.4, or LABEL=VALUE pairs such as toxic=0.3")
    else:
        chosen = dict.fromkeys(names, number)
    bad = {name: t for name, t in chosen.items() if not 0.0 < t < 1.0}
    if bad:
        raise UsageError(f"Invalid value for --threshold: {value!r}. Thresholds lie strictly between 0 and 1.")
    return chosen
