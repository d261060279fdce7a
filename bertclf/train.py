"""`bertclf train`: from data files to a self-describing run directory, in four phases.

`train()` reads top to bottom: prepare the data (read, validate, split: before any model loads), build
the model and loaders, run the loop (`bertclf.train_loop`), finish the run (thresholds, manifest, model
card). Checkpoints are written by `bertclf.checkpoint`, the manifest is assembled by `bertclf.runinfo`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from bertclf import checkpoint, compiling, console, runinfo
from bertclf.config import TrainConfig
from bertclf.data import (
    LabelledData,
    check_label_set,
    data_warnings,
    read_labelled,
    stratified_split,
    unknown_labels,
)
from bertclf.encoding import (
    EncodedDataset,
    EncodingSpec,
    LengthGroupedSampler,
    auto_max_length,
    encode_cached,
    padding_collator,
)
from bertclf.errors import DataError, InputMissingError, UsageError
from bertclf.labels import LabelSpace, rarest_label_keys, tune_thresholds
from bertclf.metrics import scalar_metrics
from bertclf.run_lock import RunDirectory
from bertclf.runinfo import MANIFEST, model_card, write_json_atomic
from bertclf.train_loop import (
    TrainingLoop,
    TrainingRun,
    TrainLog,
    find_resume_checkpoint,
    start_position,
)


@dataclass
class TrainResult:
    output_dir: Path
    best_step: int
    best_metric: float
    metric: str
    validation_metrics: dict[str, Any]
    steps: int
    epochs: float
    train_seconds: float
    samples_per_second: float
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)
    is_main_process: bool = True  # in a distributed run, only the main process reports
    compile_seconds: float | None = None  # --compile: torch.compile's time, not counted in train_seconds

    def summary(self) -> dict[str, Any]:
        """The `--json` document."""
        return {
            "run_dir": str(self.output_dir),
            "best_step": self.best_step,
            "metric": self.metric,
            "best_metric": self.best_metric,
            "validation_metrics": self.validation_metrics,
            "steps": self.steps,
            "epochs": round(self.epochs, 4),
            "learning_rate": self.manifest.get("learning_rate"),
            "mixed_precision": self.manifest.get("mixed_precision"),
            "world_size": self.manifest.get("world_size"),
            "timings": {"train_seconds": round(self.train_seconds, 2),
                        "samples_per_second": round(self.samples_per_second, 2),
                        "compile_seconds": None if self.compile_seconds is None else round(self.compile_seconds, 2)},
            "compile": self.manifest.get("compile"),
        }


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune a BERT classifier as configured and write the run directory. Returns its summary."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    data = prepare_data(config)
    output = config.output or default_output_dir(config.train_file)
    accelerator, mixed_precision = make_accelerator(config, output)
    compiling.resolve_compile(config.compile, accelerator.device.type)  # --compile yes: fail before any model loads
    config, batch_size_source = resolve_batch_size(config, data, accelerator.num_processes)
    run_dir = RunDirectory(output, overwrite=config.overwrite, resume=bool(config.resume))
    if accelerator.is_main_process:
        run_dir.claim()  # locked until train() returns; undone if the run fails before keeping anything
    failed = True
    try:
        accelerator.wait_for_everyone()
        from accelerate.utils import set_seed

        set_seed(config.seed)
        if accelerator.is_main_process:
            for warning in data.warnings:
                console.warn(warning)
        fingerprint = checkpoint.fingerprint(config.to_dict(), data.hashes(), data.labels)
        resumed = find_resume_checkpoint(config, output, fingerprint) if config.resume else None
        run, manifest = build_run(config, data, run_dir, accelerator, mixed_precision, batch_size_source)
        loop = start_loop(run, manifest, fingerprint, resumed)
        try:
            loop.run_all()
        finally:
            if loop.checkpoints_written:  # resumable: an interrupted or failed run keeps its checkpoints
                run_dir.keep()
        run_dir.keep()  # the loop finished: its best model is worth keeping
        result = finish_run(run, loop, manifest, data, started)
        failed = False
        return result
    finally:
        run_dir.close(failed)


# -- Phase 1: the data ------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The rows a run trains and validates on, read and checked before any model loads."""

    train: LabelledData
    validation: LabelledData | None  # None: validation rows are split from the training file
    labels: list[str]
    space: LabelSpace
    train_texts: list[str]
    train_pairs: list[str] | None
    train_targets: Any  # numpy: label ids, or a 0/1 matrix for multi-label
    val_texts: list[str]
    val_pairs: list[str] | None
    val_targets: Any
    warnings: list[str]
    loss_weights: list[float] | None  # from --class-weights, checked against the labels here


    def hashes(self) -> dict[str, str]:
        """sha256 of the training file and of the validation file, if one was given."""
        files = {"train": self.train, "validation": self.validation}
        return {split: data.table.sha256 for split, data in files.items() if data is not None}


