from pathlib import Path

import pytest

from bertclf.config import (
    EvalConfig,
    TrainConfig,
    auto_batch_size,
    parse_batch_size,
    parse_gates,
    parse_learning_rate,
)
from bertclf.errors import EXIT_USAGE, UsageError


@pytest.mark.parametrize(("field", "value", "flag"), [
    ("validation_split", 1.5, "--validation-split"),
    ("max_length", 4, "--max-length"),
    ("truncation", "middle", "--truncation"),
    ("epochs", 0, "--epochs"),
    ("batch_size", 0, "--batch-size"),
    ("lr", 3.0, "--lr"),
    ("grad_accum", 0, "--grad-accum"),
    ("warmup_ratio", 1.0, "--warmup-ratio"),
    ("early_stopping", 0, "--early-stopping"),
    ("metric", "f2", "--metric"),
    ("mixed_precision", "fp8", "--mixed-precision"),
])
def test_invalid_train_settings_name_the_flag(field, value, flag):
    with pytest.raises(UsageError) as info:
        TrainConfig(train_file=Path("x.csv"), **{field: value})
    assert flag in info.value.message
    assert info.value.exit_code == EXIT_USAGE


def test_train_config_round_trips_through_json():
    config = TrainConfig(train_file=Path("a.csv"), validation_file=Path("b.csv"), lr=1e-4, argv=("bertclf", "train"))
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_learning_rate_auto_and_numbers():
    assert parse_learning_rate("auto") is None
    assert parse_learning_rate("5e-5") == 5e-5
    with pytest.raises(UsageError, match="--lr"):
        parse_learning_rate("fast")


def test_batch_size_auto_keeps_enough_updates_on_small_files():
    assert parse_batch_size("auto") is None and parse_batch_size(" 16 ") == 16
    with pytest.raises(UsageError, match="--batch-size"):
        parse_batch_size("big")
    # A pretrained model, 3 epochs, 2 labels (1,500 updates): batch 32 from 16,000 rows, 16 from 8,000, else 8
    assert auto_batch_size(16_000, 3, labels=2) == 32 and auto_batch_size(15_999, 3, labels=2) == 16
    assert auto_batch_size(8_000, 3, labels=2) == 16 and auto_batch_size(7_999, 3, labels=2) == 8
    assert auto_batch_size(6_000, 3, labels=2) == 8 and auto_batch_size(50, 3, labels=2) == 8  # however few
    assert auto_batch_size(16_000, 6, labels=2) == 32 and auto_batch_size(32_000, 3, labels=2, processes=2) == 32
    assert auto_batch_size(16_000, 3, labels=2, processes=2) == 16
    assert auto_batch_size(64_000, 3, labels=2, grad_accum=4) == 32  # updates, not rows
    assert auto_batch_size(32_000, 3, labels=2, grad_accum=4) == 16
    # A from-scratch model (rate 1e-3) needs 300: batch 32 from 3,200 rows, 16 from 1,600, else 8
    scratch = {"labels": 2, "from_scratch": True}
    assert auto_batch_size(3_200, 3, **scratch) == 32 and auto_batch_size(3_199, 3, **scratch) == 16
    assert auto_batch_size(1_600, 3, **scratch) == 16 and auto_batch_size(900, 3, **scratch) == 8
    assert auto_batch_size(6_000, 3, **scratch) == 32  # zh_reviews from scratch
    # 14 labels need 1,400 updates either way: en_wordnet_verbs' 9,214 training rows get batch 16 (1,728 updates)
    assert auto_batch_size(9_214, 3, labels=14) == 16
    assert auto_batch_size(14_934, 3, labels=14, from_scratch=True) == 32
    assert auto_batch_size(10_000, 3, labels=10) == 16
    assert auto_batch_size(10_000, 3, labels=10, from_scratch=True) == 16
    assert auto_batch_size(100, 3, labels=14, max_steps=50) == 32  # --max-steps fixes the number of updates


def test_gates_parse_and_reject_unknown_metrics():
    assert parse_gates(["accuracy=0.9", "macro_f1=0.85"], ("accuracy", "macro_f1")) == {"accuracy": 0.9,
                                                                                        "macro_f1": 0.85}
    with pytest.raises(UsageError, match="--fail-under"):
        parse_gates(["f1=0.9"], ("accuracy",))
    with pytest.raises(UsageError, match="not a number"):
        parse_gates(["accuracy=high"], ("accuracy",))


def test_eval_config_checks_batch_size():
    with pytest.raises(UsageError, match="--batch-size"):
        EvalConfig(run_dir=Path("r"), data_file=Path("d.csv"), batch_size=0)
