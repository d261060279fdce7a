"""Inference over encoded texts in length-sorted batches, and the `bertclf eval` command's core."""

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
                   device=None) -> np.ndarray:
    """Logits (n_texts, n_labels) in input order. With an accelerator, work is sharded across processes
    and gathered with gather_for_metrics, so each example counts once."""
    import torch
    from torch.utils.data import DataLoader

    from bertclf.cls_only import cls_only_last_layer

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
        batches = token_budget_batches(encoded.lengths, order, batch_size, CPU_TOKENS_PER_BATCH if on_cpu else None)
        loader = DataLoader(EncodedDataset(encoded), batch_sampler=batches, collate_fn=padding_collator(tokenizer))
    was_training = model.training
    model.eval()
    chunks = []
    with torch.inference_mode(), cls_only_last_layer(model):
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
                  device=None) -> np.ndarray:
    """Probabilities (n_texts, n_labels) in input order: softmax, or a sigmoid per label for multi-label;
    a text split into windows (--long-text chunks) gets the mean over its windows."""
    logits = predict_logits(model, tokenizer, encoded, batch_size, accelerator=accelerator, device=device)
    return pool_windows(space.probabilities(logits), encoded)


def score(probs: np.ndarray, targets: np.ndarray, space: LabelSpace, thresholds=None) -> dict:
    """All metrics of probabilities against targets (label ids, or multi-hot rows), plus the loss."""
    from bertclf.metrics import classification_metrics, multilabel_metrics

    names = list(space.names)
    if space.multi_label:
        metrics = multilabel_metrics(targets, space.decide(probs, thresholds), names, probs, thresholds)
    else:
        metrics = classification_metrics(targets, space.decide(probs), names, probs)
    metrics["loss"] = space.loss(probs, targets)
    return metrics


def evaluate(config) -> dict:
    """Score a run directory on a labelled file. Returns the report: metrics, counts, timings, errors."""
    import time

    from bertclf import console
    from bertclf.data import read_labelled, rows_with_known_labels, unknown_labels
    from bertclf.errors import DataError
    from bertclf.model import read_manifest
    from bertclf.predict import Predictor

    started = time.perf_counter()
    manifest = read_manifest(config.run_dir)  # before reading data: a wrong run dir is the likelier mistake
    multi_label = manifest.get("task") == "multi_label"
    data = read_labelled(config.data_file, text_column=config.text_column or manifest.get("text_column"),
                         label_column=config.label_column or manifest.get("label_column"),
                         text_pair_column=config.text_pair_column or manifest.get("text_pair_column"),
                         multi_label=multi_label, label_separator=manifest.get("label_separator", ","),
                         encoding=config.encoding, fmt=config.data_format, drop_empty=config.drop_empty)
    predictor = Predictor.from_dir(config.run_dir, cpu=config.cpu, max_length=config.max_length,
                                   truncation=config.truncation, quantize=config.quantize,
                                   threshold=config.threshold)
    space = predictor.space
    unseen = unknown_labels(data, space.names)
    keep = list(range(len(data.texts)))
    if unseen:
        listed = ", ".join(f"{label!r} ({count})" for label, count in unseen.most_common())
        if not config.ignore_unknown_labels:
            raise DataError(f"{config.data_file}: labels the model never saw: {listed}. The model knows: "
                            f"{', '.join(space.names)}.", hint="Fix the labels, or pass --ignore-unknown-labels "
                            "to leave those rows out.")
        keep = rows_with_known_labels(data, space.names)
        console.warn(f"Left out {len(data.texts) - len(keep)} row(s) with labels the model never saw: {listed}.")
    texts, pairs = [data.texts[i] for i in keep], data.pairs_at(keep)
    gold = space.targets([data.labels[i] for i in keep])
    load_seconds = time.perf_counter() - started
    tick = time.perf_counter()
    probs, encoded = predictor.probabilities_of(texts, pairs, config.batch_size)
    predict_seconds = time.perf_counter() - tick
    metrics = score(probs, gold, space, predictor.thresholds)
    predicted = space.decide(probs, predictor.thresholds)
    return {
        "run_dir": str(config.run_dir),
        "data": data.table.describe(),
        "task": "multi_label" if space.multi_label else "single_label",
        "rows": len(data.texts),
        "rows_evaluated": len(texts),
        "rows_ignored_unknown_label": len(data.texts) - len(texts),
        "truncated": encoded.truncated,
        "sequences": len(encoded),
        **predictor.spec.to_dict(),
        "metrics": metrics,
        "timings": {"load_seconds": round(load_seconds, 3), "predict_seconds": round(predict_seconds, 3),
                    "texts_per_second": round(len(texts) / max(predict_seconds, 1e-9), 1)},
        "errors": _errors(data, keep, texts, pairs, gold, predicted, probs, space),
    }


def _errors(data, keep: list[int], texts: list[str], pairs: list[str] | None, gold: np.ndarray,
            predicted: np.ndarray, probs: np.ndarray, space: LabelSpace) -> list[dict]:
    """The rows the model got wrong (for multi-label: whose predicted set differs from the gold set)."""
    errors = []
    for j, i in enumerate(keep):
        if space.multi_label:
            if (predicted[j] == gold[j]).all():
                continue
            record = {"row": data.row_numbers[i], "text": texts[j],
                      "gold": ",".join(n for n, g in zip(space.names, gold[j], strict=True) if g),
                      "predicted": ",".join(n for n, g in zip(space.names, predicted[j], strict=True) if g),
                      "confidence": None}
        else:
            if predicted[j] == gold[j]:
                continue
            record = {"row": data.row_numbers[i], "text": texts[j], "gold": space.names[gold[j]],
                      "predicted": space.names[predicted[j]], "confidence": float(probs[j, predicted[j]])}
        if pairs is not None:
            record["text_pair"] = pairs[j]
        errors.append(record)
    return errors