def prepare_data(config: TrainConfig) -> TrainingData:
    train_data, train_idx, val_data, val_idx, labels = _load_splits(config)
    space = LabelSpace(tuple(labels), multi_label=config.multi_label)
    val_source = val_data if val_data is not None else train_data
    train_texts = [train_data.texts[i] for i in train_idx]
    val_texts = [val_source.texts[i] for i in val_idx]
    train_labels = [train_data.labels[i] for i in train_idx]
    train_targets = space.targets(train_labels)
    return TrainingData(
        train=train_data, validation=val_data, labels=labels, space=space,
        train_texts=train_texts, train_pairs=train_data.pairs_at(train_idx), train_targets=train_targets,
        val_texts=val_texts, val_pairs=val_source.pairs_at(val_idx),
        val_targets=space.targets([val_source.labels[i] for i in val_idx]),
        warnings=data_warnings(config.train_file, train_texts, train_labels, val_texts),
        loss_weights=space.loss_weights(config.class_weights, train_targets) if config.class_weights else None,
    )


def _load_splits(config: TrainConfig) -> tuple[LabelledData, list[int], LabelledData | None, list[int], list[str]]:
    """Read and validate all data before any model loads. Returns the train data with the row indices used
    for training, the validation data (None when split from train) with its indices, and the label list."""
    label_options = {"multi_label": config.multi_label, "label_separator": config.label_separator}
    train_data = read_labelled(config.train_file, text_column=config.text_column,
                               label_column=config.label_column, text_pair_column=config.text_pair_column,
                               encoding=config.encoding, fmt=config.data_format, drop_empty=config.drop_empty,
                               **label_options)
    labels = check_label_set(train_data)
    if config.validation_file is None:
        keys = rarest_label_keys(train_data.labels) if config.multi_label else train_data.labels
        train_idx, val_idx = stratified_split(keys, config.validation_split, config.seed)
        return train_data, train_idx, None, val_idx, labels
    val_data = read_labelled(config.validation_file, text_column=config.text_column or train_data.text_column,
                             label_column=config.label_column or train_data.label_column,
                             text_pair_column=config.text_pair_column, encoding=config.encoding,
                             drop_empty=config.drop_empty, **label_options)
    unseen = unknown_labels(val_data, labels)
    if unseen:
        listed = ", ".join(f"{label!r} ({count})" for label, count in unseen.most_common())
        raise DataError(f"{config.validation_file}: labels not present in the training data: {listed}.",
                        hint="Add training examples for them, or remove those rows from the validation file.")
    return train_data, list(range(len(train_data.texts))), val_data, list(range(len(val_data.texts))), labels


# -- The output directory and the accelerator --------------------------------------------------------------


def resolve_batch_size(config: TrainConfig, data: TrainingData, processes: int) -> tuple[TrainConfig, str]:
    """--batch-size auto becomes a number before anything depends on it (the fingerprint a resume checks, the
    loader, the manifest); returns the config and where its batch size came from."""
    from bertclf.config import auto_batch_size

    if config.batch_size is not None:
        return config, "--batch-size"
    size = auto_batch_size(len(data.train_texts), config.epochs, labels=len(data.labels), max_steps=config.max_steps,
                           processes=processes, grad_accum=config.grad_accum, from_scratch=from_scratch(config.model))
    return dataclasses.replace(config, batch_size=size), "auto"


def from_scratch(model_name: str) -> bool:
    """Does --model name a from-scratch model (scratch[:SIZE], or a `bertclf pretrain --model scratch` directory)?
    Read from the name and the directory alone: the batch size is settled before any model is resolved."""
    from bertclf.model import pretrained_from_scratch
    from bertclf.scratch import parse_scratch_name

    if parse_scratch_name(model_name) is not None:
        return True
    local = Path(model_name).expanduser()
    return local.is_dir() and pretrained_from_scratch(local)


