"""`bertclf eval`: options -> EvalConfig -> `bertclf.evaluation.run_eval` -> the report renderer; exit 1 when a
--fail-under gate fails."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import bertclf.cli._output as _output
from bertclf import console
from bertclf.cli._cli_utils import PrecisionOpt
from bertclf.cli._errors import user_errors
from bertclf.config import EvalConfig, parse_gates
from bertclf.errors import QualityGateError


def eval_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `bertclf train`.", show_default=False)],
    data: Annotated[Path, typer.Argument(help="Labelled file to score (CSV, TSV, JSON, JSONL).", show_default=False)],
    text_column: Annotated[str | None, typer.Option(help="Text column. Default: the one used in training.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column. Default: the one used in training.")]
    = None,
    text_pair_column: Annotated[str | None, typer.Option(help="Second-text column of a pair model. Default: the "
                                "one used in training.")] = None,
    batch_size: Annotated[int, typer.Option(help="Most texts per batch (on a CPU also at most 1,024 tokens).")] = 64,
    max_length: Annotated[int | None, typer.Option(help="Override the run's max length (tokens).")] = None,
    truncation: Annotated[str | None, typer.Option(help="Override the run's truncation: head, tail, head+tail.")]
    = None,
    encoding: Annotated[str | None, typer.Option(help="File encoding. Default: UTF-8, then GB18030.")] = None,
    data_format: Annotated[str | None, typer.Option("--format", help="csv, tsv, json, jsonl, parquet or fasttext. "
                           "Default: from the file extension.")] = None,
    drop_empty: Annotated[bool, typer.Option(help="Leave out rows with an empty text, with a warning.")] = False,
    fail_under: Annotated[list[str] | None, typer.Option(metavar="METRIC=VALUE", help="Exit 1 when METRIC is below "
                          "VALUE, e.g. macro_f1=0.85; macro_f1.lower=0.85 gates the lower bound of its "
                          "interval. Repeatable.")] = None,
    ignore_unknown_labels: Annotated[bool, typer.Option(help="Leave out rows whose label the model never saw "
                                     "(default: error, exit 65).")] = False,
    output: Annotated[Path | None, typer.Option("--output", "--report-dir", "-o", help="Write metrics.json, "
                      "confusion_matrix.csv/.png, reliability_diagram.png and errors.csv here.")] = None,
    cpu: Annotated[bool, typer.Option(help="Run on the CPU even if a GPU is present.")] = False,
    precision: PrecisionOpt = "auto",
    quantize: Annotated[str | None, typer.Option(help="int8: score the dynamically quantized model (CPU), to "
                        "check its accuracy before predicting with it.")] = None,
    backend: Annotated[str, typer.Option(help="torch, or onnx: the model `bertclf export` wrote to RUN_DIR/onnx, "
                       "on onnxruntime (CPU); with --quantize int8, its int8 file.")] = "torch",
    threshold: Annotated[str | None, typer.Option(help="Multi-label runs: decision threshold for every label "
                         "(0.4) or some (toxic=0.3,spam=0.7), instead of those tuned in training.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    confidence: Annotated[float, typer.Option(help="Confidence level of the bootstrap intervals.")] = 0.95,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of the rows for the intervals; 0: none.")]
    = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the resampling (the same seed gives the same intervals).")] = 0,
    junit: Annotated[Path | None, typer.Option(help="Write a JUnit XML report here: one testcase per gate, the "
                     "metrics as properties.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write a Markdown summary here (metrics, intervals, "
                        "gates), e.g. to append to $GITHUB_STEP_SUMMARY.")] = None,
    label_issues: Annotated[bool, typer.Option(help="Single-label runs: rank the rows whose given label the model "
                            "most doubts (cleanlab), a review queue; with -o, label_issues.csv. Never changes a "
                            "gate.")] = False,
) -> None:
    """Score a trained run on a labelled file: accuracy, precision/recall/F1, MCC, ROC-AUC, calibration (ECE,
    Brier, NLL), per class; each with a bootstrap confidence interval.

    Examples:

        bertclf eval runs/topics examples/en_topics_test.csv

        bertclf eval runs/topics test.csv --fail-under macro_f1.lower=0.85 --json > report.json
    """
    with user_errors():
        config = EvalConfig(run_dir=run_dir, data_file=data, text_column=text_column, label_column=label_column,
                            text_pair_column=text_pair_column, threshold=threshold,
                            batch_size=batch_size, max_length=max_length, truncation=truncation, encoding=encoding,
                            data_format=data_format, drop_empty=drop_empty, cpu=cpu, backend=backend,
                            precision=precision,
                            ignore_unknown_labels=ignore_unknown_labels, report_dir=output, quantize=quantize,
                            gates=parse_gates(fail_under or []), confidence=confidence, bootstrap=bootstrap,
                            seed=seed, junit=junit, markdown=markdown, label_issues=label_issues)
        from bertclf.evaluation import run_eval

        report = run_eval(config)
        _output.render_eval_report(report, as_json=json_output)
        if "label_issues" in report and not json_output:
            found = report["label_issues"]
            console.info(f"Label issues: {found['count']} of {found['rows_audited']} rows have a given label the "
                         "model doubts" + (f", ranked in {found['file']}" if "file" in found else
                                           " (-o DIR writes them, ranked, to label_issues.csv)") + ".")
        if output is not None:
            console.info(f"Report written to {output}")
        failures = [gate["message"] for gate in report["gates"].values() if not gate["passed"]]
        if failures:
            raise QualityGateError("Quality gate failed: " + "; ".join(failures) + ".")
