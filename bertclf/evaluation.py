"""Inference over encoded texts in length-sorted batches, and the `bertclf eval` command's core."""

from __future__ import annotations

import numpy as np

from bertclf.data import Encoded, EncodedDataset, padding_collator


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


def predict_logits(model, tokenizer, encoded: Encoded, batch_size: int, *, accelerator=None,
                   device=None) -> np.ndarray:
    """Logits (n_texts, n_labels) in input order. With an accelerator, work is sharded across processes
    and gathered with gather_for_metrics, so each example counts once."""
    import torch
    from torch.utils.data import DataLoader

    order = length_sorted_order(encoded)
    loader = DataLoader(_Reordered(EncodedDataset(encoded), order), batch_size=batch_size, shuffle=False,
                        collate_fn=padding_collator(tokenizer))
    if accelerator is not None:
        loader = accelerator.prepare_data_loader(loader)
        device = accelerator.device
    was_training = model.training
    model.eval()
    chunks = []
    with torch.inference_mode():
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


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, label_ids: np.ndarray) -> float:
    probs = softmax(logits.astype(np.float64))
    picked = probs[np.arange(len(label_ids)), label_ids]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def score_logits(logits: np.ndarray, label_ids: np.ndarray, labels: list[str]) -> dict:
    """All metrics for logits against gold label ids, plus the loss."""
    from bertclf.metrics import classification_metrics

    probs = softmax(logits)
    metrics = classification_metrics(label_ids, probs.argmax(axis=1), labels, probs)
    metrics["loss"] = cross_entropy(logits, label_ids)
    return metrics
