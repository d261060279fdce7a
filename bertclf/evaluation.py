"""`bertclf eval`'s core: score a run directory on a labelled file."""

from __future__ import annotations

import numpy as np

from bertclf.labels import LabelSpace
from bertclf.metrics import score


def run_eval(config) -> dict:
    """`bertclf eval`: score the run, bootstrap the intervals, judge the --fail-under gates, and write the
    report files (--output, --junit, --markdown). Returns the report with a "gates" entry; the caller decides
    the exit code."""
    report, rows = evaluate_rows(config)
    issues = report.pop("label_issue_rows", None)  # --label-issues: label_issues.csv's rows, not the report's
    if config.bootstrap and len(rows):
        report = add_intervals(report, rows, config)
    gates = check_gates(report["metrics"], config.gates, report["task"], report.get("intervals"))
    if config.report_dir is not None:
        from bertclf.report import write_report

        if issues is not None:
            from bertclf.label_issues import FILE

            report["label_issues"]["file"] = str(config.report_dir / FILE)
        write_report(report, config.report_dir)
        if issues is not None:
            from bertclf.label_issues import write_issues

            write_issues(config.report_dir / FILE, issues, pairs=bool(issues) and "text_pair" in issues[0])
        if not rows.multi_label and len(rows):
            from bertclf.reliability import write_reliability_diagram

            write_reliability_diagram(rows.probs, rows.gold, config.report_dir / "reliability_diagram.png")
    report["gates"] = gates
    if config.junit is not None or config.markdown is not None:
        from bertclf.ci_reports import eval_junit, eval_markdown, write_text

        if config.junit is not None:
            write_text(config.junit, eval_junit(report), "--junit")
        if config.markdown is not None:
            write_text(config.markdown, eval_markdown(report), "--markdown")
    return report


def add_intervals(report: dict, rows, config) -> dict:
    """The report with "intervals" (one [lower, upper] per scalar metric, beside "metrics") and "bootstrap"
    (how they were computed)."""
    import time

    from bertclf.config import REPORTED_METRICS
    from bertclf.intervals import bootstrap, intervals

    tick = time.perf_counter()
    replicates = bootstrap(rows, config.bootstrap, config.seed)
    point = {name: report["metrics"].get(name) for name in REPORTED_METRICS[report["task"]]}
    found = intervals(replicates, point, config.confidence)
    seconds = time.perf_counter() - tick
    out: dict = {}
    for key, value in report.items():
        out[key] = value
        if key == "metrics":
            out["intervals"] = found
            out["bootstrap"] = {"method": "percentile", "replicates": config.bootstrap,
                                "confidence": config.confidence, "seed": config.seed}
    out["timings"] = {**report["timings"], "bootstrap_seconds": round(seconds, 3)}
    return out


def check_gates(metrics: dict, gates: dict[str, float], task: str,
                intervals: dict | None = None) -> dict[str, dict]:
    """Each gate's threshold, value, verdict and message. "macro_f1" gates the point value, "macro_f1.lower"
    (or .upper) that bound of its bootstrap interval. A gate on a metric this kind of run does not report (a
    multi-label metric on a single-label run, say) is a usage error, not a failed gate."""
    from bertclf.config import MULTI_LABEL_SCALAR_METRICS, SCALAR_METRICS
    from bertclf.errors import UsageError

    known = MULTI_LABEL_SCALAR_METRICS if task == "multi_label" else SCALAR_METRICS
    wrong = [key for key in gates if key.partition(".")[0] not in known]
    if wrong:
        kind = "multi-label" if task == "multi_label" else "single-label"
        raise UsageError(f"Invalid value for --fail-under: {', '.join(wrong)} is not a metric of {kind} runs.",
                         hint=f"Gate on one of: {', '.join(m for m in known if m not in ('hamming_loss',))}.")
    results = {}
    for key, threshold in gates.items():
        name, _, bound = key.partition(".")
        if bound:
            interval = (intervals or {}).get(name)
            value = None if interval is None else interval[0 if bound == "lower" else 1]
        else:
            value = metrics.get(name)
        if value is None:
            message = f"{key} is undefined on this data (needed >= {threshold})"
        else:
            message = f"{key} {value:.4f} < {threshold} (short by {threshold - value:.4f})"
        results[key] = {"metric": name, "bound": bound or "point", "threshold": threshold, "value": value,
                        "passed": value is not None and value >= threshold, "message": message}
    return results


def evaluate(config) -> dict:
    """Score a run directory on a labelled file. Returns the report: metrics, counts, timings, errors."""
    return evaluate_rows(config)[0]


