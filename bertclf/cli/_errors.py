"""The one error guard: every failure becomes a message on stderr and a distinct exit code, never a traceback
(unless BERTCLF_DEBUG=1). Command bodies *and* their rendering run inside it, so results lost to a full or
closed stdout are an I/O error (74), not a success."""

from __future__ import annotations

import contextlib
import os

import typer

from bertclf import console
from bertclf.errors import EXIT_INTERNAL, EXIT_IO, EXIT_SIGINT, EXIT_SIGPIPE, BertclfError, OutputError, StdoutError


def debug_enabled() -> bool:
    return os.environ.get("BERTCLF_DEBUG", "") not in ("", "0")


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail (or print) again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    except OSError:
        pass


def flush_stdout() -> None:
    """Flush results now, inside the guard: a full disk or closed stdout must be an error, not lost output."""
    console.stdout.flush()


@contextlib.contextmanager
def user_errors():
    """Map exceptions to exit codes; see the README's exit-code table."""
    try:
        yield
        flush_stdout()
    except BertclfError as exc:
        if debug_enabled():
            raise
        if isinstance(exc, StdoutError):
            silence_stdout()  # the interpreter's final flush must not fail again
        console.error(exc.message, exc.hint)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.info("Interrupted.")
        raise typer.Exit(EXIT_SIGINT) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except BrokenPipeError:
        # `bertclf predict ... | head`: the reader has what it wanted. Stop quietly, as cat or grep would.
        silence_stdout()
        raise typer.Exit(EXIT_SIGPIPE) from None
    except OSError as exc:
        if debug_enabled():
            raise
        silence_stdout()
        console.error(f"I/O error: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}.")
        raise typer.Exit(EXIT_IO) from None
    except Exception as exc:
        if debug_enabled():
            raise
        console.error(f"Internal error: {type(exc).__name__}: {exc}",
                      "This is a bug in bertclf. Run again with BERTCLF_DEBUG=1 for the traceback, and report it.")
        raise typer.Exit(EXIT_INTERNAL) from None


def exit_code_after_flush(code: int | None) -> int:
    """The process's exit code once stdout is flushed: text written outside a command (--help, --version)
    that cannot be delivered turns success into 74."""
    try:
        flush_stdout()
    except BrokenPipeError:
        silence_stdout()
        return EXIT_SIGPIPE
    except OutputError as exc:
        console.error(exc.message, exc.hint)
        return code or EXIT_IO
    return code or 0
