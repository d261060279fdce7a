"""The rows `bertclf predict` writes: one per input row, with id, label(s), scores, top-k, probabilities and,
on request, the input's own columns; and the input rows made from --text / --text-pair options."""

from __future__ import annotations

from bertclf.errors import UsageError


def rows_from_options(texts: list[str], pairs: list[str] | None, pair_col: str | None) -> list[dict[str, str]]:
    """--text (and --text-pair) options as input rows with a "text" column (and the pair column)."""
    if pair_col is None and pairs:
        raise UsageError("--text-pair is for models trained with --text-pair-column; this one takes single texts.")
    if pair_col is not None and len(pairs or []) != len(texts):
        raise UsageError(f"This model classifies text pairs: give one --text-pair for each --text "
                         f"({len(texts)} --text, {len(pairs or [])} --text-pair).")
    return [{"text": t, **({pair_col: p} if pair_col else {})}
            for t, p in zip(texts, pairs or [""] * len(texts), strict=True)]


def prediction_row(number: int, row: dict, id_col: str | None, prediction, predictor, fmt: str, *,
                   top_k: int, all_probs: bool, keep_columns: bool) -> dict:
    """The output row for input row `number` (1-based) and its prediction."""
    out: dict = {"id": row.get(id_col) if id_col else number}
    if predictor.space.multi_label:
        # The label set and, always, every label's probability: a set alone hides how close the rest came.
        chosen = prediction.labels if not prediction.is_empty else None
        out["labels"] = chosen if fmt == "jsonl" or chosen is None else predictor.manifest.get(
            "label_separator", ",").join(chosen)
        all_probs = True
    else:
        out["label"] = prediction.label
        out["score"] = None if prediction.score is None else round(prediction.score, 6)
    if top_k > 1:
        out.update(_top_k_fields(prediction, fmt, top_k))
    if all_probs:
        out.update(_probability_fields(prediction, predictor.labels, fmt))
    if keep_columns:
        for key, value in row.items():
            out.setdefault(key if key not in out else f"input_{key}", value)
    return out


def _top_k_fields(prediction, fmt: str, top_k: int) -> dict:
    if fmt == "jsonl":
        return {"top_k": [{"label": label, "score": round(p, 6)} for label, p in prediction.top_k]}
    fields: dict = {}
    for rank in range(top_k):
        label, score = prediction.top_k[rank] if rank < len(prediction.top_k) else (None, None)
        fields[f"label_{rank + 1}"] = label
        fields[f"score_{rank + 1}"] = None if score is None else round(score, 6)
    return fields


def _probability_fields(prediction, labels: list[str], fmt: str) -> dict:
    if fmt == "jsonl":
        return {"probs": {label: round(prediction.probs[label], 6) for label in labels} if prediction.probs else {}}
    return {f"prob_{label}": round(prediction.probs[label], 6) if prediction.probs else None for label in labels}