def default_output_dir(train_file: Path) -> Path:
    return Path("runs") / f"{train_file.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def resolve_mixed_precision(requested: str, use_cpu: bool, *, cuda: bool | None = None,
                            cuda_bf16: bool | None = None, cpu_flags: str | None = None) -> str:
    """auto: bf16 on GPUs that support it, fp16 on older GPUs, and on a CPU only with native bf16 (AMX or
    AVX512-BF16): elsewhere CPU bf16 is emulated and 8x slower (shared/research/performance.md)."""
    if requested != "auto":
        return requested
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
        cuda_bf16 = cuda and torch.cuda.is_bf16_supported()
    if cuda and not use_cpu:
        return "bf16" if cuda_bf16 else "fp16"
    from bertclf.precision import cpu_has_native_bf16

    return "bf16" if cpu_has_native_bf16(cpu_flags) else "no"


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def _check_tracker(report_to: str) -> str | None:
    """The accelerate tracker name for --report-to, after checking its package is installed."""
    if report_to == "none":
        return None
    import importlib.util

    package = TRACKER_PACKAGES[report_to]
    if importlib.util.find_spec(package) is None:
        raise UsageError(f"--report-to {report_to} needs the {package} package, which is not installed.",
                         hint=f"pip install {package}")
    return report_to


