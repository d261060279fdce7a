"""Rich consoles: results go to stdout, logs, warnings and progress to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

out = Console(soft_wrap=True)  # results only
err = Console(stderr=True, soft_wrap=True)  # logs, warnings, progress


# Messages are plain text, never Rich markup: they hold paths, column names, labels and texts that users
# chose, and a label like "[/x]" must print as written (not crash, not vanish). Only our prefixes are styled.


def info(message: str) -> None:
    err.print(Text(message), highlight=False)


def warn(message: str) -> None:
    err.print(Text.assemble(("Warning:", "yellow"), " ", message), highlight=False)


def error(message: str, hint: str | None = None) -> None:
    err.print(Text.assemble(("Error:", "bold red"), " ", message), highlight=False)
    if hint:
        err.print(Text.assemble(("Hint:", "dim"), " ", hint), highlight=False)


def print_json(document: Any) -> None:
    """One JSON document on stdout, plain (no Rich markup or wrapping), for machines to read."""
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def progress_enabled() -> bool:
    """Progress bars only for people: off when stderr is a pipe or a CI log."""
    return err.is_terminal


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
        disable=not progress_enabled(),
        transient=True,
    )


def metrics_table(metrics: dict[str, Any], title: str | None = None) -> Table:
    """The scalar metrics as a two-column table."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        if isinstance(value, float):
            table.add_row(Text(name), f"{value:.4f}")
        elif isinstance(value, (int, str)):
            table.add_row(Text(name), Text(str(value)))
    return table
