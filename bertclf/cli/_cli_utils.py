"""Helpers shared by the command modules: help panels, the --version flag, and argv normalisation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertclf import __version__

DATA_PANEL, MODEL_PANEL, OPT_PANEL, RUN_PANEL = "Data", "Model", "Optimisation", "Runtime and output"

# --precision of predict, eval and serve (bertclf.precision).
PrecisionOpt = Annotated[str, typer.Option(help="auto, fp32 or bf16. auto: bf16 where the GPU or CPU (AMX, "
                         "AVX512-BF16) computes it natively and training found its labels equal to fp32's on "
                         ">= 99.5% of the validation texts; fp32 elsewhere.")]


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"bertclf {__version__}")
        raise typer.Exit()


def normalize_resume(argv: list[str]) -> list[str]:
    """`--resume` takes an optional value: bare `--resume` means the newest checkpoint ("latest"). The next
    argument is taken as the checkpoint only when it is an existing directory, so `train --resume data.csv`
    still reads data.csv as the data."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--resume":
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following is None or not Path(following).is_dir():
                out.append("latest")
    return out
