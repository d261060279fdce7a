"""Rendering of command results: Rich tables for people, one JSON document with --json for machines.

Every user-controlled string (path, column, label) goes into a table or line as `Text`, never as Rich markup,
so a label such as "[/x]" prints as written.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from bertclf import console


def render_train_result(result, *, as_json: bool) -> None:
    if as_json:
        console.print_json(result.summary())
        return
    from bertclf.metrics import scalar_metrics

    console.out.print(console.metrics_table(
        scalar_metrics(result.validation_metrics),
        title=f"Validation metrics, best step {result.best_step} of {result.steps}"))
    console.out.print(Text.assemble("Run saved to ", (str(result.output_dir), "bold"),
                                    f"  ({result.train_seconds:.0f} s training, "
                                    f"{result.samples_per_second:.1f} samples/s)"))


def render_pretrain_result(result, *, as_json: bool) -> None:
    if as_json:
        console.print_json(result.summary())
        return
    validation = result.validation
    console.out.print(console.metrics_table(
        {k: validation[k] for k in ("loss", "perplexity", "masked_accuracy") if k in validation},
        title=f"Held-out masked-LM scores, best step {result.best_step} of {result.steps}"))
    console.out.print(Text.assemble("Model saved to ", (str(result.output_dir), "bold"),
                                    f"  ({result.train_seconds:.0f} s training, "
                                    f"{result.tokens_per_second:.0f} tokens/s); fine-tune it with "
                                    f"bertclf train --model {result.output_dir} DATA"))


def render_eval_report(report: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        console.print_json({k: v for k, v in report.items() if k != "errors"})
        return
    metrics = report["metrics"]
    console.out.print(_metrics_with_intervals(report, title=Text(f"{report['data']['path']}: "
                                                                  f"{report['rows_evaluated']} rows")))
    multi_label = report.get("task") == "multi_label"
    console.out.print(_per_class_table(metrics["per_class"], multi_label))
    if not multi_label:  # a label set has no single confusion matrix; per-label counts are in --json
        console.out.print(_confusion_table(metrics["confusion_matrix"]))


def _metrics_with_intervals(report: dict[str, Any], title) -> Table:
    """Every scalar metric, with its bootstrap interval where one was computed."""
    from bertclf.ci_reports import ci_label
    from bertclf.metrics import scalar_metrics

    intervals = report.get("intervals")
    table = Table(title=title, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if intervals is not None:
        table.add_column(ci_label(report["bootstrap"]["confidence"]), justify="right")
    for name, value in scalar_metrics(report["metrics"]).items():
        cells = [Text(name), f"{value:.4f}" if isinstance(value, float) else str(value)]
        if intervals is not None:
            interval = intervals.get(name)
            cells.append("" if interval is None else f"[{interval[0]:.4f}, {interval[1]:.4f}]")
        table.add_row(*cells)
    return table


def render_compare_report(report: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        console.print_json({k: v for k, v in report.items() if k != "disagreements"})
        return
    from bertclf.ci_reports import ci_label

    confidence = (report.get("bootstrap") or {}).get("confidence")
    table = Table(title=Text(f"{report['data']['path']}: {report['rows_compared']} rows, candidate minus "
                             "baseline"), header_style="bold")
    for column in ("metric", "baseline", "candidate", "difference", ci_label(confidence)):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, diff in report["differences"].items():
        interval = diff["interval"]
        table.add_row(Text(name), *[_number(diff[key]) for key in ("baseline", "candidate")],
                      _number(diff["difference"], signed=True),
                      "" if interval is None else f"[{interval[0]:+.4f}, {interval[1]:+.4f}]")
    console.out.print(table)
    mcnemar = report["mcnemar"]
    console.out.print(Text(f"McNemar's exact test: {mcnemar['baseline_only']} rows only the baseline got right, "
                           f"{mcnemar['candidate_only']} only the candidate; p = {mcnemar['p_value']:.4g}. "
                           f"The predictions differ on {report['rows_disagreeing']} rows."))
    for check in report["checks"]:
        console.out.print(Text.assemble(("pass" if check["passed"] else "FAIL",
                                         "green" if check["passed"] else "bold red"), " ", check["message"]))


def _number(value, signed: bool = False) -> str:
    if value is None:
        return "undefined"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _per_class_table(per_class: dict[str, dict], multi_label: bool) -> Table:
    table = Table(title="Per label" if multi_label else "Per class", header_style="bold")
    for column in ("label", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    if multi_label:
        table.add_column("threshold", justify="right")
    for label, row in per_class.items():
        table.add_row(Text(label), f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                      str(row["support"]), *([f"{row['threshold']:.3f}"] if multi_label else []))
    return table


def _confusion_table(matrix: dict[str, list]) -> Table:
    table = Table(title="Confusion matrix (rows: gold, columns: predicted)", header_style="bold")
    table.add_column("gold \\ predicted")
    for label in matrix["labels"]:
        table.add_column(Text(label), justify="right")
    for i, (label, row) in enumerate(zip(matrix["labels"], matrix["matrix"], strict=True)):
        table.add_row(Text(label), *[Text(str(v), style="bold" if i == j else "") for j, v in enumerate(row)])
    return table


def render_inspection(report: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        console.print_json(report)
        return
    out = console.out
    out.print(Text.assemble((str(report["path"]), "bold"),
                            f": {report['rows']} rows, {report['format']}, {report['encoding']}; text column "
                            f"{report['text_column']!r}, label column {report['label_column']!r}"))
    out.print(_label_table(report))
    if "labels_per_row" in report:
        out.print(Text("Labels per row: " + ", ".join(f"{n}: {rows} rows"
                                                      for n, rows in report["labels_per_row"].items())))
    out.print(_length_table(report))
    lines = []
    if "tokens" in report:
        tokens = report["tokens"]
        lines.append(f"{tokens['truncated']} texts ({tokens['truncated_share']:.1%}) exceed {tokens['max_length']} "
                     f"tokens; `train --max-length auto` would use {tokens['auto_max_length']}.")
    lines.append(f"Duplicate texts: {report['duplicate_texts']}; texts with conflicting labels: "
                 f"{report['conflicting_texts']}")
    if "against" in report:
        other = report["against"]
        lines.append(f"Against {other['path']}: {other['overlapping_texts']} of {other['rows']} texts "
                     f"({other['overlap_share']:.1%}) also appear here; labels missing here: "
                     f"{other['labels_not_in_this_file'] or 'none'}")
    for line in lines:
        out.print(Text(line))


def _label_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"{len(report['labels'])} labels", header_style="bold")
    table.add_column("label")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    table.add_column("")
    top = max(report["labels"].values(), default=1)
    for label, count in report["labels"].items():
        bar = "█" * max(1, round(30 * count / top))
        share = count / report["rows_with_text"] if report["rows_with_text"] else 0.0
        table.add_row(Text(label), str(count), f"{share:.1%}", bar)
    return table


def _length_table(report: dict[str, Any]) -> Table:
    table = Table(title="Text length", header_style="bold")
    table.add_column("unit")
    for key in report["char_length"]:
        table.add_column(key, justify="right")
    table.add_row("characters", *[f"{v:.0f}" for v in report["char_length"].values()])
    if "tokens" in report:
        table.add_row(Text(f"tokens ({report['tokens']['model']})"),
                      *[f"{v:.0f}" for v in report["tokens"]["percentiles"].values()])
    return table
