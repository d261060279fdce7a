"""`bertclf train`: the accelerate training loop, from data files to a self-describing run directory."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bertclf import checkpoint, console
from bertclf.config import TrainConfig
from bertclf.data import (
    LabelledData,
    check_label_set,
    data_warnings,
    read_labelled,
    stratified_split,
    unknown_labels,
)
from bertclf.encoding import EncodedDataset, EncodingSpec, LengthGroupedSampler, encode_cached, padding_collator
from bertclf.errors import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    DataError,
    DivergedError,
    InterruptedRunError,
    OutputError,
    UsageError,
)
from bertclf.labels import LabelSpace, rarest_label_keys, tune_thresholds
from bertclf.metrics import scalar_metrics
from bertclf.runinfo import MANIFEST, base_manifest, model_card, write_json_atomic

# Files a run writes; --overwrite removes these (and only these) from an earlier run in the same place.
RUN_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", MANIFEST, "metrics.json", "train_log.jsonl", "README.md")


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
                        "samples_per_second": round(self.samples_per_second, 2)},
        }


def default_output_dir(train_file: Path) -> Path:
    return Path("runs") / f"{train_file.stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare_output_dir(output: Path, overwrite: bool, resume: bool = False) -> None:
    """Refuse to mix two runs in one directory unless --overwrite; fail early (exit 74) if unwritable."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} exists and is not a directory.")
    if resume:
        if not (output / MANIFEST).is_file():
            raise UsageError(f"--resume: {output} holds no bertclf run to resume.",
                             hint="Pass the --output directory of the interrupted run.")
    elif output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise UsageError(f"--output {output} is not empty.",
                             hint="Choose another directory, or pass --overwrite to replace the run in it.")
        for name in RUN_FILES:
            (output / name).unlink(missing_ok=True)
        shutil.rmtree(output / "checkpoints", ignore_errors=True)
        shutil.rmtree(output / ".cache", ignore_errors=True)
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".bertclf-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"Cannot write to --output {output}: {exc.strerror or exc}.",
                          hint="Choose a writable directory.") from None


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
    if cpu_flags is None:
        try:
            cpu_flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpu_flags = ""
    return "bf16" if ("amx_bf16" in cpu_flags or "avx512_bf16" in cpu_flags) else "no"


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


def _build_optimizer(model, config: TrainConfig, lr: float):
    import torch

    # No weight decay on biases and LayerNorm weights, as in the original BERT recipe.
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel is about 3x faster per step on CPU (performance.md)
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr)


