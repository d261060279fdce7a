"""Every default and every check on user settings, in frozen dataclasses that round-trip through JSON."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertclf.errors import UsageError
from bertclf.pooling import POOLINGS

# Column names tried, in order, when --text-column / --label-column are not given.
TEXT_COLUMN_CANDIDATES = ("text", "sentence", "content", "review")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "target", "category")

TRUNCATION_STRATEGIES = ("head", "tail", "head+tail")
BACKENDS = ("torch", "onnx")  # onnx: the run's onnx/model.onnx (bertclf export) on onnxruntime
LONG_TEXT_MODES = ("truncate", "chunks")  # chunks: overlapping windows, probabilities averaged per text
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")
MIXED_PRECISION_MODES = ("auto", "no", "fp16", "bf16")
PRECISIONS = ("auto", "fp32", "bf16")  # --precision of predict, eval and serve (bertclf.precision)
COMPILE_MODES = ("auto", "yes", "no")  # --compile (bertclf.compiling); auto: only where it was measured to pay
# Single-number metrics of metrics.classification_metrics: --fail-under gates take any of them.
SCALAR_METRICS = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall",
                  "weighted_precision", "weighted_recall", "micro_precision", "micro_recall", "mcc", "roc_auc")
MULTI_LABEL_SCALAR_METRICS = ("subset_accuracy", "hamming_loss", "micro_f1", "macro_f1", "weighted_f1",
                              "samples_f1", "micro_precision", "micro_recall", "macro_precision", "macro_recall",
                              "roc_auc")
# Calibration of single-label probabilities (metrics.calibration_metrics): lower is better.
CALIBRATION_METRICS = ("ece", "brier", "nll")
LOWER_IS_BETTER = ("loss", "hamming_loss", *CALIBRATION_METRICS)
# --metric picks the best model; roc_auc is left out because it is undefined when a class is missing.
METRICS_FOR_SELECTION = (*[m for m in SCALAR_METRICS if m != "roc_auc"], "loss")
MULTI_LABEL_METRICS_FOR_SELECTION = (*[m for m in MULTI_LABEL_SCALAR_METRICS if m != "roc_auc"], "loss")
# --fail-under METRIC=VALUE fails when METRIC is below VALUE, so only higher-is-better metrics qualify.
GATE_METRICS = tuple(dict.fromkeys(m for m in (*SCALAR_METRICS, *MULTI_LABEL_SCALAR_METRICS)
                                   if m not in LOWER_IS_BETTER))
# --fail-under METRIC.lower=VALUE gates a bound of the metric's bootstrap interval instead of its point.
GATE_BOUNDS = ("lower", "upper")
# Every scalar metric a run of each task reports (eval's intervals, compare's differences).
REPORTED_METRICS = {"single_label": (*SCALAR_METRICS, *CALIBRATION_METRICS, "loss"),
                    "multi_label": (*MULTI_LABEL_SCALAR_METRICS, "loss")}
COMPARE_METRICS = tuple(dict.fromkeys((*REPORTED_METRICS["single_label"], *REPORTED_METRICS["multi_label"])))
MAX_BOOTSTRAP = 1_000_000


def _check(condition: bool, flag: str, value: Any, requirement: str) -> None:
    if not condition:
        raise UsageError(f"Invalid value for {flag}: {value!r}. {requirement}")


def check_loop_settings(config) -> None:
    """The checks of the options train and pretrain share (the training loop's settings)."""
    _check(math.isfinite(config.epochs) and 0 < config.epochs <= 10_000, "--epochs", config.epochs,
           "Give a positive, finite number of epochs (fractions allowed).")
    # numpy's and torch's seeds are unsigned 32-bit: a seed outside that range fails deep in set_seed.
    _check(0 <= config.seed <= 2**32 - 1, "--seed", config.seed, "Give a seed from 0 to 4294967295.")
    _check(config.max_steps is None or config.max_steps > 0, "--max-steps", config.max_steps,
           "Give a positive number of steps.")
    _check(config.batch_size is None or config.batch_size > 0, "--batch-size", config.batch_size,
           "Give a positive batch size, or 'auto'.")
    _check(config.lr is None or 0.0 < config.lr < 1.0, "--lr", config.lr, "Give a rate such as 5e-5, or 'auto'.")
    _check(math.isfinite(config.weight_decay) and config.weight_decay >= 0.0, "--weight-decay", config.weight_decay,
           "Give 0 or more.")
    _check(0.0 <= config.warmup_ratio < 1.0, "--warmup-ratio", config.warmup_ratio, "Give 0 to 1.")
    _check(config.grad_accum >= 1, "--grad-accum", config.grad_accum, "Give 1 or more.")
    _check(math.isfinite(config.max_grad_norm) and config.max_grad_norm > 0.0, "--max-grad-norm",
           config.max_grad_norm, "Give a positive norm.")
    _check(config.eval_every is None or config.eval_every > 0, "--eval-every", config.eval_every,
           "Give a positive number of steps.")
    _check(config.mixed_precision in MIXED_PRECISION_MODES, "--mixed-precision", config.mixed_precision,
           f"Choose one of: {', '.join(MIXED_PRECISION_MODES)}.")
    _check(config.log_every > 0, "--log-every", config.log_every, "Give a positive number of steps.")
    _check(config.save_every is None or config.save_every > 0, "--save-every", config.save_every,
           "Give a positive number of steps.")
    _check(config.keep >= 1, "--keep", config.keep, "Keep at least 1 checkpoint.")
    _check(not (config.resume and config.overwrite), "--resume", config.resume,
           "--resume continues the run in --output; it cannot be combined with --overwrite.")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one `bertclf train` run. Field names match the CLI flags (`max_length` is `--max-length`)."""

    train_file: Path
    validation_file: Path | None = None
    validation_split: float = 0.1  # used only without --validation; stratified and seeded
    text_column: str | None = None  # None: first of TEXT_COLUMN_CANDIDATES found
    label_column: str | None = None
    text_pair_column: str | None = None  # a second text per row: encoded as a BERT pair [CLS] a [SEP] b [SEP]
    multi_label: bool = False  # each row holds a set of labels: sigmoid outputs, binary cross-entropy
    label_separator: str = ","  # between labels of a multi-label cell (a JSON list is read as such)
    model: str = "auto"  # auto: bert-base-chinese for mostly-Chinese data, else bert-base-uncased
    revision: str | None = None  # a Hub (or ModelScope) model's branch, tag or commit; None: the default branch
    output: Path | None = None  # None: runs/<data file stem>-<timestamp>
    overwrite: bool = False
    # In tokens, [CLS] and [SEP] included. None ("auto"): the shortest of 128/256/512 that holds 95% of the
    # training texts whole (encoding.auto_max_length).
    max_length: int | None = None
    # head+tail keeps the start and the end of a long text: on zh_reviews (18% of texts over 128 tokens) a
    # scratch model scored test accuracy 0.830 with it against 0.810 keeping the head only.
    truncation: str = "head+tail"
    long_text: str = "truncate"  # or chunks: overlapping windows of max_length, probabilities averaged per text
    stride: int | None = None  # tokens shared by consecutive windows; None: a quarter of max_length
    # What the classifier reads: cls (BERT's head), mean (all tokens' vectors), auto (mean for a model
    # pre-trained from scratch by `bertclf pretrain`, whose [CLS] learnt nothing; bertclf.pooling).
    pooling: str = "auto"
    bigram_buckets: int | None = None  # a scratch model's bigram table rows; None ("auto"): bigrams.auto_bigram_buckets
    epochs: float = 3.0
    max_steps: int | None = None  # optimizer steps; overrides --epochs when given
    batch_size: int | None = None  # None ("auto"): 32, smaller for small files, see auto_batch_size
    lr: float | None = None  # None ("auto"): picked from the model size, see model.auto_learning_rate
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    eval_every: int | None = None  # optimizer steps; None: once per epoch
    early_stopping: int | None = None  # patience, in evaluations without improvement
    metric: str = "macro_f1"  # selects the best checkpoint and drives early stopping
    seed: int = 42
    mixed_precision: str = "auto"
    cpu: bool = False
    encoding: str | None = None  # None: utf-8 (BOM or not), then gb18030
    data_format: str | None = None  # None: from the file extension
    drop_empty: bool = False  # leave out rows with an empty text (with a warning) instead of failing
    log_every: int = 50  # optimizer steps between train_log.jsonl lines
    save_every: int | None = None  # optimizer steps between checkpoints; None: no periodic checkpoints
    keep: int = 2  # checkpoints kept; older ones are deleted only after a newer one is complete
    resume: str | None = None  # "latest" (newest valid checkpoint in --output) or a checkpoint path
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    report_to: str = "none"  # an accelerate tracker: tensorboard, wandb, mlflow
    class_weights: str | None = None  # "balanced" or "LABEL=WEIGHT,...": weighted cross-entropy
    calibration: bool = True  # single-label: fit a temperature on validation, fold it into the classifier
    compile: str = "auto"  # torch.compile the training forward/backward: auto, yes, no (bertclf.compiling)
    argv: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _check(0.0 < self.validation_split < 1.0, "--validation-split", self.validation_split,
               "Give a fraction between 0 and 1, for example 0.1.")
        _check(self.max_length is None or 8 <= self.max_length <= 8192, "--max-length", self.max_length,
               "Give 8 to 8192 tokens, or auto.")
        _check(self.truncation in TRUNCATION_STRATEGIES, "--truncation", self.truncation,
               f"Choose one of: {', '.join(TRUNCATION_STRATEGIES)}.")
        _check(self.long_text in LONG_TEXT_MODES, "--long-text", self.long_text,
               f"Choose one of: {', '.join(LONG_TEXT_MODES)}.")
        _check(self.pooling in POOLINGS, "--pooling", self.pooling, f"Choose one of: {', '.join(POOLINGS)}.")
        check_bigram_buckets(self.bigram_buckets)
        most = (self.max_length or 8192) // 2
        _check(self.stride is None or 0 <= self.stride <= most, "--stride", self.stride,
               f"Give 0 to {most} tokens (at most half of --max-length).")
        _check(bool(self.label_separator.strip()), "--label-separator", self.label_separator,
               "Give a non-blank separator such as ',' or '|'.")
        check_loop_settings(self)
        _check(self.early_stopping is None or self.early_stopping > 0, "--early-stopping",
               self.early_stopping, "Give a patience of 1 or more evaluations.")
        selectable = MULTI_LABEL_METRICS_FOR_SELECTION if self.multi_label else METRICS_FOR_SELECTION
        _check(self.metric in selectable, "--metric", self.metric,
               f"Choose one of{' (multi-label)' if self.multi_label else ''}: {', '.join(selectable)}.")
        _check(self.report_to in REPORT_TO, "--report-to", self.report_to, f"Choose one of: {', '.join(REPORT_TO)}.")
        check_compile(self.compile)

    @property
    def greater_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    def stride_for(self, max_length: int) -> int:
        """--stride, or a quarter of the (resolved) max length; never more than half of it."""
        return min(self.stride if self.stride is not None else max_length // 4, max_length // 2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("train_file", "validation_file", "output"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        values["argv"] = tuple(values.get("argv", ()))
        return cls(**values)


# --batch-size auto: batch 32 unless the run would then make too few optimizer updates: fewer than MIN_SCRATCH_UPDATES
# (a from-scratch model; a pretrained one: MIN_PRETRAINED_UPDATES), or than UPDATES_PER_LABEL for each label. Early
# in fine-tuning the number of updates matters more than their size: on a 1,000-row English file (MiniLM, 3 epochs,
# lr 1e-4) batch 32 made 85 updates and reached test accuracy 0.430, batch 16 0.489 and batch 8 0.501, and
# run_classification's Trainer (batch 8, 375 updates) 0.470.
# With many labels the rare ones need more updates still, on whole files too (test accuracy / macro-F1):
# en_wordnet_verbs (14 labels, 9,214 rows) 0.636 at batch 32 (864 updates), 0.659 at 16, 0.648 at 8, the Trainer
# 0.655; zh_shopping_cats (10 labels, scratch:tiny, seeds 42; 7) 0.870 / 0.784; 0.867 / 0.805 at batch 32, 0.875 /
# 0.856; 0.874 / 0.865 at 16. On binary zh_reviews batch 16 cost 0.7 points (0.848; 0.848 -> 0.840; 0.842), so the
# bar grows with the labels rather than for every file.
# A pretrained model fine-tuned at its small rate needs more updates than a from-scratch one at 1e-3: on the whole
# zh_reviews file (MiniLM, 6,000 rows, lr 5e-5, fp32, 2 threads) dev accuracy first reached the Trainer's one-epoch
# 0.637 after 209 s of training at batch 32 (562 updates in 3 epochs), 180 s at 16 (1,125) and 110 s at 8 (2,250),
# the examples per second within 10% of each other (length-grouped batches). en_wordnet_verbs above keeps batch 16
# (1,728 updates), so the bar for pretrained models sits between: MIN_PRETRAINED_UPDATES.
AUTO_BATCH_SIZES = (32, 16, 8)
MIN_SCRATCH_UPDATES = 300
MIN_PRETRAINED_UPDATES = 1_500
UPDATES_PER_LABEL = 100


def auto_batch_size(train_rows: int, epochs: float, *, labels: int, max_steps: int | None = None,
                    processes: int = 1, grad_accum: int = 1, from_scratch: bool = False) -> int:
    """Examples per batch and process for --batch-size auto: the largest of AUTO_BATCH_SIZES that still gives
    MIN_PRETRAINED_UPDATES (a from-scratch model: MIN_SCRATCH_UPDATES), and UPDATES_PER_LABEL per label, optimizer
    updates over the run (the smallest when none does). With --max-steps the number of updates is fixed, so the
    batch stays the largest."""
    if max_steps is not None:
        return AUTO_BATCH_SIZES[0]
    needed = max(MIN_SCRATCH_UPDATES if from_scratch else MIN_PRETRAINED_UPDATES, UPDATES_PER_LABEL * labels)
    for size in AUTO_BATCH_SIZES:
        if train_rows * epochs / (size * processes * grad_accum) >= needed:
            return size
    return AUTO_BATCH_SIZES[-1]


def _parse_auto(value: str, flag: str, convert, example: str):
    """`FLAG auto` (None) or a number; the CLI passes the text here so the message names the flag."""
    if value.strip().lower() == "auto":
        return None
    try:
        return convert(value)
    except ValueError:
        raise UsageError(f"Invalid value for {flag}: {value!r}. Give {example}, or 'auto'.") from None


MAX_BIGRAM_BUCKETS = 10_000_000  # 1.28G numbers at scratch:tiny's width: more is a typo, not a table


def check_bigram_buckets(value: int | None) -> None:
    _check(value is None or 0 <= value <= MAX_BIGRAM_BUCKETS, "--bigram-buckets", value,
           f"Give 0 (no bigram table) to {MAX_BIGRAM_BUCKETS:,} rows, or auto.")


def parse_bigram_buckets(value: str) -> int | None:
    return _parse_auto(value, "--bigram-buckets", int, "a number of rows such as 200000 (0: no table)")


def parse_batch_size(value: str) -> int | None:
    return _parse_auto(value, "--batch-size", int, "a whole number such as 32")


def parse_max_length(value: str) -> int | None:
    return _parse_auto(value, "--max-length", int, "a number of tokens such as 256")


def parse_learning_rate(value: str) -> float | None:
    return _parse_auto(value, "--lr", float, "a rate such as 5e-5")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one `bertclf eval` run; None means "as the run was trained"."""

    run_dir: Path
    data_file: Path
    text_column: str | None = None
    label_column: str | None = None
    text_pair_column: str | None = None
    batch_size: int = 64
    max_length: int | None = None
    truncation: str | None = None
    encoding: str | None = None
    data_format: str | None = None
    drop_empty: bool = False
    cpu: bool = False
    ignore_unknown_labels: bool = False
    report_dir: Path | None = None
    quantize: str | None = None  # "int8": dynamic int8 Linear layers on the CPU
    threshold: str | None = None  # multi-label: override the tuned thresholds (0.4, or LABEL=VALUE,...)
    backend: str = "torch"  # or "onnx": the run's onnx/model.onnx (bertclf export) on onnxruntime
    precision: str = "auto"  # auto, fp32, bf16 (bertclf.precision)
    gates: dict[str, float] = field(default_factory=dict)  # --fail-under METRIC=VALUE or METRIC.lower=VALUE
    confidence: float = 0.95  # of the bootstrap intervals
    bootstrap: int = 1000  # resamples; 0: no intervals
    seed: int = 0  # of the resampling: the same seed gives the same intervals
    junit: Path | None = None  # JUnit XML report: one testcase per gate
    markdown: Path | None = None  # Markdown summary (for $GITHUB_STEP_SUMMARY)
    label_issues: bool = False  # rank likely label errors (cleanlab); label_issues.csv with report_dir

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "--batch-size", self.batch_size, "Give a positive batch size.")
        _check(self.max_length is None or 8 <= self.max_length <= 8192, "--max-length", self.max_length,
               "Give 8 to 8192 tokens.")
        _check(self.truncation is None or self.truncation in TRUNCATION_STRATEGIES, "--truncation",
               self.truncation, f"Choose one of: {', '.join(TRUNCATION_STRATEGIES)}.")
        check_bootstrap(self.confidence, self.bootstrap, self.seed)
        check_backend(self.backend)
        check_precision(self.precision, backend=self.backend, quantize=self.quantize)
        bounded = [name for name in self.gates if "." in name]
        if bounded and self.bootstrap == 0:
            raise UsageError(f"Invalid value for --fail-under: {bounded[0]} gates a bound of the bootstrap "
                             "interval, and --bootstrap 0 computes none.",
                             hint="Drop --bootstrap 0, or gate the point value (for example macro_f1=0.85).")


