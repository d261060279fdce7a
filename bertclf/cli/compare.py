"""`bertclf compare`: options -> CompareConfig -> `bertclf.compare.run_compare` -> the comparison renderer;
exit 1 when a --non-inferiority or --superiority check fails."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import bertclf.cli._output as _output
from bertclf import console
from bertclf.cli._errors import user_errors
from bertclf.config import CompareConfig, parse_margins
from bertclf.errors import QualityGateError


def compare(
    baseline: Annotated[Path, typer.Argument(help="Run directory of the baseline (the model in production).",
                                             show_default=False)],
    candidate: Annotated[Path, typer.Argument(help="Run directory of the candidate.", show_default=False)],
    data: Annotated[Path, typer.Argument(help="Labelled file both runs score (CSV, TSV, JSON, JSONL).",
                                         show_default=False)],
    non_inferiority: Annotated[list[str] | None, typer.Option(metavar="METRIC=MARGIN", help="Exit 1 unless the "
                               "candidate is worse by at most MARGIN: the lower bound of the difference's "
                               "interval must be at least -MARGIN (for a loss or calibration error, the upper "
                               "bound at most +MARGIN), e.g. macro_f1=0.01. Repeatable.")] = None,
    superiority: Annotated[list[str] | None, typer.Option(metavar="METRIC", help="Exit 1 unless the candidate is "
                           "better: the lower bound of the difference's interval must be above 0 (for a loss "
                           "or calibration error, the upper bound below 0). Repeatable.")]
    = None,
    text_column: Annotated[str | None, typer.Option(help="Text column. Default: the baseline's.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column. Default: the baseline's.")] = None,
    text_pair_column: Annotated[str | None, typer.Option(help="Second-text column of pair models. Default: the "
                                "baseline's.")] = None,
    batch_size: Annotated[int, typer.Option(help="Most texts per batch (on a CPU also at most 1,024 tokens).")] = 64,
    encoding: Annotated[str | None, typer.Option(help="File encoding. Default: UTF-8, then GB18030.")] = None,
    data_format: Annotated[str | None, typer.Option("--format", help="csv, tsv, json, jsonl, parquet or fasttext. "
                           "Default: from the file extension.")] = None,
    drop_empty: Annotated[bool, typer.Option(help="Leave out rows with an empty text, with a warning.")] = False,
    ignore_unknown_labels: Annotated[bool, typer.Option(help="Leave out rows whose label the runs never saw "
                                     "(default: error, exit 65).")] = False,
    confidence: Annotated[float, typer.Option(help="Confidence level of the paired bootstrap intervals.")] = 0.95,
    bootstrap: Annotated[int, typer.Option(help="Paired bootstrap resamples of the rows; 0: none.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the resampling (the same seed gives the same intervals).")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write disagreements.csv (the rows the "
                      "runs predict differently) and comparison.json here.")] = None,
    junit: Annotated[Path | None, typer.Option(help="Write a JUnit XML report here: one testcase per check.")]
    = None,
    markdown: Annotated[Path | None, typer.Option(help="Write a Markdown summary here (differences, verdict), "
                        "e.g. to append to $GITHUB_STEP_SUMMARY.")] = None,
    cpu: Annotated[bool, typer.Option(help="Run on the CPU even if a GPU is present.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Compare two runs on the same labelled rows: each metric's difference (candidate minus baseline) with a
    paired bootstrap interval, and McNemar's exact test.

    Examples:

        bertclf compare runs/production runs/candidate test.csv --non-inferiority macro_f1=0.01

        bertclf compare runs/production runs/candidate test.csv --superiority accuracy -o compare-report
    """
    with user_errors():
        config = CompareConfig(baseline_dir=baseline, candidate_dir=candidate, data_file=data,
                               text_column=text_column, label_column=label_column,
                               text_pair_column=text_pair_column, batch_size=batch_size, encoding=encoding,
                               data_format=data_format, drop_empty=drop_empty, cpu=cpu,
                               ignore_unknown_labels=ignore_unknown_labels, report_dir=output,
                               confidence=confidence, bootstrap=bootstrap, seed=seed,
                               non_inferiority=parse_margins(non_inferiority or []),
                               superiority=tuple(dict.fromkeys(superiority or [])), junit=junit, markdown=markdown)
        from bertclf.compare import run_compare

        report = run_compare(config)
        _output.render_compare_report(report, as_json=json_output)
        if output is not None:
            console.info(f"Comparison written to {output}")
        failures = [check["message"] for check in report["checks"] if not check["passed"]]
        if failures:
            raise QualityGateError("Comparison failed: " + "; ".join(failures) + ".")
