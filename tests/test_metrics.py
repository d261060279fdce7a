import numpy as np
import pytest

from bertclf.metrics import classification_metrics


def test_metrics_match_hand_computed_values():
    labels = ["a", "b", "c"]
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: a p=1/2 r=1/2, b p=2/3 r=1, c p=1 r=1/2
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["c"]["recall"] == pytest.approx(0.5)
    f1 = [0.5, 0.8, 2 / 3]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["micro_f1"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["roc_auc"] is None  # no probabilities given


def test_roc_auc_defined_only_when_every_class_is_present():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    assert classification_metrics(np.array([0, 1, 1]), probs.argmax(1), ["x", "y"], probs)["roc_auc"] == 1.0
    assert classification_metrics(np.array([1, 1, 1]), probs.argmax(1), ["x", "y"], probs)["roc_auc"] is None