def make_accelerator(config: TrainConfig, output: Path):
    """(accelerator, resolved mixed precision) for this run."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DataLoaderConfiguration

    tracker = _check_tracker(config.report_to)
    mixed_precision = resolve_mixed_precision(config.mixed_precision, config.cpu)
    # accelerate keeps its settings in process-wide singletons; a second train() in the same process (a
    # notebook, the tests) with another precision would otherwise fail. The distributed state is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    # split_batches: the loader yields global batches (batch size x processes) that accelerate splits
    # across processes, so N processes see exactly the batches of one process with N times the batch size.
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=config.cpu,
                              gradient_accumulation_steps=config.grad_accum,
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              log_with=tracker, project_dir=str(output) if tracker else None)
    return accelerator, mixed_precision


# -- Phase 2: the model, the encoded data, the loader and the optimizer ------------------------------------


@dataclass
class LoadedModel:
    """What loading the model gives the later phases."""

    resolved: Any
    tokenizer: Any
    model: Any
    spec: EncodingSpec
    train_encoded: Any
    val_encoded: Any
    lr: float


def build_run(config: TrainConfig, data: TrainingData, run_dir: RunDirectory, accelerator,
              mixed_precision: str, batch_size_source: str = "--batch-size") -> tuple[TrainingRun, dict]:
    """Load the model, encode the data, build loader, optimizer and schedule; returns the run and its
    manifest (written to the run directory, with the tokenizer)."""
    import torch

    from bertclf.bigrams import buckets_of
    from bertclf.pooling import pooling_of
    from bertclf.used_rows import train_used_rows_only

    output = run_dir.path
    built = _load_model(config, data, run_dir, accelerator)
    # Before the optimizer is built: it holds the used rows only (bertclf.used_rows).
    embedding_rows = train_used_rows_only(built.model, built.train_encoded.input_ids,
                                          built.tokenizer.all_special_ids, accelerator.num_processes)
    run, compiled = _build_loop_parts(config, data, built, output, accelerator)
    manifest = runinfo.train_manifest(
        config, data=data, spec=built.spec, model=built.resolved.describe(), lr=built.lr,
        mixed_precision=mixed_precision, device=str(accelerator.device), world_size=accelerator.num_processes,
        threads=torch.get_num_threads(), encoded={"train": built.train_encoded, "validation": built.val_encoded},
        loss_weights=data.loss_weights, steps={"total": run.total_steps, "per_epoch": run.steps_per_epoch})
    manifest["compile"] = compiled.to_dict()
    manifest["embedding_rows"] = embedding_rows
    manifest["batch_size_source"] = batch_size_source
    # Both also in config.json; the start line and the model card read them here.
    manifest["pooling"] = pooling_of(built.model.config)
    manifest["bigram_buckets"] = buckets_of(built.model.config)
    if run.is_main:
        if not config.resume:  # a resumed run keeps the tokenizer files it started with, untouched
            built.tokenizer.save_pretrained(str(output))
        _report_start(config, data, built, run, manifest, mixed_precision)
    return run, manifest


def _load_model(config: TrainConfig, data: TrainingData, run_dir: RunDirectory, accelerator) -> LoadedModel:
    from bertclf.model import auto_learning_rate, load_for_training, trained_length, usable_max_length
    from bertclf.pooling import resolve_pooling

    is_main, output = accelerator.is_main_process, run_dir.path
    resolved = resolve_for_run(config, data.train_texts, run_dir, accelerator)
    # A scratch vocabulary is built once, by the main process, as the run's tokenizer: the other processes
    # (after it, in main_process_first) and a resumed run load that one, so every rank and every resume
    # trains with the same token ids. Pretrained models ignore vocab_dir.
    vocab_dir = output if config.resume or not is_main else None
    with accelerator.main_process_first():
        tokenizer, model = load_for_training(resolved, data.labels, data.train_texts + (data.train_pairs or []),
                                             config.max_length, output, multi_label=config.multi_label,
                                             vocab_dir=vocab_dir, bigram_buckets=config.bigram_buckets,
                                             pooling=resolve_pooling(config.pooling, resolved.source, resolved.path))
    if is_main:
        run_dir.make_ready()  # the model is resolved and loaded: now the run may write
    max_length = (usable_max_length(model, config.max_length) if config.max_length is not None else
                  auto_max_length(tokenizer, data.train_texts, data.train_pairs, trained_length(model, resolved.path)))
    spec = EncodingSpec(max_length=max_length, truncation=config.truncation, long_text=config.long_text,
                        stride=config.stride_for(max_length))
    with accelerator.main_process_first():  # one process tokenizes, the others reuse its cache
        cache = output / ".cache"
        train_encoded = encode_cached(tokenizer, data.train_texts, spec, cache, data.train_pairs)
        val_encoded = encode_cached(tokenizer, data.val_texts, spec, cache, data.val_pairs)
    if config.multi_label:
        _start_at_label_priors(model, data.train_targets)
    binary = len(data.labels) == 2 and not config.multi_label
    lr = config.lr if config.lr is not None else auto_learning_rate(model, resolved.source, resolved.path,
                                                                    binary=binary)
    if config.gradient_checkpointing:
        # transformers 5 renamed gradient_checkpointing_enable (deprecated) to activation_checkpointing_enable.
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    return LoadedModel(resolved, tokenizer, model, spec, train_encoded, val_encoded, lr)


def _refuse_bigram_buckets(model_name: str) -> NoReturn:
    """Exit 2: --bigram-buckets was given for a model that is not a new scratch model."""
    raise UsageError(f"--bigram-buckets sizes the bigram table of a new scratch model; {model_name} "
                     "already has its size (config.json's bigram_buckets, or none).",
                     hint="Leave out --bigram-buckets, or use --model scratch[:SIZE].")


def resolve_for_run(config, texts: list[str], run_dir: RunDirectory, accelerator):
    """Resolve --model (train's or pretrain's config) and say which. For a scratch model, a resumed run must
    hold its saved vocabulary; otherwise the main process readies the directory to build one straight into it."""
    from bertclf.model import is_auto_model, resolve_model
    from bertclf.scratch import parse_scratch_name

    # --bigram-buckets only sizes a new scratch model: any other model is refused before it is resolved (a Hub
    # model would be downloaded first); `auto` is checked once it has become scratch or a pretrained model.
    if config.bigram_buckets is not None and not is_auto_model(config.model) \
            and parse_scratch_name(config.model) is None:
        _refuse_bigram_buckets(config.model)
    resolved = resolve_model(config.model, texts, revision=config.revision)
    if config.bigram_buckets is not None and resolved.source != "scratch":
        _refuse_bigram_buckets(resolved.name)
    if accelerator.is_main_process:
        console.info(f"Model {resolved.name} ({resolved.source}{', ' + str(resolved.path) if resolved.path else ''})")
    if resolved.source == "scratch":
        if config.resume:
            _check_saved_vocabulary(run_dir.path)
        elif accelerator.is_main_process:
            run_dir.make_ready()
    return resolved


def _check_saved_vocabulary(output: Path) -> None:
    from bertclf.model import TOKENIZER_FILES

    if not any((output / name).is_file() for name in TOKENIZER_FILES):
        raise InputMissingError(f"--resume: {output} holds no {' or '.join(TOKENIZER_FILES)}, the vocabulary this "
                                "scratch run was trained with, so it cannot be resumed.",
                                hint="Restore the run's tokenizer files, or train again without --resume.")


def _build_loop_parts(config: TrainConfig, data: TrainingData, built: LoadedModel, output: Path,
                      accelerator) -> tuple[TrainingRun, compiling.CompileReport]:
    import torch
    from transformers import get_linear_schedule_with_warmup

    from bertclf.fast_dropout import use_fast_dropout

    compute_loss = _loss_function(data.space, data.loss_weights)
    # Length-grouped batches: texts of similar length share a batch, so padding stays small.
    global_batch = config.batch_size * accelerator.num_processes
    sampler = LengthGroupedSampler(built.train_encoded.lengths, global_batch, config.seed)
    # With --long-text chunks every window of a text is a training example with the text's label(s).
    train_dataset = EncodedDataset(built.train_encoded, built.train_encoded.per_sequence(data.train_targets.tolist()))
    collate = padding_collator(built.tokenizer)
    train_loader = torch.utils.data.DataLoader(train_dataset, batch_size=global_batch, sampler=sampler,
                                               collate_fn=collate)
    compile_on = compiling.resolve_compile(config.compile, accelerator.device.type)
    optimizer = _build_optimizer(built.model, config, built.lr)
    # Compiled in place before prepare: the model stays the same object (no _orig_mod. in its weights' names)
    # and accelerate's autocast, for mixed precision, wraps the compiled forward.
    forward = compiling.compile_model(built.model, training=True) if compile_on else None
    if forward is None and accelerator.device.type == "cpu":
        use_fast_dropout(built.model)  # dropout's masks were the largest cost after the matmuls (fast_dropout.py)
    model, optimizer, train_loader = accelerator.prepare(built.model, optimizer, train_loader)
    steps_per_epoch = max(1, math.ceil(len(train_loader) / config.grad_accum))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    # The scheduler is stepped by hand once per optimizer step (not prepared: accelerate would step it
    # once per process).
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    run = TrainingRun(config=config, output=output, accelerator=accelerator, model=model, tokenizer=built.tokenizer,
                      optimizer=optimizer, scheduler=scheduler, train_loader=train_loader, sampler=sampler,
                      compute_loss=compute_loss, space=data.space, val_encoded=built.val_encoded,
                      val_targets=data.val_targets, global_batch=global_batch, steps_per_epoch=steps_per_epoch,
                      total_steps=total_steps, eval_every=config.eval_every or steps_per_epoch)
    if forward is None:
        return run, compiling.CompileReport(config.compile, enabled=False)
    return run, _compile_training(run, forward, train_dataset, collate)


def _compile_training(run: TrainingRun, forward, train_dataset, collate) -> compiling.CompileReport:
    """--compile: compile the training step's forward and backward now, on the first training texts, so the
    loop's samples/s leaves the compile time out (it is reported apart). The warm-up steps change nothing: the
    random generators are restored (dropout draws from them) and the gradients dropped, so the loop then runs
    as it would have without them."""
    import torch

    config, accelerator = run.config, run.accelerator
    lengths = [len(train_dataset[i]["input_ids"]) for i in range(min(config.batch_size, len(train_dataset)))]
    rows = compiling.warm_up_rows(lengths, config.batch_size)
    batch = {k: v.to(accelerator.device)
             for k, v in collate([train_dataset[i % len(train_dataset)] for i in range(rows)]).items()}

    def step() -> None:
        inputs = dict(batch)
        targets = inputs.pop("labels")
        accelerator.backward(run.compute_loss(run.model(**inputs).logits, targets))

    if run.is_main:
        console.info("Compiling the model for training (torch.compile; a minute or more on a small CPU)...")
    report = compiling.CompileReport(config.compile, enabled=True)
    run.model.train()  # the graph compiled is the training mode's (a loaded model starts in eval mode)
    with torch.random.fork_rng(devices=[accelerator.device] if accelerator.device.type == "cuda" else []):
        try:
            report.seconds = compiling.timed_warm_up(step)
        except Exception as error:  # torch.compile fails in many ways (InductorError, BackendCompilerFailed, ...)
            forward.disable()
            report.enabled, report.error = False, compiling.compile_failed(error)
            console.warn(f"torch.compile failed, training without it: {report.error}")
    run.model.eval()
    for param in run.model.parameters():
        param.grad = None
    if report.enabled:
        report.graphs = forward.graphs
        if run.is_main:
            console.info(f"Compiled in {report.seconds:.1f} s, not counted as training time.")
    return report


def _report_start(config: TrainConfig, data: TrainingData, built: LoadedModel, run: TrainingRun, manifest: dict,
                  mixed_precision: str) -> None:
    from bertclf.used_rows import parameter_count

    accelerator = run.accelerator
    n_params = parameter_count(run.model)
    processes = f" x {accelerator.num_processes} processes" if accelerator.num_processes > 1 else ""
    console.info(
        f"Training on {len(data.train_texts)} rows, validating on {len(data.val_texts)}; {len(data.labels)} labels; "
        f"{n_params / 1e6:.1f}M parameters; {run.total_steps} steps of {config.batch_size * config.grad_accum}"
        f"{processes} ({manifest['batch_size_source']}); lr {built.lr:g} ({manifest['learning_rate_source']}); "
        f"max length {built.spec.max_length} ({manifest['max_length_source']}); "
        f"classifier reads {'[CLS]' if manifest['pooling'] == 'cls' else 'the mean of all tokens'}; "
        f"{'character-bigram embeddings; ' if manifest['bigram_buckets'] else ''}"
        f"device {accelerator.device}, precision {mixed_precision}")
    for split, encoded in (("train", built.train_encoded), ("validation", built.val_encoded)):
        if not encoded.truncated:
            continue
        share = f"{encoded.truncated} of {encoded.n_texts} {split} texts ({encoded.truncated / encoded.n_texts:.1%})"
        if config.long_text == "chunks":
            console.info(f"{share} exceed {built.spec.max_length} tokens and are split into overlapping windows: "
                         f"{len(encoded)} sequences in all.")
        else:
            console.info(f"{share} exceed {built.spec.max_length} tokens and are truncated ({config.truncation}).")


def _build_optimizer(model, config: TrainConfig, lr: float, slow: set[int] = frozenset(), slow_scale: float = 1.0):
    """AdamW; the parameters whose ids are in `slow` learn at `slow_scale` times the rate (pretrain: a scratch
    model's embeddings, scratch_init.py)."""
    import torch

    # No weight decay on biases and LayerNorm weights, as in the original BERT recipe.
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        decays = not (name.endswith("bias") or "LayerNorm" in name)
        groups.setdefault((decays, id(param) in slow), []).append(param)
    param_groups = [{"params": params, "weight_decay": config.weight_decay if decays else 0.0,
                     "lr": lr * slow_scale if is_slow else lr}
                    for (decays, is_slow), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))]
    try:  # the fused kernel is about 3x faster per step on CPU (performance.md)
        return torch.optim.AdamW(param_groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(param_groups, lr=lr)


def _start_at_label_priors(model, train_targets) -> None:
    """Multi-label: set each label's output bias to the log-odds of its share of the training rows, so the
    untrained model already predicts the base rates (the "prior" initialisation of Lin et al. 2017, Focal
    Loss). From a zero bias every sigmoid starts at 0.5, and the first few hundred steps only push the
    outputs down to the base rates: MiniLM on 2,000 en_wordnet_verbs label sets was still at the base-rate
    loss (0.31) after 120 steps, against 0.25 when starting from the priors."""
    import numpy as np
    import torch

    share = np.clip(train_targets.mean(axis=0), 1e-4, 1 - 1e-4)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.as_tensor(np.log(share / (1 - share)), dtype=model.classifier.bias.dtype))


