"""The `bertclf` command line, one module per command (as the `hf` CLI of huggingface_hub is laid out):

    train.py     bertclf train     -> bertclf.train.train
    pretrain.py  bertclf pretrain  -> bertclf.pretrain.pretrain
    evaluate.py  bertclf eval      -> bertclf.evaluation.run_eval
    compare.py   bertclf compare   -> bertclf.compare.run_compare
    predict.py   bertclf predict   -> bertclf.predict.run_predict
    export.py    bertclf export    -> bertclf.export.export_run
    serve.py     bertclf serve     -> bertclf.serving.serve
    inspect.py   bertclf inspect   -> bertclf.inspection.inspect_file

Each command module declares its options, builds a config, calls one core function and hands the result to
`_output.py` (Rich tables, JSON); `_errors.py` is the one error guard; `_cli_utils.py` holds shared helpers.
Nothing heavy is imported here (torch, transformers, datasets, accelerate), so `--help`, `--version` and usage
errors answer at once; each command imports what it needs inside its body.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bertclf import console
from bertclf.cli._cli_utils import normalize_resume, version_callback
from bertclf.cli._errors import debug_enabled, exit_code_after_flush, silence_stdout
from bertclf.cli.compare import compare
from bertclf.cli.evaluate import eval_command
from bertclf.cli.export import export
from bertclf.cli.inspect import inspect
from bertclf.cli.predict import predict
from bertclf.cli.pretrain import pretrain
from bertclf.cli.serve import serve
from bertclf.cli.train import train
from bertclf.errors import EXIT_IO, UsageError

app = typer.Typer(
    name="bertclf",
    help="Fine-tune BERT models for Chinese or English text classification; evaluate and predict with them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Fine-tune BERT text classifiers: `bertclf train`, then `bertclf eval`, `bertclf compare` and
    `bertclf predict`."""


app.command()(train)
app.command()(pretrain)
app.command("eval")(eval_command)
app.command()(compare)
app.command()(predict)
app.command()(inspect)
app.command()(export)
app.command()(serve)


def main() -> None:
    """Console-script entry point."""
    try:
        app(args=normalize_resume(sys.argv[1:]), prog_name="bertclf")
    except UsageError as exc:  # raised outside a command body (should not happen, but never a traceback)
        console.error(exc.message, exc.hint)
        sys.exit(exit_code_after_flush(exc.exit_code))
    except SystemExit as exc:
        # --help and --version write outside any command's guard: a full or closed stdout is still exit 74.
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        sys.exit(exit_code_after_flush(code))
    except OSError as exc:  # writing --help or --version failed (a full disk behind the redirect, say)
        if debug_enabled():
            raise
        console.error(f"Cannot write to stdout: {exc.strerror or exc}.")
        silence_stdout()
        sys.exit(EXIT_IO)


__all__ = ["app", "main", "normalize_resume"]
