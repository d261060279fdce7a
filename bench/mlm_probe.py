"""What has a `bertclf pretrain` model learned of its neighbours? (issue 17: why pre-training did not help)

Masks 15% of the tokens of held-out texts (one fixed draw) and compares, on the same positions:
- the model's masked-token accuracy (every masked token replaced by [MASK], the rest of the text intact);
- count-based predictors built from the corpus with the model's own tokenizer: the most frequent token overall
  (unigram), the most frequent token after the left neighbour (left bigram), the most frequent token between the
  two neighbours (falling back to the left bigram, then the unigram);
and prints each attention head's mean weight on the tokens 2 before to 2 after a position (uniform attention over
L tokens gives about 1/L at every offset). Writes nothing; prints a JSON document.

    .venv/bin/python bench/mlm_probe.py PRETRAIN_DIR CORPUS.txt HELD_OUT.csv [--texts 500]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

MASK_RATE = 0.15
OFFSETS = (-2, -1, 0, 1, 2)


def count_predictors(token_ids: list[list[int]]):
    """Counters of the token at a position: overall, after a left neighbour, between two neighbours."""
    unigram, left, both = Counter(), defaultdict(Counter), defaultdict(Counter)
    for ids in token_ids:
        padded = [-1, *ids, -2]  # -1 / -2: the text's start and end
        for i in range(1, len(padded) - 1):
            unigram[padded[i]] += 1
            left[padded[i - 1]][padded[i]] += 1
            both[padded[i - 1], padded[i + 1]][padded[i]] += 1
    return unigram, left, both


def count_accuracies(held_out: list[list[int]], masked: list[list[int]], counters) -> dict[str, float]:
    unigram, left, both = counters
    top = unigram.most_common(1)[0][0]
    hits, total = Counter(), 0
    for ids, positions in zip(held_out, masked, strict=True):
        padded = [-1, *ids, -2]
        for i in positions:
            target, before, after = padded[i + 1], padded[i], padded[i + 2]
            after_left = left[before].most_common(1)[0][0] if left.get(before) else top
            between = both[before, after].most_common(1)[0][0] if both.get((before, after)) else after_left
            hits["unigram"] += target == top
            hits["left_bigram"] += target == after_left
            hits["both_neighbours"] += target == between
            total += 1
    return {name: round(hits[name] / total, 4) for name in ("unigram", "left_bigram", "both_neighbours")}


def model_probe(model_dir: Path, held_out: list[list[int]], masked: list[list[int]], tokenizer) -> dict:
    """Masked-token accuracy on the chosen positions and each head's attention by offset."""
    import torch
    from transformers import BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    hits = total = 0
    attention = None
    with torch.no_grad():
        for ids, positions in zip(held_out, masked, strict=True):
            if not positions:
                continue
            inputs = [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]
            for i in positions:
                inputs[i + 1] = tokenizer.mask_token_id
            out = model(input_ids=torch.tensor([inputs]), output_attentions=True)
            predicted = out.logits[0].argmax(-1)
            hits += sum(int(predicted[i + 1]) == ids[i] for i in positions)
            total += len(positions)
            attention = _add_offsets(attention, out.attentions, len(inputs))
    heads = {f"layer {layer} head {head}": {str(offset): round(sums[offset] / counts[offset], 4)
                                            for offset in OFFSETS}
             for (layer, head), (sums, counts) in sorted(attention.items())}
    return {"masked_accuracy": round(hits / total, 4), "masked_tokens": total, "attention_by_offset": heads}


def _add_offsets(acc, attentions, length: int):
    acc = acc if acc is not None else {}
    for layer, weights in enumerate(attentions):  # (1, heads, L, L)
        for head in range(weights.shape[1]):
            sums, counts = acc.setdefault((layer, head), (Counter(), Counter()))
            for offset in OFFSETS:
                diagonal = weights[0, head].diagonal(offset)  # weight of position i on i + offset
                sums[offset] += float(diagonal.sum())
                counts[offset] += diagonal.numel()
    return acc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("corpus", type=Path, help="the .txt corpus (one text a line) the counts are built from")
    parser.add_argument("held_out", type=Path, help="a CSV with a text column, none of it in the corpus")
    parser.add_argument("--texts", type=int, default=500, help="held-out texts to probe")
    parser.add_argument("--max-tokens", type=int, default=254)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(args.model_dir))
    lines = [line for line in args.corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    corpus_ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
    with args.held_out.open(encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][: args.texts]
    held_out = [ids[: args.max_tokens] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    draw = random.Random(0)
    masked = [[i for i in range(len(ids)) if draw.random() < MASK_RATE] for ids in held_out]
    report = {"model_dir": str(args.model_dir), "corpus": str(args.corpus), "held_out": str(args.held_out),
              "texts": len(held_out), "counts": count_accuracies(held_out, masked, count_predictors(corpus_ids)),
              "model": model_probe(args.model_dir, held_out, masked, tokenizer)}
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