def _loss_function(space: LabelSpace, weights: list[float] | None):
    """Loss of a batch's logits: cross-entropy (class weights from --class-weights), or for multi-label one
    binary cross-entropy per label (positive weights from --class-weights). Computed in float32."""
    import torch
    import torch.nn.functional as F

    weight_tensor = torch.tensor(weights, dtype=torch.float32) if weights else None

    def loss(logits, targets):
        weight = weight_tensor.to(logits.device) if weight_tensor is not None else None
        if space.multi_label:
            return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), pos_weight=weight)
        return F.cross_entropy(logits.float(), targets, weight=weight)

    return loss


# -- Phase 3: the loop (bertclf.train_loop), started fresh or from a checkpoint -----------------------------


def start_loop(run: TrainingRun, manifest: dict, fingerprint: dict,
               resumed: checkpoint.Checkpoint | None) -> TrainingLoop:
    """The loop at step 0, or where --resume's checkpoint left it; writes the (incomplete) manifest."""
    config, output = run.config, run.output
    position = start_position(run, resumed, manifest)
    state, pending_rng = position.state, position.pending_rng
    if run.is_main:
        write_json_atomic(output / MANIFEST, manifest)
    tracker = run.accelerator if config.report_to != "none" else None
    log = TrainLog(output / "train_log.jsonl", run.is_main, append=bool(config.resume), tracker=tracker)
    if tracker:
        run.accelerator.init_trackers(output.name, config={k: v for k, v in config.to_dict().items()
                                                           if isinstance(v, (int, float, str, bool))})
    best_metrics = (json.loads((output / "metrics.json").read_text())
                    if config.resume and (output / "metrics.json").is_file() else {})
    if state.best_loss is None and best_metrics.get("step") == state.best_step:
        state.best_loss = best_metrics.get("loss")  # a checkpoint from before best_loss was kept
    return TrainingLoop(run, log, fingerprint, state, pending_rng, best_metrics)


