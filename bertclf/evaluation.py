"""`bertclf eval`'s core: score a run directory on a labelled file."""

from __future__ import annotations

import numpy as np

from bertclf.labels import LabelSpace
from bertclf.metrics import score


def run_eval(config) -> dict:
    """`bertclf eval`: score the run, write the report files (--output), and judge the --fail-under gates.
    Returns the report with a "gates" entry; the caller decides the exit code."""
    report = evaluate(config)
    gates = check_gates(report["metrics"], config.gates, report["task"])
    if config.report_dir is not None:
        from bertclf.report import write_report

        write_report(report, config.report_dir)
    report["gates"] = gates
    return report


def check_gates(metrics: dict, gates: dict[str, float], task: str) -> dict[str, dict]:
    """Each gate's threshold, value, verdict and message. A gate on a metric this kind of run does not report
    (a multi-label metric on a single-label run, say) is a usage error, not a failed gate."""
    from bertclf.config import MULTI_LABEL_SCALAR_METRICS, SCALAR_METRICS
    from bertclf.errors import UsageError

    known = MULTI_LABEL_SCALAR_METRICS if task == "multi_label" else SCALAR_METRICS
    wrong = [name for name in gates if name not in known]
    if wrong:
        kind = "multi-label" if task == "multi_label" else "single-label"
        raise UsageError(f"Invalid value for --fail-under: {', '.join(wrong)} is not a metric of {kind} runs.",
                         hint=f"Gate on one of: {', '.join(m for m in known if m not in ('hamming_loss',))}.")
    results = {}
    for name, threshold in gates.items():
        value = metrics.get(name)
        if value is None:
            message = f"{name} is undefined on this data (needed >= {threshold})"
        else:
            message = f"{name} {value:.4f} < {threshold} (short by {threshold - value:.4f})"
        results[name] = {"threshold": threshold, "value": value,
                         "passed": value is not None and value >= threshold, "message": message}
    return results


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
