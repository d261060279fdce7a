"""Label sets, multi-label metrics, tuned thresholds and loss weights."""

import numpy as np
import pytest
from conftest import write_csv

from bertclf.data import read_labelled
from bertclf.errors import DataError, UsageError
from bertclf.labels import LabelSpace, parse_threshold_option, rarest_label_keys, split_label_cell, tune_thresholds
from bertclf.metrics import multilabel_metrics


def test_label_cells_split_by_separator_or_as_json_lists():
    assert split_label_cell("sport, politics", ",") == ["sport", "politics"]
    assert split_label_cell("a|b|a|", "|") == ["a", "b"]
    assert split_label_cell('["a", "b"]', ",") == ["a", "b"]
    assert split_label_cell("[1, 2]", ",") == ["1", "2"]
    assert split_label_cell("[]", ",") == []
    with pytest.raises(ValueError, match="JSON"):
        split_label_cell('["a", "b"', ",")
    with pytest.raises(ValueError, match="label names"):
        split_label_cell('[["a"]]', ",")


def test_multi_label_files_give_label_sets_and_errors_name_the_row(tmp_path):
    path = write_csv(tmp_path / "m.csv", [("one", "a,b"), ("two", '["c"]'), ("three", "[]")], header=("text", "labels"))
    data = read_labelled(path, text_column=None, label_column=None, multi_label=True)
    assert data.labels == [["a", "b"], ["c"], []] and data.label_names() == ["a", "b", "c"]
    bad = write_csv(tmp_path / "bad.csv", [("one", "a"), ("two", '["c", ')], header=("text", "labels"))
    with pytest.raises(DataError, match=r"row 2, column 'labels'.*JSON"):
        read_labelled(bad, text_column=None, label_column=None, multi_label=True)
    empty = write_csv(tmp_path / "empty.csv", [("one", "a"), ("two", "")], header=("text", "labels"))
    with pytest.raises(DataError, match="rows 2") as error:
        read_labelled(empty, text_column=None, label_column=None, multi_label=True)
    assert "[]" in error.value.hint


def test_pair_columns_are_read_and_checked(tmp_path):
    path = write_csv(tmp_path / "p.csv", [("q1", "a1", "yes"), ("q2", "a2", "no")], header=("text", "answer", "label"))
    data = read_labelled(path, text_column=None, label_column=None, text_pair_column="answer")
    assert data.pairs == ["a1", "a2"] and data.pair_column == "answer"
    with pytest.raises(DataError, match="no column 'reply'.*Columns found: text, answer, label"):
        read_labelled(path, text_column=None, label_column=None, text_pair_column="reply")
    gap = write_csv(tmp_path / "gap.csv", [("q1", "", "yes"), ("q2", "a2", "no")], header=("text", "answer", "label"))
    with pytest.raises(DataError, match="1 row.*empty.*'answer' pair text"):
        read_labelled(gap, text_column=None, label_column=None, text_pair_column="answer")
    with pytest.raises(UsageError, match="must differ"):
        read_labelled(path, text_column=None, label_column=None, text_pair_column="text")


def test_multilabel_metrics_match_hand_counts():
    gold = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    pred = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 1]])
    metrics = multilabel_metrics(gold, pred, ["a", "b", "c"], thresholds=[0.5, 0.4, 0.3])
    assert metrics["subset_accuracy"] == 0.5  # rows 2 and 3 exactly right
    assert metrics["hamming_loss"] == pytest.approx(2 / 12)  # one miss, one false alarm
    # micro: tp 5, fp 1, fn 1
    assert metrics["micro_precision"] == pytest.approx(5 / 6) and metrics["micro_f1"] == pytest.approx(5 / 6)
    per = metrics["per_class"]
    assert per["a"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2,
                        "threshold": 0.5, "tp": 2, "fp": 1, "fn": 0, "tn": 1}
    assert per["c"]["recall"] == 0.5 and per["c"]["threshold"] == 0.3
    assert metrics["macro_f1"] == pytest.approx((0.8 + 1.0 + 2 / 3) / 3)


def test_thresholds_maximise_each_labels_f1():
    probs = np.array([[0.9, 0.2], [0.35, 0.1], [0.3, 0.3], [0.1, 0.05]])
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], dtype=np.float32)
    first, second = tune_thresholds(probs, targets)
    assert 0.3 < first <= 0.35  # between the lowest positive (0.35) and the highest negative (0.3)
    assert second == 0.5  # no positive row: nothing to tune on
    space = LabelSpace(("a", "b"), multi_label=True)
    decided = space.decide(probs, np.array([first, second]))
    assert decided[:, 0].tolist() == [1, 1, 0, 0] and decided[:, 1].sum() == 0


def test_threshold_option_sets_all_labels_or_some():
    assert parse_threshold_option("0.3", ("a", "b")) == {"a": 0.3, "b": 0.3}
    assert parse_threshold_option("b=0.7", ("a", "b")) == {"b": 0.7}
    with pytest.raises(UsageError, match="--threshold"):
        parse_threshold_option("c=0.7", ("a", "b"))
    with pytest.raises(UsageError, match="between 0 and 1"):
        parse_threshold_option("1.5", ("a", "b"))


def test_balanced_weights_for_multi_label_are_negatives_over_positives():
    space = LabelSpace(("a", "b", "c"), multi_label=True)
    targets = space.targets([["a"], ["a", "b"], ["a"], ["c"]])
    assert space.loss_weights("balanced", targets) == [pytest.approx(1 / 3), 3.0, 3.0]
    assert space.loss_weights("b=2", targets) == [1.0, 2.0, 1.0]


def test_multi_label_split_keys_are_the_rarest_label_of_each_row():
    assert rarest_label_keys([["a", "b"], ["a"], ["a", "c"], ["b", "c"], []]) == ["b", "a", "c", "b", ""]