# -- Phase 4: finish the run ---------------------------------------------------------------------------------


def finish_run(run: TrainingRun, loop: TrainingLoop, manifest: dict, data: TrainingData,
               started: float) -> TrainResult:
    """Thresholds (multi-label) or calibration (single-label), model card and the completed manifest,
    written last."""
    accelerator, output, state = run.accelerator, run.output, loop.state
    accelerator.wait_for_everyone()
    best_metrics = loop.best_metrics
    calibration = fp32_probs = None
    if run.config.multi_label and run.is_main:
        best_metrics, fp32_probs = _tune_thresholds(run, manifest, data, state.best_step)
    elif run.is_main:
        best_metrics, calibration, fp32_probs = _calibrate(run, data, state.best_step, best_metrics)
    if run.is_main:
        _check_bf16_inference(run, manifest, data, fp32_probs)
    accelerator.wait_for_everyone()
    forward = compiling.compiled_forward(accelerator.unwrap_model(run.model))
    if manifest["compile"]["enabled"] and forward is not None:  # recompiles during the loop, if any, show here
        manifest["compile"]["graphs"] = forward.graphs
    runinfo.complete_manifest(manifest, metric=run.config.metric, state=state,
                              total_seconds=time.perf_counter() - started, calibration=calibration)
    if run.is_main:
        (output / "README.md").write_text(model_card(manifest, best_metrics), encoding="utf-8")
        shutil.rmtree(output / ".cache", ignore_errors=True)  # token ids only served this run and its resumes
        write_json_atomic(output / MANIFEST, manifest)  # last: completed=true means everything else is there
    accelerator.end_training()  # also closes --report-to trackers
    return TrainResult(
        output_dir=output,
        best_step=state.best_step,
        best_metric=float(state.best_value if state.best_value is not None else float("nan")),
        metric=run.config.metric,
        validation_metrics={k: v for k, v in best_metrics.items() if k not in ("split", "step")},
        steps=state.step,
        epochs=state.step / run.steps_per_epoch,
        train_seconds=state.train_seconds,
        samples_per_second=state.samples_seen / max(state.train_seconds, 1e-9),
        manifest=manifest,
        is_main_process=run.is_main,
        compile_seconds=manifest["compile"]["seconds"],
    )


