"""Resumable training state, written so that no crash, kill or full disk can leave a broken checkpoint
where a good one was.

A checkpoint is a directory `checkpoints/step-N` holding the model (safetensors), the optimizer state
(a tensor-only file read back with torch.load(weights_only=True)), the RNG states and a JSON file with
the loop position, the best metric so far and a fingerprint of the settings that must not change on
resume. It is written under a temporary name, verified, then renamed into place; older checkpoints
are deleted only after that, so the newest complete checkpoint always survives.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from bertclf import console
from bertclf.digest import file_sha256
from bertclf.errors import OutputError, UsageError

STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.safetensors"
FORMAT_VERSION = 1

# Settings that define the training trajectory: resuming with any of them changed is refused.
FINGERPRINT_FIELDS = ("model", "max_length", "truncation", "batch_size", "lr", "weight_decay", "warmup_ratio",
                      "grad_accum", "max_grad_norm", "seed", "validation_split", "text_column", "label_column",
                      "metric", "mixed_precision", "class_weights", "text_pair_column", "multi_label",
                      "label_separator", "long_text", "stride", "pooling")
# Fields added after the first release: a checkpoint written before holds the settings they default to.
ADDED_FIELD_DEFAULTS = {"text_pair_column": None, "multi_label": False, "label_separator": ",",
                        "long_text": "truncate", "stride": None, "pooling": "auto"}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class Checkpoint:
    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def checkpoint_root(output: Path) -> Path:
    return output / "checkpoints"


def save_checkpoint(output: Path, *, step: int, model_state: dict, optimizer, scheduler, loop_state: dict,
                    keep: int) -> Path:
    """Write checkpoints/step-<step> atomically, then delete all but the `keep` newest complete ones."""
    import torch
    from safetensors.torch import save_file

    root = checkpoint_root(output)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        # Shared tensors (tied embeddings) must be cloned for safetensors.
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in model_state.items()}, str(tmp / MODEL_FILE))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / OPTIMIZER_FILE)
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            for index, state in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{index}"] = state
        save_file(rng, str(tmp / RNG_FILE))
        state = {**loop_state, "step": step, "format_version": FORMAT_VERSION,
                 "sha256": {name: file_sha256(tmp / name) for name in (MODEL_FILE, OPTIMIZER_FILE, RNG_FILE)}}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        for name in (MODEL_FILE, OPTIMIZER_FILE, RNG_FILE, STATE_FILE):
            with (tmp / name).open("rb") as handle:
                os.fsync(handle.fileno())
        if validate(tmp) is None:
            raise OSError(f"checkpoint {tmp} did not verify after writing")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"Cannot write checkpoint {final}: {exc.strerror or exc}.",
                          hint="Free disk space or fix permissions, then resume with --resume; earlier "
                          "checkpoints are intact.") from None
    _rotate(root, keep)
    return final


def _rotate(root: Path, keep: int) -> None:
    complete = sorted(list_checkpoints(root, warn=False), key=lambda c: c.step)
    for old in complete[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)


def validate(path: Path) -> Checkpoint | None:
    """The checkpoint at `path` if every file is present and matches its recorded hash, else None."""
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if state.get("format_version") != FORMAT_VERSION:
            return None
        for name, digest in state["sha256"].items():
            if file_sha256(path / name) != digest:
                return None
        return Checkpoint(path, state)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_checkpoints(root: Path, warn: bool = True) -> list[Checkpoint]:
    """Valid checkpoints under `root`, newest last; invalid ones are skipped with a warning."""
    found: list[Checkpoint] = []
    if not root.is_dir():
        return found
    for path in sorted(root.glob("step-*")):
        checkpoint = validate(path)
        if checkpoint is None:
            if warn:
                console.warn(f"Skipping checkpoint {path}: incomplete or damaged.")
            continue
        found.append(checkpoint)
    return sorted(found, key=lambda c: c.step)


def find_checkpoint(output: Path, requested: str) -> Checkpoint:
    """--resume (newest valid checkpoint of --output) or --resume PATH."""
    if requested != "latest":
        path = Path(requested)
        checkpoint = validate(path)
        if checkpoint is None:
            raise UsageError(f"--resume {path}: not a complete, valid bertclf checkpoint.",
                             hint=f"Use --resume alone to pick the newest valid one in {output}/checkpoints.")
        return checkpoint
    candidates = list_checkpoints(checkpoint_root(output))
    if not candidates:
        raise UsageError(f"--resume: no valid checkpoint in {checkpoint_root(output)}.",
                         hint="Train with --save-every N to write checkpoints, or start without --resume.")
    return candidates[-1]


def fingerprint(config_dict: dict, data_hashes: dict, labels: list[str]) -> dict:
    return {**{k: config_dict.get(k) for k in FINGERPRINT_FIELDS}, "data": data_hashes, "labels": labels}


def check_compatible(saved: dict, current: dict) -> None:
    """Refuse to resume when data or a trajectory-defining setting changed (epochs and the like may)."""
    changed = [key for key in current if saved.get(key, ADDED_FIELD_DEFAULTS.get(key)) != current.get(key)]
    if changed:
        details = "; ".join(f"{key}: {saved.get(key)!r} then, {current.get(key)!r} now" for key in changed)
        raise UsageError(f"Cannot resume: settings or data differ from the checkpoint ({details}).",
                         hint="Resume with the original data and settings (only --epochs, --max-steps, "
                         "--eval-every, --early-stopping, --save-every, --keep and --log-every may change).")


def load_training_state(checkpoint: Checkpoint, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer and scheduler in place; return the RNG states for restore_rng()."""
    import torch
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(checkpoint.path / MODEL_FILE)))
    except RuntimeError as exc:  # missing or unexpected tensors, other shapes
        first = " ".join(str(exc).strip().splitlines()[:2])[:300]
        _refuse(checkpoint, f"its weights do not fit the model built now ({first})")
    saved = torch.load(checkpoint.path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    # A checkpoint from before bertclf.used_rows holds moments for the whole embedding matrix. torch loads
    # optimizer state without comparing shapes, and the fused step then ran on the mismatched moments without an
    # error (tests/test_resume.py): refused here instead.
    for group in optimizer.param_groups:
        for param in group["params"]:
            moment = optimizer.state.get(param, {}).get("exp_avg")
            if moment is not None and moment.shape != param.shape:
                _refuse(checkpoint, f"its optimizer state holds a {tuple(moment.shape)} tensor for a "
                        f"{tuple(param.shape)} parameter")
    scheduler.load_state_dict(saved["scheduler"])
    return load_file(str(checkpoint.path / RNG_FILE))


def _refuse(checkpoint: Checkpoint, why: str) -> NoReturn:
    raise UsageError(f"--resume {checkpoint.path}: {why}; it was written by another bertclf version or another "
                     "model.", hint="Resume with the bertclf release that wrote it, or train again without --resume."
                     ) from None


def restore_rng(rng: dict) -> None:
    """Put the random generators back where the checkpoint left them. Call it after the data loader has
    started its epoch: starting one draws a seed from the global generator."""
    import torch

    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if states:
            torch.cuda.set_rng_state_all(states)
