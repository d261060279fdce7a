"""Inference precision (`--precision` of predict, eval and serve): fp32, or bf16 where it is both fast and safe.

bf16 is fast only on hardware that computes it natively: GPUs with bf16 (Ampere and later) and CPUs with AMX or
AVX512-BF16. Elsewhere the CPU emulates it, about 8x slower than fp32 (shared/research/performance.md). It is
safe only if it gives the labels fp32 gives: training checks that on its validation texts, where the hardware has
native bf16, and records the share of texts whose label(s) agree in the manifest (`inference.bf16`).

`auto` (the default) predicts in bf16 when the device has native bf16 and that recorded agreement is at least
MIN_BF16_AGREEMENT; otherwise in fp32. A run trained without the check (on hardware without native bf16, or by an
older bertclf) is predicted in fp32. bf16 casts the whole model's weights to bf16 once (`cast_model`), so every
batch runs in bf16 without recasting each weight matrix: autocast recast them on every batch. On a CPU with AMX
(2 cores, 3 interleaved repeats) a base-size BERT predicted 1.9x fp32's texts/s under autocast and 2.8x cast
(3.7x with bf16's wider batches, inference.CPU_TOKENS_PER_BATCH_BF16); MiniLM 1.8x and 2.1x, with the same labels
as fp32 on 99.8% and 99.6% of en_wordnet_verbs' test texts. A model left in fp32 (a caller that did not cast it)
still runs its matmuls in bf16 under autocast.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertclf import console
from bertclf.config import check_precision

# The share of validation texts whose label(s) must agree between bf16 and fp32 for `auto` to choose bf16: the
# same bar as the int8 checks (issue 18: the same labels on >= 99.5% of texts).
MIN_BF16_AGREEMENT = 0.995


def cpu_has_native_bf16(cpu_flags: str | None = None) -> bool:
    """AMX or AVX512-BF16 (Linux's /proc/cpuinfo flags; False where that file cannot be read)."""
    if cpu_flags is None:
        try:
            cpu_flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpu_flags = ""
    return "amx_bf16" in cpu_flags or "avx512_bf16" in cpu_flags


def native_bf16(device) -> bool:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and cpu_has_native_bf16()


def cast_model(model, precision: str):
    """The model, in place, in the dtype `precision` predicts in: bf16 weights for bf16, unchanged for fp32."""
    import torch

    if precision == "bf16":
        model.to(torch.bfloat16)
    return model


def autocast(precision: str, device, model=None):
    """The context predict_logits runs its batches in: bf16 autocast for an fp32 model predicted in bf16;
    nothing for fp32, or for a model already cast to bf16 (cast_model)."""
    import torch

    if precision != "bf16" or getattr(model, "dtype", None) == torch.bfloat16:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@dataclass(frozen=True)
class Choice:
    precision: str  # "fp32" or "bf16"
    reason: str  # why, in words, for --json reports and the serve /info

    def to_dict(self) -> dict[str, str]:
        return {"precision": self.precision, "reason": self.reason}


def resolve_precision(requested: str, device, manifest: dict, *, backend: str = "torch",
                      quantize: str | None = None) -> Choice:
    """The precision predict/eval/serve run in (see the module docstring)."""
    check_precision(requested, backend=backend, quantize=quantize)
    if backend != "torch" or quantize:
        return Choice("fp32", f"{'int8' if quantize else backend} model: --precision does not apply")
    if requested == "fp32":
        return Choice("fp32", "--precision fp32")
    native = native_bf16(device)
    if requested == "bf16":
        if not native:
            console.warn("--precision bf16 on a device without native bf16 (a CPU without AMX or AVX512-BF16): "
                         "it is emulated there, several times slower than fp32.")
        return Choice("bf16", "--precision bf16")
    if not native:
        return Choice("fp32", "no native bf16 on this device")
    check = (manifest.get("inference") or {}).get("bf16")
    if not check:
        return Choice("fp32", "bf16 labels were not checked against fp32 when this run was trained")
    share = f"{check['label_agreement']:.2%} of {check['texts']} validation texts"
    if check["label_agreement"] < MIN_BF16_AGREEMENT:
        return Choice("fp32", f"bf16 labels agreed with fp32 on only {share}")
    return Choice("bf16", f"native bf16; its labels agreed with fp32 on {share}")


def label_agreement(fp32: np.ndarray, bf16: np.ndarray, thresholds: np.ndarray | None) -> float:
    """The share of texts with the same label (single-label: the most probable; multi-label: the same set of
    labels over their thresholds)."""
    if len(fp32) == 0:
        return 1.0
    if thresholds is None:
        same = fp32.argmax(axis=1) == bf16.argmax(axis=1)
    else:
        same = ((fp32 >= thresholds) == (bf16 >= thresholds)).all(axis=1)
    return float(same.mean())


def check_bf16_labels(run_dir: Path, tokenizer, encoded, space, thresholds: np.ndarray | None, batch_size: int,
                      device, fp32: np.ndarray | None = None) -> dict[str, Any] | None:
    """At the end of training: the saved best model's validation labels in bf16 against fp32, for the manifest's
    `inference.bf16`. None where the device has no native bf16 (auto would not use bf16 there anyway). `fp32`:
    the saved model's fp32 validation probabilities where the caller already has them (calibration, thresholds:
    the same batches, so the same numbers), which spares a pass over validation."""
    from bertclf.inference import predict_probs
    from bertclf.model import load_run_model

    if len(encoded) == 0 or not native_bf16(device):
        return None
    model = load_run_model(run_dir).to(device)
    if fp32 is None:
        fp32 = predict_probs(model, tokenizer, encoded, space, batch_size, device=device)
    # The bf16 labels as predict computes them: the model cast to bf16 (cast_model).
    bf16 = predict_probs(cast_model(model, "bf16"), tokenizer, encoded, space, batch_size, device=device,
                         precision="bf16")
    del model
    agreement = label_agreement(fp32, bf16, thresholds)
    return {"texts": int(len(fp32)), "label_agreement": round(agreement, 6),
            "max_probability_difference": round(float(np.abs(fp32 - bf16).max()), 6),
            "checked_on": "validation"}