def _tune_thresholds(run: TrainingRun, manifest: dict, data: TrainingData, best_step: int) -> tuple[dict, Any]:
    """One threshold per label, the one maximising that label's F1 on validation; eval and predict use
    them. The probabilities come from the saved best model run as eval and predict run it (full
    precision, no autocast), so the thresholds fit the scores they will be applied to, and a resumed run
    tunes the same ones. Only the main process, which wrote the model, does this. Returns the validation
    metrics and those probabilities (the bf16 check compares against them)."""
    from bertclf.inference import predict_probs
    from bertclf.metrics import score
    from bertclf.model import load_run_model

    device, space, targets = run.accelerator.device, data.space, data.val_targets
    best_model = load_run_model(run.output).to(device)
    probs = predict_probs(best_model, run.tokenizer, run.val_encoded, space, run.config.batch_size * 2, device=device)
    del best_model
    thresholds = tune_thresholds(probs, targets)
    manifest["thresholds"] = dict(zip(data.labels, thresholds, strict=True))
    best_metrics = score(probs, targets, space, thresholds)
    best_metrics["at_threshold_0.5"] = scalar_metrics(score(probs, targets, space))
    write_json_atomic(run.output / "metrics.json", {"split": "validation", "step": best_step, **best_metrics})
    console.info(f"Per-label thresholds tuned on validation: micro-F1 {best_metrics['micro_f1']:.4f} "
                 f"(at 0.5 for every label: {best_metrics['at_threshold_0.5']['micro_f1']:.4f}). "
                 "Validation scores at tuned thresholds are optimistic; eval a test file for real ones.")
    return best_metrics, probs


