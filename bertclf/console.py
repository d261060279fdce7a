"""Rich consoles: results go to stdout, logs, warnings and progress to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from bertclf.errors import StdoutError


class _Stdout:
    """sys.stdout, looked up at each write (tests and callers may replace it), with a failed write reported as
    a failure of stdout: a full disk behind `> file`, or a closed descriptor, is exit 74 naming stdout."""

    def _call(self, name: str, *args):
        try:
            if sys.stdout is None:  # started with stdout closed (`>&-`)
                raise OSError(9, "stdout is closed")
            return getattr(sys.stdout, name)(*args)
        except BrokenPipeError:
            raise  # the reader went away: the guard stops quietly with 141
        except (OSError, ValueError) as exc:  # ValueError: "I/O operation on closed file"
            raise StdoutError(f"Cannot write the results to stdout: {getattr(exc, 'strerror', None) or exc}.",
                              hint="Check that the disk behind the redirect has room, or write to a file with "
                              "--output.") from None

    def write(self, text: str) -> int:
        return self._call("write", text)

    def flush(self) -> None:
        self._call("flush")

    def isatty(self) -> bool:
        return sys.stdout is not None and sys.stdout.isatty()

    def fileno(self) -> int:
        return sys.stdout.fileno()

    @property
    def encoding(self) -> str:
        return getattr(sys.stdout, "encoding", None) or "utf-8"


stdout = _Stdout()  # every result written to stdout goes through this
out = Console(file=stdout, soft_wrap=True)  # results only
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
    stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")
    stdout.flush()


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