def _check_torch_mode(flag: str, value: str, modes: tuple[str, ...], torch_only: str, *, backend: str,
                      quantize: str | None, what: str) -> None:
    """A mode flag (--compile, --precision) whose `torch_only` value needs the full-precision torch model."""
    _check(value in modes, flag, value, f"Choose one of: {', '.join(modes)}.")
    if value == torch_only and (backend != "torch" or quantize):
        raise UsageError(f"Invalid value for {flag}: {torch_only!r}. {what} applies to the torch model, not to "
                         "--backend onnx or --quantize int8.",
                         hint=f"Drop {flag} {torch_only}, or --backend onnx / --quantize.")


def check_compile(mode: str, *, backend: str = "torch", quantize: str | None = None) -> None:
    """--compile of train and predict (predict's with its --backend and --quantize)."""
    _check_torch_mode("--compile", mode, COMPILE_MODES, "yes", backend=backend, quantize=quantize,
                      what="torch.compile")


def check_precision(precision: str, *, backend: str = "torch", quantize: str | None = None) -> None:
    """--precision of predict, eval and serve (bertclf.precision)."""
    _check_torch_mode("--precision", precision, PRECISIONS, "bf16", backend=backend, quantize=quantize, what="bf16")


def check_backend(backend: str) -> None:
    """--backend of predict, eval and serve."""
    _check(backend in BACKENDS, "--backend", backend, f"Choose one of: {', '.join(BACKENDS)}.")