def _check_bf16_inference(run: TrainingRun, manifest: dict, data: TrainingData, fp32_probs=None) -> None:
    """Where this device computes bf16 natively: the saved model's validation labels in bf16 against fp32,
    recorded as manifest["inference"]["bf16"]; predict/eval/serve --precision auto use bf16 only when they
    agree (bertclf.precision). After calibration and thresholds: the check is of the model as it is saved.
    fp32_probs: the saved model's fp32 validation probabilities, where calibration or thresholds computed them."""
    import numpy as np

    from bertclf.precision import MIN_BF16_AGREEMENT, check_bf16_labels

    thresholds = manifest.get("thresholds")
    check = check_bf16_labels(run.output, run.tokenizer, run.val_encoded, data.space,
                              None if thresholds is None else np.asarray([thresholds[label] for label in data.labels]),
                              run.config.batch_size * 2, run.accelerator.device, fp32_probs)
    if check is None:
        return
    manifest["inference"] = {"bf16": check}
    verdict = "predict, eval and serve use bf16 here" if check["label_agreement"] >= MIN_BF16_AGREEMENT \
        else "predict, eval and serve stay in fp32"
    console.info(f"bf16 inference checked on validation: the same labels as fp32 on "
                 f"{check['label_agreement']:.2%} of {check['texts']} texts; {verdict} (--precision to choose).")


def _calibrate(run: TrainingRun, data: TrainingData, best_step: int,
               best_metrics: dict) -> tuple[dict, dict | None, Any]:
    """Single-label runs: temperature scaling fitted on validation and folded into the saved best model
    (bertclf.calibration); metrics.json then holds the calibrated validation metrics and the fit. Returns
    (validation metrics, the manifest's "calibration" record or None, the saved model's validation
    probabilities where a fit computed them, else None). Multi-label runs are not scaled:
    their per-label thresholds are tuned on these very scores, and one temperature would only move the
    thresholds, not make the scores mean more.

    The fit starts from the best model saved by the loop, so a resumed run fits the same T as an
    uninterrupted one. A metrics.json that already records a fit means the best model in the directory was
    calibrated by the run being resumed and not replaced since: it is kept as it is, never scaled twice."""
    from bertclf.calibration import calibrate_saved_model
    from bertclf.metrics import score

    if "calibration" in best_metrics:
        return best_metrics, best_metrics["calibration"], None
    if not run.config.calibration:
        return best_metrics, None, None
    record, probs = calibrate_saved_model(run.output, run.tokenizer, run.val_encoded, data.val_targets, data.space,
                                          run.config.batch_size * 2, run.accelerator.device)
    if probs is None:  # left raw: the record says why
        return best_metrics, record, None
    metrics = {**score(probs, data.val_targets, data.space), "calibration": record}
    write_json_atomic(run.output / "metrics.json", {"split": "validation", "step": best_step, **metrics})
    console.info(f"Scores calibrated on validation: temperature {record['temperature']:.3f}, ECE "
                 f"{record['ece_before']:.4f} -> {record['ece_after']:.4f}, NLL {record['nll_before']:.4f} -> "
                 f"{record['nll_after']:.4f} (predictions unchanged; --no-calibration keeps the raw scores).")
    return metrics, record, probs