def read_eval_data(config, manifest: dict):
    """The labelled rows of config.data_file, read with the columns the run was trained on unless the
    config names others."""
    from bertclf.data import read_labelled

    return read_labelled(config.data_file, text_column=config.text_column or manifest.get("text_column"),
                         label_column=config.label_column or manifest.get("label_column"),
                         text_pair_column=config.text_pair_column or manifest.get("text_pair_column"),
                         multi_label=manifest.get("task") == "multi_label",
                         label_separator=manifest.get("label_separator", ","),
                         encoding=config.encoding, fmt=config.data_format, drop_empty=config.drop_empty)


def known_rows(data, space: LabelSpace, config) -> list[int]:
    """Indices of the rows whose labels the model knows; unknown labels are an error (exit 65) unless
    config.ignore_unknown_labels, which leaves those rows out with a warning."""
    from bertclf import console
    from bertclf.data import rows_with_known_labels, unknown_labels
    from bertclf.errors import DataError

    unseen = unknown_labels(data, space.names)
    if not unseen:
        return list(range(len(data.texts)))
    listed = ", ".join(f"{label!r} ({count})" for label, count in unseen.most_common())
    if not config.ignore_unknown_labels:
        raise DataError(f"{config.data_file}: labels the model never saw: {listed}. The model knows: "
                        f"{', '.join(space.names)}.", hint="Fix the labels, or pass --ignore-unknown-labels "
                        "to leave those rows out.")
    keep = rows_with_known_labels(data, space.names)
    console.warn(f"Left out {len(data.texts) - len(keep)} row(s) with labels the model never saw: {listed}.")
    return keep


def score_rows(predictor, data, keep: list[int], batch_size: int):
    """One run's predictions on the kept rows: (Rows for the metrics and intervals, encoding, seconds)."""
    import time

    from bertclf.intervals import Rows

    space = predictor.space
    texts, pairs = [data.texts[i] for i in keep], data.pairs_at(keep)
    gold = space.targets([data.labels[i] for i in keep])
    tick = time.perf_counter()
    probs, encoded = predictor.probabilities_of(texts, pairs, batch_size)
    seconds = time.perf_counter() - tick
    predicted = space.decide(probs, predictor.thresholds)
    if space.multi_label:
        gold = gold.astype(np.int64)
    return Rows(gold=gold, predicted=predicted, probs=probs, multi_label=space.multi_label), encoded, seconds


def evaluate_rows(config) -> tuple[dict, object]:
    """evaluate(), and the per-row predictions (intervals.Rows) the metrics were computed from."""
    import time

    from bertclf.model import read_manifest
    from bertclf.predict import Predictor

    started = time.perf_counter()
    manifest = read_manifest(config.run_dir)  # before reading data: a wrong run dir is the likelier mistake
    data = read_eval_data(config, manifest)
    predictor = Predictor.from_dir(config.run_dir, cpu=config.cpu, max_length=config.max_length,
                                   truncation=config.truncation, quantize=config.quantize,
                                   threshold=config.threshold, backend=config.backend,
                                   precision=config.precision)
    space = predictor.space
    if config.label_issues:
        from bertclf.label_issues import check_task

        check_task(space.multi_label)  # before scoring: a usage error should not wait for the model
    keep = known_rows(data, space, config)
    load_seconds = time.perf_counter() - started
    rows, encoded, predict_seconds = score_rows(predictor, data, keep, config.batch_size)
    texts, pairs = [data.texts[i] for i in keep], data.pairs_at(keep)
    report = {
        "run_dir": str(config.run_dir),
        "data": data.table.describe(),
        "task": "multi_label" if space.multi_label else "single_label",
        "rows": len(data.texts),
        "rows_evaluated": len(texts),
        "rows_ignored_unknown_label": len(data.texts) - len(texts),
        "truncated": encoded.truncated,
        "sequences": len(encoded),
        **predictor.spec.to_dict(),
        "precision": predictor.precision.to_dict(),
        "metrics": score(rows.probs, rows.gold, space, predictor.thresholds),
        "timings": {"load_seconds": round(load_seconds, 3), "predict_seconds": round(predict_seconds, 3),
                    "texts_per_second": round(len(texts) / max(predict_seconds, 1e-9), 1)},
        "errors": _errors(data, keep, texts, pairs, rows.gold, rows.predicted, rows.probs, space),
    }
    if config.label_issues:
        from bertclf.label_issues import audit

        report["label_issues"], report["label_issue_rows"] = audit(data, keep, rows, space.names)
    return report, rows


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