def check_bootstrap(confidence: float, bootstrap: int, seed: int) -> None:
    """--confidence, --bootstrap and --seed of eval and compare."""
    _check(math.isfinite(confidence) and 0.0 < confidence < 1.0, "--confidence", confidence,
           "Give a level between 0 and 1, for example 0.95.")
    _check(0 <= bootstrap <= MAX_BOOTSTRAP, "--bootstrap", bootstrap,
           f"Give a number of resamples from 1 to {MAX_BOOTSTRAP:,} (1,000 is the default), or 0 for no intervals.")
    _check(0 <= seed <= 2**32 - 1, "--seed", seed, "Give a seed from 0 to 4294967295.")


@dataclass(frozen=True)
class CompareConfig:
    """Settings of one `bertclf compare` run: two run directories scored on the same labelled rows."""

    baseline_dir: Path
    candidate_dir: Path
    data_file: Path
    text_column: str | None = None  # None: the baseline run's
    label_column: str | None = None
    text_pair_column: str | None = None
    batch_size: int = 64
    encoding: str | None = None
    data_format: str | None = None
    drop_empty: bool = False
    cpu: bool = False
    ignore_unknown_labels: bool = False
    report_dir: Path | None = None  # disagreements.csv and comparison.json
    confidence: float = 0.95
    bootstrap: int = 1000
    seed: int = 0
    non_inferiority: dict[str, float] = field(default_factory=dict)  # METRIC=MARGIN
    superiority: tuple[str, ...] = ()
    junit: Path | None = None
    markdown: Path | None = None

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "--batch-size", self.batch_size, "Give a positive batch size.")
        check_bootstrap(self.confidence, self.bootstrap, self.seed)
        for name, margin in self.non_inferiority.items():
            _check(margin >= 0, "--non-inferiority", f"{name}={margin}",
                   "Give the margin the candidate may lose as a number of 0 or more, for example macro_f1=0.01.")
        unknown = [name for name in self.superiority if name not in COMPARE_METRICS]
        _check(not unknown, "--superiority", unknown[0] if unknown else None,
               f"Choose one of: {', '.join(COMPARE_METRICS)}.")
        if (self.non_inferiority or self.superiority) and self.bootstrap == 0:
            raise UsageError("--non-inferiority and --superiority judge the bootstrap interval of the difference, "
                             "and --bootstrap 0 computes none.", hint="Drop --bootstrap 0.")


