"""The training loop of `bertclf train`: optimizer steps, periodic evaluation that keeps the best model,
checkpoints, resume and stop signals. `bertclf.train` builds a `TrainingRun` and hands it to `TrainingLoop`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bertclf import checkpoint, console, memory
from bertclf.config import TrainConfig
from bertclf.errors import EXIT_SIGINT, EXIT_SIGTERM, DivergedError, InterruptedRunError
from bertclf.labels import LabelSpace, tune_thresholds
from bertclf.metrics import scalar_metrics
from bertclf.runinfo import write_json_atomic


@dataclass
class LoopState:
    """Where the training loop stands; saved in every checkpoint so a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of the current epoch already trained on
    best_value: float | None = None
    best_step: int = 0
    best_loss: float | None = None  # validation loss of the best step: breaks ties on --metric
    evals_without_improvement: int = 0
    stopped_early: bool = False
    loss_sum: float = 0.0  # running loss since the last train_log line
    loss_count: int = 0
    samples_seen: int = 0
    train_seconds: float = 0.0


@dataclass
class TrainingRun:
    """Everything the loop works with, built by `bertclf.train` before the first step."""

    config: TrainConfig
    output: Path
    accelerator: Any
    model: Any  # prepared by accelerate (wrapped in DDP when distributed)
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    train_loader: Any
    sampler: Any  # the LengthGroupedSampler behind train_loader
    compute_loss: Any
    space: LabelSpace
    val_encoded: Any
    val_targets: Any
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    eval_every: int

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


class TrainLog:
    """train_log.jsonl lines (main process only), mirrored to --report-to trackers."""

    def __init__(self, path: Path, enabled: bool, append: bool = False, tracker=None):
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


def truncate_log(path: Path, step: int) -> None:
    """Drop train_log.jsonl lines written after the checkpoint being resumed (they will be written again)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


@dataclass
class Resumed:
    state: LoopState
    pending_rng: dict | None  # RNG states to restore once the resumed epoch has started
    path: Path | None  # None: a fresh start


def find_resume_checkpoint(config: TrainConfig, output: Path, fingerprint: dict) -> checkpoint.Checkpoint:
    """--resume's checkpoint, checked against this run's settings and data before any model loads."""
    resumed = checkpoint.find_checkpoint(output, config.resume)
    checkpoint.check_compatible(resumed.state["fingerprint"], fingerprint)
    return resumed


def resume(run: TrainingRun, resumed: checkpoint.Checkpoint) -> Resumed:
    """Load the checkpoint into the run's model, optimizer and scheduler; its loop position."""
    pending_rng = checkpoint.load_training_state(resumed, run.accelerator.unwrap_model(run.model), run.optimizer,
                                                 run.scheduler)
    state = LoopState(**resumed.state["loop"])
    # Replay the checkpoint's batch order exactly: checkpoints that do not say were written with groups of 8.
    run.sampler.group_size = run.global_batch * resumed.state.get("sampler_batches_per_group", 8)
    if state.batches_in_epoch == 0:
        # At an epoch boundary the uninterrupted run starts the next epoch (drawing a loader seed)
        # after this state, so restore it now; mid-epoch that draw already happened: restore later.
        checkpoint.restore_rng(pending_rng)
        pending_rng = None
    return Resumed(state, pending_rng, resumed.path)


def start_position(run: TrainingRun, resumed: checkpoint.Checkpoint | None, manifest: dict) -> Resumed:
    """Step 0, or where --resume's checkpoint left the loop (train and pretrain alike): the checkpoint loaded into
    the run, the log cut back to its step, the manifest told where the run resumed from."""
    if resumed is None:
        return Resumed(LoopState(), None, None)
    restored = resume(run, resumed)
    manifest["resumed_from"] = str(restored.path)
    if run.is_main:
        truncate_log(run.output / "train_log.jsonl", restored.state.step)
        console.info(f"Resuming from {restored.path} (step {restored.state.step} of {run.total_steps}).")
    return restored


