"""One error family for everything a user can fix, each kind mapped to a process exit code."""

from __future__ import annotations

# Exit codes (sysexits.h where one fits), the CLI/CI contract of DESIGN.md section 6.
EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 4  # the training loss became NaN or infinite
EXIT_DATA = 65  # EX_DATAERR
EXIT_NO_INPUT = 66  # EX_NOINPUT
EXIT_MODEL_UNAVAILABLE = 69  # EX_UNAVAILABLE
EXIT_INTERNAL = 70  # EX_SOFTWARE
EXIT_IO = 74  # EX_IOERR
EXIT_SIGINT = 130
EXIT_SIGPIPE = 141  # the reader of stdout went away (`bertclf predict ... | head`), as a shell reports it
EXIT_SIGTERM = 143


class BertclfError(Exception):
    """A problem the user can fix. `message` says what is wrong, `hint` how to fix it."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(BertclfError):
    """A flag or argument is invalid (bad value, conflicting options)."""

    exit_code = EXIT_USAGE


class DataError(BertclfError):
    """Input data is malformed: missing columns, empty texts, unknown labels, undecodable bytes."""

    exit_code = EXIT_DATA


class InputMissingError(BertclfError):
    """An input file or run directory does not exist or cannot be read."""

    exit_code = EXIT_NO_INPUT


class ModelUnavailableError(BertclfError):
    """A model is neither local, packaged, nor cached, and the Hub cannot provide it."""

    exit_code = EXIT_MODEL_UNAVAILABLE


class OutputError(BertclfError):
    """Results cannot be written (directory not empty, unwritable, disk full)."""

    exit_code = EXIT_IO


class StdoutError(OutputError):
    """Results could not be written to stdout (a full disk behind a redirect, a closed descriptor)."""


class QualityGateError(BertclfError):
    """A `--fail-under` gate failed: the command worked but the model is not good enough."""

    exit_code = EXIT_GATE_FAILED


class DivergedError(BertclfError):
    """Training stopped because the loss became NaN or infinite."""

    exit_code = EXIT_DIVERGED


class InterruptedRunError(BertclfError):
    """SIGINT/SIGTERM stopped training after a checkpoint was written (exit 130, or 143 for SIGTERM)."""

    exit_code = EXIT_SIGINT