@dataclass(frozen=True)
class PredictConfig:
    """Settings of one `bertclf predict` run; None means "as the run was trained" (or the default named)."""

    run_dir: Path
    input: str | None = None  # a file, or "-" for stdin; exclusive with texts
    texts: tuple[str, ...] = ()  # --text, repeatable
    text_pairs: tuple[str, ...] = ()  # --text-pair, one per --text for pair models
    output: Path | None = None  # None: stdout
    output_format: str | None = None  # jsonl, csv, tsv; None: from the output extension, else jsonl
    input_format: str | None = None
    text_column: str | None = None
    text_pair_column: str | None = None
    threshold: str | None = None  # multi-label: override the tuned thresholds
    top_k: int = 1
    all_probs: bool = False
    keep_columns: bool = False
    batch_size: int = 64
    encoding: str | None = None
    cpu: bool = False
    quantize: str | None = None
    backend: str = "torch"  # or "onnx": the run's onnx/model.onnx (bertclf export) on onnxruntime
    compile: str = "auto"  # torch.compile the inference forward: auto, yes, no (bertclf.compiling)
    precision: str = "auto"  # auto, fp32, bf16 (bertclf.precision)

    def __post_init__(self) -> None:
        check_backend(self.backend)
        check_compile(self.compile, backend=self.backend, quantize=self.quantize)
        check_precision(self.precision, backend=self.backend, quantize=self.quantize)
        if (self.input is None) == (not self.texts):
            raise UsageError("Give either an INPUT file (or - for stdin) or --text, not both and not neither.")
        _check(self.top_k >= 1, "--top-k", self.top_k, "Give 1 or more.")
        _check(self.batch_size >= 1, "--batch-size", self.batch_size, "Give 1 or more.")