class StopSignals:
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


def interrupted_error(signum: int, saved: Path | None, config: TrainConfig) -> InterruptedRunError:
    argv = " ".join(a for a in config.argv[1:] if a not in ("--overwrite", "--resume")) or "train ..."
    error = InterruptedRunError(f"Training interrupted by {signal.Signals(signum).name}; checkpoint written to "
                                f"{saved}.", hint=f"Resume with: bertclf {argv} --resume")
    error.exit_code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
    return error


def is_better(value: float, loss: float, best_value: float | None, best_loss: float | None,
              greater_is_better: bool) -> bool:
    """Does an evaluation with `value` on --metric and validation `loss` beat the best so far? A tie on the
    metric goes to the lower loss: on small validation sets ties are common, and keeping the first tied
    step kept an under-trained model (the demo kept loss 0.98 where a later tied step had 0.69). A best
    without a recorded loss (a checkpoint written before losses were kept) wins its ties."""
    if best_value is None:
        return True
    if value == best_value:
        return best_loss is not None and loss < best_loss
    return value > best_value if greater_is_better else value < best_value


class TrainingLoop:
    """Runs the optimizer steps of a TrainingRun from `state` to its total, evaluating, logging and
    checkpointing on the way. `best_metrics` holds the validation metrics of the best model so far."""

    def __init__(self, run: TrainingRun, log: TrainLog, fingerprint: dict, state: LoopState | None = None,
                 pending_rng: dict | None = None, best_metrics: dict | None = None):
        self.run, self.log, self.fingerprint = run, log, fingerprint
        self.state = state or LoopState()
        self.pending_rng = pending_rng
        self.best_metrics: dict[str, Any] = best_metrics or {}
        self.signals = StopSignals(run.is_main)
        self.stop_hook = int(os.environ.get("BERTCLF_STOP_AFTER_STEP", "0"))  # tests: act as if SIGTERM came then
        self.checkpoints_written = 0  # by this process, in this run: a failed run with none leaves nothing
        self.pending_loss = None  # the running loss sum on the device, not yet read (see read_loss)
        self.loss_read_at = self.state.step  # the step at which it was last read (and finite)
        # Timing: `tick` starts the training time not yet added to train_seconds; the window is the stretch
        # of steps since the last train_log line (for its samples per second).
        self.tick = self.window_start = time.perf_counter()
        self.window_samples = 0
        memory.keep_freed_memory()  # fewer page faults a step (bertclf.memory)
        self.trimmer = memory.Trimmer()
        self.progress = console.make_progress() if run.is_main else None
        self.task = None

    def run_all(self) -> None:
        run, state = self.run, self.state
        from accelerate import skip_first_batches

        self._start_progress()
        run.model.train()
        try:
            with self.signals:
                while state.step < run.total_steps and not state.stopped_early:
                    run.sampler.epoch = state.epoch  # a fresh, reproducible order every epoch
                    # After a resume, skip the batches of this epoch that the checkpoint already trained on.
                    batches = skip_first_batches(run.train_loader, state.batches_in_epoch) \
                        if state.batches_in_epoch else run.train_loader
                    self.tick = time.perf_counter()
                    for batch in batches:
                        if not self._train_on(batch):
                            continue  # gradients still accumulating
                        run.scheduler.step()
                        state.step += 1
                        self._after_optimizer_step()
                        if state.step >= run.total_steps or state.stopped_early:
                            break
                    else:  # the epoch ran to its end
                        state.epoch += 1
                        state.batches_in_epoch = 0
                    state.train_seconds += time.perf_counter() - self.tick
        finally:
            if self.progress:
                self.progress.stop()
            self.log.close()

    def _train_on(self, batch) -> bool:
        """Forward and backward on one batch; True when it completed an optimizer step."""
        run, state, accelerator = self.run, self.state, self.run.accelerator
        if self.pending_rng is not None:
            checkpoint.restore_rng(self.pending_rng)
            self.pending_rng = None
        with accelerator.accumulate(run.model):
            loss = self.batch_loss(batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(run.model.parameters(), run.config.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad()
        # The loss stays on the device until a log line, an evaluation or a checkpoint reads it: reading it every
        # batch (.item()) would make the host wait for the device at each step. Summed in float64 in the same
        # order as before, so the logged losses are the same numbers.
        self.pending_loss = loss.detach().double() + state.loss_sum if self.pending_loss is None \
            else self.pending_loss + loss.detach().double()
        state.loss_count += 1
        state.batches_in_epoch += 1
        batch_samples = batch["input_ids"].shape[0] * accelerator.num_processes  # this process holds 1/N of it
        state.samples_seen += batch_samples
        self.window_samples += batch_samples
        return accelerator.sync_gradients

    def batch_loss(self, batch):
        """The loss of one batch (a subclass, such as pretraining's masked-LM loop, computes its own)."""
        targets = batch.pop("labels")
        return self.run.compute_loss(self.run.model(**batch).logits, targets)

    def _after_optimizer_step(self) -> None:
        run, state, config = self.run, self.state, self.run.config
        self.trimmer.maybe_trim()  # else the kept heap fragments and grows by gigabytes (bertclf.memory)
        if state.step % config.log_every == 0 or state.step == run.total_steps:
            self._log_train_window()
        if self.progress:
            self.progress.update(self.task, completed=state.step,
                                 description=f"epoch {state.step / run.steps_per_epoch:.2f}")
        if state.step % run.eval_every == 0 or state.step == run.total_steps:
            self.read_loss()
            paused = self._pause()
            self.evaluate()
            self.tick = time.perf_counter()
            self.window_start += self.tick - paused  # evaluation time does not count as training time
        if self.stop_hook and state.step == self.stop_hook:
            self.signals.requested = signal.SIGTERM
        if self.signals.requested or (config.save_every and state.step % config.save_every == 0):
            self._pause()
            self.tick = time.perf_counter()
            saved = self.write_checkpoint()
            if self.signals.requested:
                raise interrupted_error(self.signals.requested, saved, config)

    def read_loss(self) -> None:
        """Move the running loss from the device into the state; stop if it is no longer finite."""
        if self.pending_loss is None:
            return
        self.state.loss_sum, self.pending_loss = float(self.pending_loss), None
        if not math.isfinite(self.state.loss_sum):
            since = f"between steps {self.loss_read_at + 1} and {self.state.step}" \
                if self.state.step > self.loss_read_at + 1 else f"at step {self.state.step}"
            raise DivergedError(f"The training loss became {self.state.loss_sum} {since}.",
                                hint="Lower --lr, or check the data for extreme inputs. "
                                "Checkpoints written before this step are intact.")
        self.loss_read_at = self.state.step

    def _pause(self) -> float:
        """Add the training time since `tick` to train_seconds; returns now."""
        now = time.perf_counter()
        self.state.train_seconds += now - self.tick
        return now

    def _start_progress(self) -> None:
        if self.progress:
            self.task = self.progress.add_task("training", total=self.run.total_steps, completed=self.state.step,
                                               status="")
            self.progress.start()

    def _log_train_window(self) -> None:
        self.read_loss()
        run, state = self.run, self.state
        now = time.perf_counter()
        rate = self.window_samples / max(now - self.window_start, 1e-9)
        lr_now = run.scheduler.get_last_lr()[0]
        self.log.write({"type": "train", "step": state.step, "epoch": round(state.step / run.steps_per_epoch, 4),
                        "loss": state.loss_sum / state.loss_count, "learning_rate": lr_now,
                        "samples_per_second": round(rate, 2)})
        if self.progress:
            self.progress.update(self.task, status=f"loss {state.loss_sum / state.loss_count:.4f}  "
                                 f"lr {lr_now:.2e}  {rate:.1f} samples/s")
        state.loss_sum, state.loss_count = 0.0, 0
        self.window_start, self.window_samples = now, 0

    def evaluate(self) -> None:
        """Score the model on validation; save it to the run directory when it is the best so far."""
        from bertclf.inference import predict_probs
        from bertclf.metrics import score

        run, state, config, accelerator = self.run, self.state, self.run.config, self.run.accelerator
        probs = predict_probs(accelerator.unwrap_model(run.model), run.tokenizer, run.val_encoded, run.space,
                              config.batch_size * 2, accelerator=accelerator)
        # Multi-label: scored at thresholds tuned on these probabilities, as predict will use this model.
        # At a fixed 0.5 an early model predicts no label at all and every evaluation ties at F1 0.
        metrics = score(probs, run.val_targets, run.space,
                        tune_thresholds(probs, run.val_targets) if config.multi_label else None)
        value = metrics[config.metric]
        improved = is_better(value, metrics["loss"], state.best_value, state.best_loss, config.greater_is_better)
        if improved:
            state.best_value, state.best_step, self.best_metrics = value, state.step, metrics
            state.best_loss = metrics["loss"]
            state.evals_without_improvement = 0
            self._save_best(metrics)
        else:
            state.evals_without_improvement += 1
            if config.early_stopping and state.evals_without_improvement >= config.early_stopping:
                state.stopped_early = True
        self._report_eval(metrics, value, improved)

    def _save_best(self, metrics: dict) -> None:
        run, accelerator = self.run, self.run.accelerator
        state_dict = accelerator.get_state_dict(run.model)  # a collective: every process takes part
        if run.is_main:  # the run directory always holds the best model so far
            accelerator.unwrap_model(run.model).save_pretrained(str(run.output), safe_serialization=True,
                                                                state_dict=state_dict)
            write_json_atomic(run.output / "metrics.json", {"split": "validation", "step": self.state.step,
                                                            **metrics})

    def _report_eval(self, metrics: dict, value: float, improved: bool) -> None:
        run, state, config = self.run, self.state, self.run.config
        self.log.write({"type": "eval", "step": state.step, "epoch": round(state.step / run.steps_per_epoch, 4),
                        **{f"val_{k}": v for k, v in scalar_metrics(metrics).items()}, "best": improved,
                        # training-loop seconds so far, evaluations excluded: time-to-accuracy curves read it
                        "train_seconds": round(state.train_seconds, 3)})
        if run.is_main:
            accuracy = "subset_accuracy" if config.multi_label else "accuracy"
            console.info(f"step {state.step}/{run.total_steps} (epoch {state.step / run.steps_per_epoch:.2f}): "
                         f"validation {config.metric} {value:.4f}, {accuracy.replace('_', ' ')} "
                         f"{metrics[accuracy]:.4f}, loss {metrics['loss']:.4f}"
                         f"{'  best' if improved else ''}{'  early stop' if state.stopped_early else ''}")

    def write_checkpoint(self) -> Path | None:
        self.read_loss()
        run, state = self.run, self.state
        state_dict = run.accelerator.get_state_dict(run.model)
        path = None
        if run.is_main:
            position = asdict(state)
            if state.batches_in_epoch >= len(run.train_loader):  # the epoch is done: resume at the next one
                position.update(epoch=state.epoch + 1, batches_in_epoch=0)
            path = checkpoint.save_checkpoint(run.output, step=state.step, model_state=state_dict,
                                              optimizer=run.optimizer, scheduler=run.scheduler,
                                              keep=run.config.keep,
                                              loop_state={"loop": position, "fingerprint": self.fingerprint,
                                                          "sampler_batches_per_group":
                                                              run.sampler.group_size // run.global_batch})
            self.checkpoints_written += 1
        run.accelerator.wait_for_everyone()
        return path
