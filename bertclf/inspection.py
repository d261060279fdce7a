"""`bertclf inspect`: what is in a data file before you train on it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from bertclf.data import read_labelled
from bertclf.encoding import EncodingSpec, encode, length_covering
from bertclf.labels import label_key

PERCENTILES = (50, 90, 95, 99, 100)


def _normalize(text: str) -> str:
    return " ".join(text.split()).casefold()


def inspect_file(path: Path, *, text_column: str | None = None, label_column: str | None = None,
                 encoding: str | None = None, fmt: str | None = None, model: str | None = None,
                 max_length: int = 128, against: Path | None = None, multi_label: bool = False,
                 label_separator: str = ",") -> dict:
    """A report on a labelled file: size, encoding, labels, lengths, duplicates, conflicts, overlap. With
    multi_label, label counts are per label (a row counts once for each label it holds)."""
    label_options = {"multi_label": multi_label, "label_separator": label_separator}
    data = read_labelled(path, text_column=text_column, label_column=label_column, encoding=encoding, fmt=fmt,
                         drop_empty=True, **label_options)
    counts = Counter(data.label_names())
    normalized = [_normalize(t) for t in data.texts]
    by_text: dict[str, set[str]] = {}
    for text, label in zip(normalized, data.labels, strict=True):
        by_text.setdefault(text, set()).add(label_key(label))
    report: dict = {
        "path": str(path),
        "format": data.table.format,
        "encoding": data.table.encoding,
        "rows": len(data.table),
        "rows_with_text": len(data.texts),
        "columns": data.table.columns,
        "text_column": data.text_column,
        "label_column": data.label_column,
        "labels": dict(counts.most_common()),
        "duplicate_texts": len(normalized) - len(by_text),
        "conflicting_texts": sum(len(labels) > 1 for labels in by_text.values()),
        "char_length": _percentiles([len(t) for t in data.texts]),
    }
    if multi_label:
        report["labels_per_row"] = dict(sorted(Counter(len(names) for names in data.labels).items()))
    if model:
        tokenizer, source = _tokenizer_for(model, data.texts, max_length)
        # Lengths with no cut (a huge max_length), then the share a cut at max_length would truncate.
        lengths = np.asarray(encode(tokenizer, data.texts, EncodingSpec(max_length=10**9)).lengths)
        report["tokens"] = {"model": model, "source": source, "max_length": max_length,
                            "percentiles": _percentiles(lengths.tolist()),
                            "truncated": int((lengths > max_length).sum()),
                            "truncated_share": float((lengths > max_length).mean()),
                            # what `train --max-length auto` picks before the model's own cap
                            "auto_max_length": length_covering(lengths.tolist())}
    if against is not None:
        other = read_labelled(against, text_column=text_column, label_column=label_column, encoding=encoding,
                              drop_empty=True, **label_options)
        overlap = sum(_normalize(t) in by_text for t in other.texts)
        unseen = Counter(label for label in other.label_names() if label not in counts)
        report["against"] = {"path": str(against), "rows": len(other.texts), "overlapping_texts": overlap,
                             "overlap_share": overlap / len(other.texts), "labels_not_in_this_file": dict(unseen)}
    return report


def _percentiles(values: list[int]) -> dict[str, float]:
    array = np.asarray(values)
    return {f"p{p}": float(np.percentile(array, p)) for p in PERCENTILES} | {"mean": float(array.mean())}


def _tokenizer_for(name: str, texts: list[str], max_length: int):
    import tempfile

    from bertclf.model import load_tokenizer, quiet_transformers, resolve_model

    quiet_transformers()
    resolved = resolve_model(name, texts)
    if resolved.source == "scratch":
        from bertclf.scratch import build_scratch

        with tempfile.TemporaryDirectory() as workdir:
            tokenizer, _ = build_scratch(resolved.scratch_size, texts, max_length, Path(workdir))
        return tokenizer, "scratch"
    return load_tokenizer(resolved.path), resolved.source
