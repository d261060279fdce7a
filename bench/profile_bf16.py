#!/usr/bin/env python
"""Where a bf16 training step spends its time (issue 18, item 3): torch.profiler over bertclf's own training step.

    .venv/bin/python bench/profile_bf16.py                       # MiniLM, en_wordnet_verbs batches, bf16 and fp32
    .venv/bin/python bench/profile_bf16.py --model base --steps 4  # bert-base-chinese's shape on zh_reviews

Runs `--steps` optimizer steps of real length-grouped batches (bertclf's sampler, batch 32) under accelerate's
autocast as `bertclf train --mixed-precision bf16` does, after two warm-up steps, and prints the operators that
took the most CPU time, grouped into matmuls (addmm/mm/bmm/linear), attention, normalisation and softmax,
element-wise work and dtype casts, the optimizer, and the rest; each with its share of the step. The part of the
step outside the bf16 matmuls is what keeps bf16 from its matmul peak. Writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

GROUPS = (
    ("matmul", ("addmm", "aten::mm", "bmm", "linear", "matmul", "baddbmm")),
    ("attention", ("attention", "sdpa", "flash")),
    ("norm/softmax", ("layer_norm", "softmax", "log_softmax", "nll_loss", "cross_entropy")),
    ("casts/copies", ("aten::to", "_to_copy", "copy_", "clone", "contiguous")),
    ("optimizer", ("adam", "_foreach", "optimizer", "lerp", "addcdiv", "addcmul", "sqrt", "zero_")),
    ("element-wise", ("gelu", "add", "mul", "div", "dropout", "where", "masked_fill", "sub", "tanh")),
)


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, keys in GROUPS:
        if any(key in lowered for key in keys):
            return group
    return "other"


def batches(model_dir: Path, dataset: str, batch_size: int, count: int):
    import csv

    from bertclf.encoding import EncodingSpec, LengthGroupedSampler, encode, padding_collator
    from bertclf.model import load_tokenizer

    with (ROOT.parent / "shared" / "data" / dataset / "train.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = sorted({r["label"] for r in rows})
    tokenizer = load_tokenizer(model_dir)
    encoded = encode(tokenizer, [r["text"] for r in rows], EncodingSpec(128, "head+tail"))
    order = list(LengthGroupedSampler(encoded.lengths, batch_size, 42))
    collate = padding_collator(tokenizer)
    out = []
    for start in range(0, count * batch_size, batch_size):
        items = [{"input_ids": encoded.input_ids[i], "labels": labels.index(rows[i]["label"])}
                 for i in order[start:start + batch_size]]
        out.append(collate(items))
    return out, len(labels)


def profile(model_dir: Path, dataset: str, precision: str, steps: int) -> None:
    import torch
    from accelerate import Accelerator
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    from transformers import BertForSequenceClassification

    data, num_labels = batches(model_dir, dataset, 32, steps + 2)
    from accelerate.state import AcceleratorState

    from bertclf.train import _build_optimizer

    model = BertForSequenceClassification.from_pretrained(str(model_dir), num_labels=num_labels)
    AcceleratorState._reset_state(True)  # one process profiles several precisions; accelerate keeps one state
    accelerator = Accelerator(cpu=True, mixed_precision=precision)
    optimizer = _build_optimizer(model, SimpleNamespace(weight_decay=0.01), 1e-4)  # bertclf's (fused AdamW)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    def step(batch) -> None:
        batch = dict(batch)
        targets = batch.pop("labels")
        loss = torch.nn.functional.cross_entropy(model(**batch).logits.float(), targets)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()

    for batch in data[:2]:
        step(batch)
    started = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in data[2:]:
            step(batch)
    wall = time.perf_counter() - started
    totals: dict[str, float] = defaultdict(float)
    ops = []
    for event in prof.key_averages():
        totals[group_of(event.key)] += event.self_cpu_time_total
        ops.append((event.self_cpu_time_total, event.key, event.count))
    whole = sum(totals.values()) or 1.0
    tokens = sum(int(b["input_ids"].numel()) for b in data[2:])
    print(f"\n{precision}: {steps} steps in {wall:.2f} s ({steps * 32 / wall:.1f} samples/s, {tokens} padded tokens)")
    for group, micros in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {group:14} {micros / whole:6.1%}")
    print("  top operators (self CPU time):")
    for micros, key, count in sorted(ops, reverse=True)[:12]:
        print(f"    {micros / whole:6.1%}  {key} x{count}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["minilm", "base"], default="minilm")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--precisions", default="bf16,no")
    args = parser.parse_args()
    import tempfile

    from gpu_check import MODELS, _minilm_dir, base_model_dir

    dataset, shape = MODELS[args.model]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = base_model_dir(Path(tmp), shape) if shape else _minilm_dir()
        for precision in args.precisions.split(","):
            profile(model_dir, dataset, precision, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
