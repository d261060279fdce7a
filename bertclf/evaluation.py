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
        # Batches are split across processes (split_batches), so each still gets about batch_size texts.
        loader = DataLoader(loader.dataset, batch_size=batch_size * accelerator.num_processes, shuffle=False,
                            collate_fn=loader.collate_fn)
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


def evaluate(config) -> dict:
    """Score a run directory on a labelled file. Returns the report: metrics, counts, timings, errors."""
    import time

    from bertclf import console
    from bertclf.data import encode_texts, read_labelled, unknown_labels
    from bertclf.errors import DataError
    from bertclf.predict import Predictor

    started = time.perf_counter()
    from bertclf.model import read_manifest

    manifest = read_manifest(config.run_dir)  # before reading data: a wrong run dir is the likelier mistake
    data = read_labelled(config.data_file, text_column=config.text_column or manifest.get("text_column"),
                         label_column=config.label_column or manifest.get("label_column"),
                         encoding=config.encoding, fmt=config.data_format, drop_empty=config.drop_empty)
    predictor = Predictor.from_dir(config.run_dir, cpu=config.cpu, max_length=config.max_length,
                                   truncation=config.truncation, quantize=config.quantize)
    labels = predictor.labels
    unseen = unknown_labels(data.labels, labels)
    keep = list(range(len(data.texts)))
    if unseen:
        listed = ", ".join(f"{label!r} ({count})" for label, count in unseen.most_common())
        if not config.ignore_unknown_labels:
            raise DataError(f"{config.data_file}: labels the model never saw: {listed}. The model knows: "
                            f"{', '.join(labels)}.", hint="Fix the labels, or pass --ignore-unknown-labels to "
                            "leave those rows out.")
        keep = [i for i in keep if data.labels[i] in labels]
        console.warn(f"Left out {len(data.texts) - len(keep)} row(s) with labels the model never saw: {listed}.")
    texts = [data.texts[i] for i in keep]
    gold = np.asarray([labels.index(data.labels[i]) for i in keep])
    load_seconds = time.perf_counter() - started
    tick = time.perf_counter()
    encoded = encode_texts(predictor.tokenizer, texts, predictor.max_length, predictor.truncation)
    logits = predict_logits(predictor.model, predictor.tokenizer, encoded, config.batch_size,
                            device=predictor.device)
    predict_seconds = time.perf_counter() - tick
    metrics = score_logits(logits, gold, labels)
    probs = softmax(logits)
    predicted = probs.argmax(axis=1)
    errors = [
        {"row": data.row_numbers[i], "text": texts[j], "gold": labels[gold[j]], "predicted": labels[predicted[j]],
         "confidence": float(probs[j, predicted[j]])}
        for j, i in enumerate(keep) if predicted[j] != gold[j]
    ]
    return {
        "run_dir": str(config.run_dir),
        "data": data.table.describe(),
        "rows": len(data.texts),
        "rows_evaluated": len(texts),
        "rows_ignored_unknown_label": len(data.texts) - len(texts),
        "truncated": encoded.truncated,
        "max_length": predictor.max_length,
        "truncation": predictor.truncation,
        "metrics": metrics,
        "timings": {"load_seconds": round(load_seconds, 3), "predict_seconds": round(predict_seconds, 3),
                    "texts_per_second": round(len(texts) / max(predict_seconds, 1e-9), 1)},
        "errors": errors,
    }