def parse_name_values(items: list[str], allowed: list[str] | tuple[str, ...], flag: str,
                      example: str, names_hint: str | None = None) -> dict[str, float]:
    """NAME=NUMBER items (--fail-under macro_f1=0.85, --class-weights pos=2) into {name: number}, with
    errors that name the flag, the item and the names allowed."""
    parsed: dict[str, float] = {}
    for item in items:
        name, sep, number = item.rpartition("=")
        name = name.strip()
        if not sep or name not in allowed:
            raise UsageError(f"Invalid value for {flag}: {item.strip()!r}.",
                             hint=f"Write {example}, with names from: {names_hint or ', '.join(allowed)}.")
        try:
            parsed[name] = float(number)
        except ValueError:
            raise UsageError(f"Invalid value for {flag}: {item.strip()!r}; {number!r} is not a number.") from None
        if not math.isfinite(parsed[name]):  # a NaN threshold would make every comparison pass
            raise UsageError(f"Invalid value for {flag}: {item.strip()!r}; give a finite number.")
    return parsed


def parse_gates(values: list[str], allowed: tuple[str, ...] = GATE_METRICS) -> dict[str, float]:
    """--fail-under METRIC=VALUE or METRIC.lower=VALUE (the interval's lower bound; .upper too), repeatable,
    into {"metric" or "metric.bound": threshold}."""
    names = (*allowed, *(f"{metric}.{bound}" for metric in allowed for bound in GATE_BOUNDS))
    return parse_name_values(values, names, "--fail-under", "METRIC=VALUE, for example macro_f1=0.85 or "
                             "macro_f1.lower=0.85", names_hint=", ".join(allowed) + " (each may end in .lower "
                             "or .upper: a bound of its bootstrap interval)")


