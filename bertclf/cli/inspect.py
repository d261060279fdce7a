"""`bertclf inspect`: options -> `bertclf.inspection.inspect_file` -> the inspection renderer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import bertclf.cli._output as _output
from bertclf.cli._errors import user_errors


def inspect(
    data: Annotated[Path, typer.Argument(help="Labelled file: CSV, TSV, JSON, JSONL, Parquet or fastText lines.",
                                         show_default=False)],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Count tokens with this model's tokenizer "
                     "(as for train --model). Default: characters only.")] = None,
    max_length: Annotated[int, typer.Option(help="Report how many texts exceed this many tokens.")] = 128,
    against: Annotated[Path | None, typer.Option(help="Another file (say, the test set): texts in both, and its "
                       "labels missing here.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column. Default: text, sentence, content, review.")]
    = None,
    label_column: Annotated[str | None, typer.Option(help="Label column. Default: label, labels, target, "
                            "category.")] = None,
    encoding: Annotated[str | None, typer.Option(help="File encoding. Default: UTF-8, then GB18030.")] = None,
    data_format: Annotated[str | None, typer.Option("--format", help="Default: from the file extension.")] = None,
    multi_label: Annotated[bool, typer.Option(help="Cells hold several labels: count each label, and labels per "
                           "row.")] = False,
    label_separator: Annotated[str, typer.Option(help="Separator between the labels of a --multi-label cell.")]
    = ",",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Describe a data file: rows, encoding, label distribution, text lengths, duplicates, conflicts, overlap.

    Examples:

        bertclf inspect examples/zh_reviews.csv --model scratch

        bertclf inspect examples/en_topics.csv -m all-MiniLM-L6-v2 --against examples/en_topics_test.csv
    """
    with user_errors():
        from bertclf.inspection import inspect_file

        report = inspect_file(data, text_column=text_column, label_column=label_column, encoding=encoding,
                              fmt=data_format, model=model, max_length=max_length, against=against,
                              multi_label=multi_label, label_separator=label_separator)
        _output.render_inspection(report, as_json=json_output)
