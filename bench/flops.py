"""Model FLOPs for BERT classifiers (shared/research/performance.md section 3) and token statistics of batches.

Per token, with N the encoder's non-embedding parameters, L layers, d hidden size and T the attended length:
forward 2N + 4·L·d·T, training 6N + 12·L·d·T. The pooler and classifier act once per sequence. Summing over the
sequences of a batch, the attention term needs sum(T²): the real length of each text for "useful" FLOPs, the
padded batch length for "hardware" FLOPs (what the CPU actually multiplied).
"""

from __future__ import annotations

import json
from pathlib import Path


def dims(model_dir: Path, num_labels: int) -> dict:
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    d, ff, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    # Per layer: Q, K, V and output projections, two feed-forward matrices, two LayerNorms (with biases).
    per_layer = 4 * (d * d + d) + (d * ff + ff) + (ff * d + d) + 2 * (2 * d)
    return {"N": layers * per_layer, "L": layers, "d": d, "head": d * d + d + d * num_labels + num_labels}


def batch_stats(lengths: list[int], batches: list[list[int]], *, pad_to: int | None = None) -> dict:
    """Token counts for batches (lists of indices into lengths): real tokens and padded tokens, with sum(T²)."""
    real = real_sq = padded = padded_sq = sequences = 0
    for batch in batches:
        sizes = [lengths[i] for i in batch]
        width = pad_to or max(sizes)
        sequences += len(sizes)
        real += sum(sizes)
        real_sq += sum(t * t for t in sizes)
        padded += width * len(sizes)
        padded_sq += width * width * len(sizes)
    return {"sequences": sequences, "real_tokens": real, "real_sq": real_sq, "padded_tokens": padded,
            "padded_sq": padded_sq, "padding_fraction": 1 - real / padded if padded else 0.0}


def model_flops(stats: dict, dim: dict, *, training: bool, cls_only: bool = False) -> dict:
    """FLOPs for the tokens in stats: useful (real tokens only) and hardware (padding included).

    cls_only: bertclf's inference shortcut (bertclf/cls_only.py). The last layer projects keys and values for
    every token, but its query, attention output and feed-forward block run for [CLS] alone, and its attention
    has one query per sequence; the FLOPs counted are those that computation needs.
    """
    k = 3 if training else 1  # backward costs about twice the forward pass
    layers, d = dim["L"], dim["d"]
    head = 2 * dim["head"] * stats["sequences"]

    def total(tokens: int, sq: int) -> float:
        if not cls_only:
            return k * (2 * dim["N"] * tokens + 4 * layers * d * sq + head)
        per_layer = dim["N"] / layers
        key_value = 2 * (d * d + d)  # parameters of the key and value projections
        first = (layers - 1) * (2 * per_layer * tokens + 4 * d * sq)
        last = 2 * key_value * tokens + 2 * (per_layer - key_value) * stats["sequences"] + 4 * d * tokens
        return k * (first + last + head)

    return {"useful": total(stats["real_tokens"], stats["real_sq"]),
            "hardware": total(stats["padded_tokens"], stats["padded_sq"])}


def mfu(stats: dict | None, dim: dict | None, seconds: float | None, peak_flops: float | None, *,
        training: bool, cls_only: bool = False) -> dict | None:
    """Useful and hardware utilisation of the measured peak for work done in `seconds`."""
    if not (stats and dim and seconds and peak_flops):
        return None
    flops = model_flops(stats, dim, training=training, cls_only=cls_only)
    return {"useful": flops["useful"] / seconds / peak_flops, "hardware": flops["hardware"] / seconds / peak_flops,
            "useful_gflops_per_s": flops["useful"] / seconds / 1e9, "padding_fraction": stats["padding_fraction"]}