def parse_margins(values: list[str]) -> dict[str, float]:
    """--non-inferiority METRIC=MARGIN, repeatable, into {metric: margin}."""
    return parse_name_values(values, COMPARE_METRICS, "--non-inferiority", "METRIC=MARGIN, for example "
                             "macro_f1=0.01")


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of one `bertclf pretrain` run: masked-language-model training on unlabelled text. Options shared
    with `train` keep train's names and checks; the loop (bertclf.train_loop) reads the same fields."""

    corpus_files: tuple[Path, ...]
    text_column: str | None = None  # CSV/TSV/JSON(L)/Parquet corpora; None: first of TEXT_COLUMN_CANDIDATES
    model: str = "scratch"  # scratch[:SIZE] (vocabulary built from the corpus), a local directory or a Hub id
    revision: str | None = None
    output: Path | None = None  # None: runs/pretrain-<first corpus file stem>-<time>
    overwrite: bool = False
    max_length: int = 128  # tokens per packed sequence, [CLS] and [SEP] included
    mlm_probability: float = 0.15  # share of tokens (or, with whole_word_mask, of words) predicted
    whole_word_mask: bool = False  # mask whole words (jieba words for Chinese; WordPiece words otherwise)
    bigram_buckets: int | None = None  # a scratch model's bigram table rows; None ("auto"): bigrams.auto_bigram_buckets
    validation_split: float = 0.02  # share of the corpus texts held out for the masked-LM loss and perplexity
    max_validation_texts: int = 2000
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 32
    lr: float | None = None  # None: 5e-4 from scratch, 5e-5 continuing a pretrained model (see pretrain.auto_lr)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    eval_every: int | None = None  # None: about 10 evaluations in all
    seed: int = 42
    mixed_precision: str = "auto"
    cpu: bool = False
    encoding: str | None = None
    data_format: str | None = None
    log_every: int = 50
    save_every: int | None = None
    keep: int = 2
    resume: str | None = None
    argv: tuple[str, ...] = field(default=(), compare=False)
    # Fixed for pretraining; the training loop reads them as it reads a TrainConfig's.
    metric: str = field(default="loss", init=False)
    multi_label: bool = field(default=False, init=False)
    early_stopping: int | None = field(default=None, init=False)
    report_to: str = field(default="none", init=False)

    def __post_init__(self) -> None:
        _check(len(self.corpus_files) > 0, "CORPUS", self.corpus_files, "Give at least one corpus file.")
        _check(16 <= self.max_length <= 8192, "--max-length", self.max_length, "Give 16 to 8192 tokens.")
        check_bigram_buckets(self.bigram_buckets)
        _check(0.0 < self.mlm_probability < 1.0, "--mlm-probability", self.mlm_probability,
               "Give a share between 0 and 1, for example 0.15.")
        _check(0.0 < self.validation_split < 1.0, "--validation-split", self.validation_split,
               "Give a fraction between 0 and 1, for example 0.02.")
        _check(self.max_validation_texts >= 1, "--max-validation-texts", self.max_validation_texts, "Give 1 or more.")
        check_loop_settings(self)

    @property
    def greater_is_better(self) -> bool:
        return False  # the held-out masked-LM loss picks the best model

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else [str(p) for p in v] if k == "corpus_files"
                    else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}