class _Logger:
    """train_log.jsonl lines (main process only) and progress on stderr."""

    def __init__(self, path: Path, enabled: bool, append: bool = False, tracker=None):
        self.enabled = enabled
        self.file = path.open("a" if append else "w", encoding="utf-8") if enabled else None
        self.tracker = tracker  # an Accelerator with --report-to trackers, or None

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.file.flush()
        if self.tracker is not None:
            values = {f"{record['type']}/{k}": v for k, v in record.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
            self.tracker.log(values, step=record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune a BERT classifier as configured and write the run directory. Returns its summary."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    train_data, train_idx, val_data, val_idx, labels = _load_splits(config)
    output = config.output or default_output_dir(config.train_file)

    import torch
    from accelerate import Accelerator, skip_first_batches
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from transformers import get_linear_schedule_with_warmup

    from bertclf.inference import predict_probs
    from bertclf.metrics import score
    from bertclf.model import auto_learning_rate, load_for_training, resolve_model, usable_max_length

    tracker = _check_tracker(config.report_to)
    mixed_precision = resolve_mixed_precision(config.mixed_precision, config.cpu)
    # accelerate keeps its settings in process-wide singletons; a second train() in the same process (a
    # notebook, the tests) with another precision would otherwise fail. The distributed state is kept.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    # split_batches: the loader yields global batches (batch size x processes) that accelerate splits
    # across processes, so N processes see exactly the batches of one process with N times the batch size.
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=config.cpu,
                              gradient_accumulation_steps=config.grad_accum,
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              log_with=tracker, project_dir=str(output) if tracker else None)
    is_main = accelerator.is_main_process
    if is_main:
        prepare_output_dir(output, config.overwrite, resume=bool(config.resume))
    accelerator.wait_for_everyone()
    set_seed(config.seed)

    space = LabelSpace(tuple(labels), multi_label=config.multi_label)
    train_texts, train_pairs = [train_data.texts[i] for i in train_idx], train_data.pairs_at(train_idx)
    train_targets = space.targets([train_data.labels[i] for i in train_idx])
    val_source = val_data if val_data is not None else train_data
    val_texts, val_pairs = [val_source.texts[i] for i in val_idx], val_source.pairs_at(val_idx)
    val_targets = space.targets([val_source.labels[i] for i in val_idx])

    warnings = data_warnings(config.train_file, train_texts, [train_data.labels[i] for i in train_idx], val_texts)
    if is_main:
        for warning in warnings:
            console.warn(warning)

    resolved = resolve_model(config.model, train_texts)
    if is_main:
        console.info(f"Model [bold]{resolved.name}[/bold] ({resolved.source}"
                     f"{', ' + str(resolved.path) if resolved.path else ''})")
    with accelerator.main_process_first():
        tokenizer, model = load_for_training(resolved, labels, train_texts + (train_pairs or []), config.max_length,
                                             output / ".scratch-vocab", multi_label=config.multi_label)
    max_length = usable_max_length(model, config.max_length)
    spec = EncodingSpec(max_length=max_length, truncation=config.truncation, long_text=config.long_text,
                        stride=min(config.resolved_stride, max_length // 2))
    with accelerator.main_process_first():  # one process tokenizes, the others reuse its cache
        cache = output / ".cache"
        train_encoded = encode_cached(tokenizer, train_texts, spec, cache, train_pairs)
        val_encoded = encode_cached(tokenizer, val_texts, spec, cache, val_pairs)
    if config.multi_label:
        _start_at_label_priors(model, train_targets)
    lr = config.lr if config.lr is not None else auto_learning_rate(model, resolved.source)
    loss_weights = space.loss_weights(config.class_weights, train_targets) if config.class_weights else None
    compute_loss = _loss_function(space, loss_weights)
    if config.gradient_checkpointing:
        # transformers 5 renamed gradient_checkpointing_enable (deprecated) to activation_checkpointing_enable.
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()

    # Length-grouped batches: texts of similar length share a batch, so padding stays small.
    global_batch = config.batch_size * accelerator.num_processes
    sampler = LengthGroupedSampler(train_encoded.lengths, global_batch, config.seed)
    # With --long-text chunks every window of a text is a training example with the text's label(s).
    train_dataset = EncodedDataset(train_encoded, train_encoded.per_sequence(train_targets.tolist()))
    train_loader = torch.utils.data.DataLoader(train_dataset,
                                               batch_size=global_batch, sampler=sampler,
                                               collate_fn=padding_collator(tokenizer))
    optimizer = _build_optimizer(model, config, lr)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch = max(1, math.ceil(len(train_loader) / config.grad_accum))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    # The scheduler is stepped by hand once per optimizer step (not prepared: accelerate would step it
    # once per process).
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    eval_every = config.eval_every or steps_per_epoch

    manifest = base_manifest(config.argv)
    manifest.update({
        "config": config.to_dict(),
        "labels": labels,
        "task": "multi_label" if config.multi_label else "single_label",
        "text_column": train_data.text_column,
        "text_pair_column": train_data.pair_column,
        "label_column": train_data.label_column,
        "label_separator": config.label_separator if config.multi_label else None,
        **spec.to_dict(),
        "model": resolved.describe(),
        "learning_rate": lr,
        "learning_rate_source": "auto" if config.lr is None else "--lr",
        "mixed_precision": mixed_precision,
        "device": str(accelerator.device),
        "world_size": accelerator.num_processes,
        "seed": config.seed,
        "threads": torch.get_num_threads(),
        "data": {"train": train_data.table.describe(),
                 "validation": val_data.table.describe() if val_data else None},
        "validation_source": str(config.validation_file) if val_data else
        f"{config.validation_split:.0%} stratified split of the training file (seed {config.seed})",
        "train_rows": len(train_texts),
        "validation_rows": len(val_texts),
        "truncated": {"train": train_encoded.truncated, "validation": val_encoded.truncated},
        "sequences": {"train": len(train_encoded), "validation": len(val_encoded)},
        "data_warnings": warnings,
        "class_weights": dict(zip(labels, loss_weights, strict=True)) if loss_weights else None,
        "steps": {"total": total_steps, "per_epoch": steps_per_epoch},
        "metric": config.metric,
    })
    if is_main:
        tokenizer.save_pretrained(str(output))
        shutil.rmtree(output / ".scratch-vocab", ignore_errors=True)
        n_params = sum(p.numel() for p in model.parameters())
        console.info(
            f"Training on {len(train_texts)} rows, validating on {len(val_texts)}; {len(labels)} labels; "
            f"{n_params / 1e6:.1f}M parameters; {total_steps} steps of {config.batch_size * config.grad_accum}"
            f"{' x ' + str(accelerator.num_processes) + ' processes' if accelerator.num_processes > 1 else ''}; "
            f"lr {lr:g} ({manifest['learning_rate_source']}); device {accelerator.device}, "
            f"precision {mixed_precision}")
        for split, encoded in (("train", train_encoded), ("validation", val_encoded)):
            if not encoded.truncated:
                continue
            share = (f"{encoded.truncated} of {encoded.n_texts} {split} texts "
                     f"({encoded.truncated / encoded.n_texts:.1%})")
            if config.long_text == "chunks":
                console.info(f"{share} exceed {max_length} tokens and are split into overlapping windows: "
                             f"{len(encoded)} sequences in all.")
            else:
                console.info(f"{share} exceed {max_length} tokens and are truncated ({config.truncation}).")

    loop = LoopState()
    pending_rng = None  # RNG states of a resumed checkpoint, restored once its epoch has started
    fingerprint = checkpoint.fingerprint(config.to_dict(), {k: v["sha256"] for k, v in manifest["data"].items()
                                                            if v}, labels)
    if config.resume:
        resumed = checkpoint.find_checkpoint(output, config.resume)
        checkpoint.check_compatible(resumed.state["fingerprint"], fingerprint)
        pending_rng = checkpoint.load_training_state(resumed, accelerator.unwrap_model(model), optimizer,
                                                     scheduler)
        loop = LoopState(**resumed.state["loop"])
        # Replay the checkpoint's batch order exactly: checkpoints that do not say were written with groups of 8.
        sampler.group_size = global_batch * resumed.state.get("sampler_batches_per_group", 8)
        if loop.batches_in_epoch == 0:
            # At an epoch boundary the uninterrupted run starts the next epoch (drawing a loader seed)
            # after this state, so restore it now; mid-epoch that draw already happened: restore later.
            checkpoint.restore_rng(pending_rng)
            pending_rng = None
        manifest["resumed_from"] = str(resumed.path)
        if is_main:
            _truncate_log(output / "train_log.jsonl", loop.step)
            console.info(f"Resuming from {resumed.path} (step {loop.step} of {total_steps}).")
    if is_main:
        write_json_atomic(output / MANIFEST, manifest)

    log = _Logger(output / "train_log.jsonl", is_main, append=bool(config.resume),
                  tracker=accelerator if tracker else None)
    if tracker:
        accelerator.init_trackers(output.name, config={k: v for k, v in config.to_dict().items()
                                                       if isinstance(v, (int, float, str, bool))})
    best_metrics: dict[str, Any] = (json.loads((output / "metrics.json").read_text())
                                    if config.resume and (output / "metrics.json").is_file() else {})
    window_start, window_samples = time.perf_counter(), 0
    stop_hook = int(os.environ.get("BERTCLF_STOP_AFTER_STEP", "0"))  # tests: act as if SIGTERM came then
    signals = _StopSignals(is_main)

    def evaluate_and_keep_best() -> None:
        nonlocal best_metrics
        probs = predict_probs(accelerator.unwrap_model(model), tokenizer, val_encoded, space, config.batch_size * 2,
                              accelerator=accelerator)
        # Multi-label: scored at thresholds tuned on these probabilities, as predict will use this model.
        # At a fixed 0.5 an early model predicts no label at all and every evaluation ties at F1 0.
        metrics = score(probs, val_targets, space, tune_thresholds(probs, val_targets) if config.multi_label else None)
        value = metrics[config.metric]
        improved = loop.best_value is None or (
            value > loop.best_value if config.greater_is_better else value < loop.best_value)
        if improved:
            loop.best_value, loop.best_step, best_metrics = value, loop.step, metrics
            loop.evals_without_improvement = 0
            state_dict = accelerator.get_state_dict(model)
            if is_main:  # the run directory always holds the best model so far
                accelerator.unwrap_model(model).save_pretrained(str(output), safe_serialization=True,
                                                                state_dict=state_dict)
                write_json_atomic(output / "metrics.json", {"split": "validation", "step": loop.step, **metrics})
        else:
            loop.evals_without_improvement += 1
            if config.early_stopping and loop.evals_without_improvement >= config.early_stopping:
                loop.stopped_early = True
        log.write({"type": "eval", "step": loop.step, "epoch": round(loop.step / steps_per_epoch, 4),
                   **{f"val_{k}": v for k, v in scalar_metrics(metrics).items()}, "best": improved})
        if is_main:
            accuracy = "subset_accuracy" if config.multi_label else "accuracy"
            console.info(f"step {loop.step}/{total_steps} (epoch {loop.step / steps_per_epoch:.2f}): validation "
                         f"{config.metric} {value:.4f}, {accuracy.replace('_', ' ')} {metrics[accuracy]:.4f}, "
                         f"loss {metrics['loss']:.4f}{'  [green]best[/green]' if improved else ''}"
                         f"{'  early stop' if loop.stopped_early else ''}")

    def write_checkpoint() -> Path | None:
        state_dict = accelerator.get_state_dict(model)
        path = None
        if is_main:
            position = asdict(loop)
            if loop.batches_in_epoch >= len(train_loader):  # the epoch is done: resume at the next one
                position.update(epoch=loop.epoch + 1, batches_in_epoch=0)
            path = checkpoint.save_checkpoint(output, step=loop.step, model_state=state_dict, optimizer=optimizer,
                                              scheduler=scheduler, keep=config.keep,
                                              loop_state={"loop": position, "fingerprint": fingerprint,
                                                          "sampler_batches_per_group":
                                                              sampler.group_size // global_batch})
        accelerator.wait_for_everyone()
        return path

    progress = console.make_progress() if is_main else None
    task = progress.add_task("training", total=total_steps, completed=loop.step, status="") if progress else None
    if progress:
        progress.start()
    model.train()
    try:
        with signals:
            while loop.step < total_steps and not loop.stopped_early:
                sampler.epoch = loop.epoch  # a fresh, reproducible order every epoch
                # After a resume, skip the batches of this epoch that the checkpoint already trained on.
                batches = skip_first_batches(train_loader, loop.batches_in_epoch) if loop.batches_in_epoch \
                    else train_loader
                tick = time.perf_counter()
                for batch in batches:
                    if pending_rng is not None:
                        checkpoint.restore_rng(pending_rng)
                        pending_rng = None
                    with accelerator.accumulate(model):
                        targets = batch.pop("labels")
                        loss = compute_loss(model(**batch).logits, targets)
                        accelerator.backward(loss)
                        if accelerator.sync_gradients:
                            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                        optimizer.step()
                        optimizer.zero_grad()
                    loop.loss_sum += loss.detach().float().item()
                    loop.loss_count += 1
                    loop.batches_in_epoch += 1
                    # this process holds 1/num_processes of the global batch
                    batch_samples = batch["input_ids"].shape[0] * accelerator.num_processes
                    loop.samples_seen += batch_samples
                    window_samples += batch_samples
                    if not accelerator.sync_gradients:
                        continue
                    scheduler.step()
                    loop.step += 1
                    if not math.isfinite(loop.loss_sum):
                        raise DivergedError(f"The training loss became {loop.loss_sum} at step {loop.step}.",
                                            hint="Lower --lr, or check the data for extreme inputs. "
                                            "Checkpoints written before this step are intact.")
                    if loop.step % config.log_every == 0 or loop.step == total_steps:
                        now = time.perf_counter()
                        rate = window_samples / max(now - window_start, 1e-9)
                        lr_now = scheduler.get_last_lr()[0]
                        log.write({"type": "train", "step": loop.step, "epoch": round(loop.step / steps_per_epoch, 4),
                                   "loss": loop.loss_sum / loop.loss_count, "learning_rate": lr_now,
                                   "samples_per_second": round(rate, 2)})
                        if progress:
                            progress.update(task, status=f"loss {loop.loss_sum / loop.loss_count:.4f}  "
                                            f"lr {lr_now:.2e}  {rate:.1f} samples/s")
                        loop.loss_sum, loop.loss_count = 0.0, 0
                        window_start, window_samples = now, 0
                    if progress:
                        progress.update(task, completed=loop.step,
                                        description=f"epoch {loop.step / steps_per_epoch:.2f}")
                    if loop.step % eval_every == 0 or loop.step == total_steps:
                        paused = time.perf_counter()
                        loop.train_seconds += paused - tick
                        evaluate_and_keep_best()
                        tick = time.perf_counter()
                        window_start += tick - paused  # evaluation time does not count as training time
                    if stop_hook and loop.step == stop_hook:
                        signals.requested = signal.SIGTERM
                    if signals.requested or (config.save_every and loop.step % config.save_every == 0):
                        loop.train_seconds += time.perf_counter() - tick
                        tick = time.perf_counter()
                        saved = write_checkpoint()
                        if signals.requested:
                            raise _interrupted(signals.requested, saved, config)
                    if loop.step >= total_steps or loop.stopped_early:
                        break
                else:  # the epoch ran to its end
                    loop.epoch += 1
                    loop.batches_in_epoch = 0
                loop.train_seconds += time.perf_counter() - tick
    finally:
        if progress:
            progress.stop()
        log.close()

    accelerator.wait_for_everyone()
    if config.multi_label and is_main:
        # One threshold per label, the one maximising that label's F1 on validation; eval and predict use
        # them. The probabilities come from the saved best model run as eval and predict run it (full
        # precision, no autocast), so the thresholds fit the scores they will be applied to, and a resumed
        # run tunes the same ones. Only the main process, which wrote the model, does this.
        from bertclf.model import load_run_model

        best_model = load_run_model(output).to(accelerator.device)
        best_val_probs = predict_probs(best_model, tokenizer, val_encoded, space, config.batch_size * 2,
                                       device=accelerator.device)
        del best_model
        thresholds = tune_thresholds(best_val_probs, val_targets)
        manifest["thresholds"] = dict(zip(labels, thresholds, strict=True))
        best_metrics = score(best_val_probs, val_targets, space, thresholds)
        best_metrics["at_threshold_0.5"] = scalar_metrics(score(best_val_probs, val_targets, space))
        write_json_atomic(output / "metrics.json", {"split": "validation", "step": loop.best_step, **best_metrics})
        console.info(f"Per-label thresholds tuned on validation: micro-F1 {best_metrics['micro_f1']:.4f} "
                     f"(at 0.5 for every label: {best_metrics['at_threshold_0.5']['micro_f1']:.4f}). "
                     "Validation scores at tuned thresholds are optimistic; eval a test file for real ones.")
    accelerator.wait_for_everyone()
    manifest.update({
        "completed": True,
        "best_step": loop.best_step,
        "best_metric": {config.metric: loop.best_value},
        "steps_done": loop.step,
        "stopped_early": loop.stopped_early,
        "timings": {"train_seconds": round(loop.train_seconds, 2),
                    "total_seconds": round(time.perf_counter() - started, 2),
                    "samples_per_second": round(loop.samples_seen / max(loop.train_seconds, 1e-9), 2)},
    })
    if is_main:
        (output / "README.md").write_text(model_card(manifest, best_metrics), encoding="utf-8")
        shutil.rmtree(output / ".cache", ignore_errors=True)  # token ids only served this run and its resumes
        write_json_atomic(output / MANIFEST, manifest)  # last: completed=true means everything else is there
    accelerator.end_training()  # also closes --report-to trackers
    return TrainResult(
        output_dir=output,
        best_step=loop.best_step,
        best_metric=float(loop.best_value if loop.best_value is not None else float("nan")),
        metric=config.metric,
        validation_metrics={k: v for k, v in best_metrics.items() if k not in ("split", "step")},
        steps=loop.step,
        epochs=loop.step / steps_per_epoch,
        train_seconds=loop.train_seconds,
        samples_per_second=loop.samples_seen / max(loop.train_seconds, 1e-9),
        manifest=manifest,
        is_main_process=is_main,
    )


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


@dataclass
class LoopState:
    """Where the training loop stands; saved in every checkpoint so a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of the current epoch already trained on
    best_value: float | None = None
    best_step: int = 0
    evals_without_improvement: int = 0
    stopped_early: bool = False
    loss_sum: float = 0.0  # running loss since the last train_log line
    loss_count: int = 0
    samples_seen: int = 0
    train_seconds: float = 0.0


class _StopSignals:
    """SIGINT/SIGTERM: the first asks the loop to finish its step and checkpoint; a second exits at once
    (checkpoints are written under a temporary name, so none is left half-written)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            os._exit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
        self.requested = signum
        console.warn(f"{signal.Signals(signum).name} received: finishing this step and writing a checkpoint "
                     "(send it again to stop at once).")

    def __enter__(self):
        if self.enabled:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _interrupted(signum: int, saved: Path | None, config: TrainConfig) -> InterruptedRunError:
    argv = " ".join(a for a in config.argv[1:] if a not in ("--overwrite", "--resume")) or "train ..."
    error = InterruptedRunError(f"Training interrupted by {signal.Signals(signum).name}; checkpoint written to "
                                f"{saved}.", hint=f"Resume with: bertclf {argv} --resume")
    error.exit_code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
    return error


def _truncate_log(path: Path, step: int) -> None:
    """Drop train_log.jsonl lines written after the checkpoint being resumed (they will be written again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
