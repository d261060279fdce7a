"""The one inference engine: encoded texts to logits or probabilities, in input order.

Texts run longest first, in batches capped by text count and (on a CPU) by padded tokens, with the last layer
computing only the [CLS] position the classifier reads. Training's validation, `eval`, `predict` (and later
`serve` and `export`'s parity check) all call `predict_logits` / `predict_probs` here.
"""

from __future__ import annotations

import numpy as np

from bertclf.encoding import Encoded, EncodedDataset, padding_collator, pool_windows
from bertclf.labels import LabelSpace

# On CPU, batches hold at most this many tokens (padding included) as well as at most batch_size texts.
# Measured with MiniLM on 2 cores, en_wordnet_verbs test: fixed batches of 64 length-sorted texts pad short
# texts by 13% (315 texts/s); a 1,024-token cap cuts that to 5% (356 texts/s), while 4,096 tokens was slower
# again (317: wider batches, more padding). zh_reviews: 302 vs 361 texts/s. On a GPU larger batches only help,
# so there only batch_size counts.
CPU_TOKENS_PER_BATCH = 1024
# A model cast to bf16 wants wider batches: on an AMX CPU (2 cores) a base-size BERT predicted zh_reviews at
# 28.3 texts/s with 2,048 tokens a batch against 20.1 with 1,024, 24.1 with 1,536 and 25.6 with 3,072 (5
# interleaved repeats, medians); MiniLM on en_wordnet_verbs was the same at 1,024 and 2,048 (489 vs 483).
CPU_TOKENS_PER_BATCH_BF16 = 2048


def cpu_token_budget(precision: str) -> int:
    """The padded tokens a CPU batch may hold when predicting in `precision` (fp32 or bf16)."""
    return CPU_TOKENS_PER_BATCH_BF16 if precision == "bf16" else CPU_TOKENS_PER_BATCH


class _Reordered:
    """A view of a dataset in a given index order (here: longest texts first)."""

    def __init__(self, dataset, order: list[int]):
        self.dataset, self.order = dataset, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int):
        return self.dataset[self.order[index]]


def length_sorted_order(encoded: Encoded) -> list[int]:
    # Longest first: batches hold texts of similar length, so little padding, and an out-of-memory
    # error, if any, comes at the first batch rather than the last.
    return sorted(range(len(encoded)), key=lambda i: -len(encoded.input_ids[i]))


def token_budget_batches(lengths: list[int], order: list[int], max_texts: int,
                         max_tokens: int | None) -> list[list[int]]:
    """Cut `order` (longest first) into consecutive batches of at most max_texts texts and, if given, at most
    max_tokens tokens once padded to the batch's first (longest) text. A text longer than max_tokens gets
    a batch of its own."""
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for index in order:
        if current and (len(current) >= max_texts or
                        (max_tokens is not None and (len(current) + 1) * width > max_tokens)):
            batches.append(current)
            current = []
        if not current:
            width = lengths[index]
        current.append(index)
    if current:
        batches.append(current)
    return batches


def predict_logits(model, tokenizer, encoded: Encoded, batch_size: int, *, accelerator=None,
                   device=None, precision: str = "fp32") -> np.ndarray:
    """Logits (n_texts, n_labels) in input order. With an accelerator, work is sharded across processes
    and gathered with gather_for_metrics, so each example counts once. precision "bf16" runs the batches
    in bf16 (a model cast by bertclf.precision.cast_model, or under autocast); the logits come back as fp32."""
    import torch
    from torch.utils.data import DataLoader

    from bertclf.cls_only import cls_only_last_layer
    from bertclf.precision import autocast

    order = length_sorted_order(encoded)
    if accelerator is not None:
        # Fixed-size batches, split across processes (split_batches), so each still gets about batch_size
        # texts; gather_for_metrics relies on equal batch sizes to drop the padding of the last batch.
        loader = DataLoader(_Reordered(EncodedDataset(encoded), order),
                            batch_size=batch_size * accelerator.num_processes, shuffle=False,
                            collate_fn=padding_collator(tokenizer))
        loader = accelerator.prepare_data_loader(loader)
        device = accelerator.device
    else:
        on_cpu = device is None or torch.device(device).type == "cpu"
        budget = cpu_token_budget(precision) if on_cpu else None
        batches = token_budget_batches(encoded.lengths, order, batch_size, budget)
        loader = DataLoader(EncodedDataset(encoded), batch_sampler=batches, collate_fn=padding_collator(tokenizer))
    was_training = model.training
    model.eval()
    chunks = []
    with torch.inference_mode(), cls_only_last_layer(model), autocast(precision, device or "cpu", model):
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()} if device is not None else batch
            logits = model(**batch).logits.float()
            if accelerator is not None:
                logits = accelerator.gather_for_metrics(logits)
            chunks.append(logits.cpu())
    if was_training:
        model.train()
    sorted_logits = torch.cat(chunks).numpy() if chunks else np.zeros((0, model.config.num_labels), np.float32)
    logits = np.empty_like(sorted_logits)
    logits[np.asarray(order, dtype=np.int64)] = sorted_logits
    return logits


def predict_probs(model, tokenizer, encoded: Encoded, space: LabelSpace, batch_size: int, *, accelerator=None,
                  device=None, precision: str = "fp32") -> np.ndarray:
    """Probabilities (n_texts, n_labels) in input order: softmax, or a sigmoid per label for multi-label;
    a text split into windows (--long-text chunks) gets the mean over its windows."""
    logits = predict_logits(model, tokenizer, encoded, batch_size, accelerator=accelerator, device=device,
                            precision=precision)
    return pool_windows(space.probabilities(logits), encoded)
