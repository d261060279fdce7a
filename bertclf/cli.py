"""The `bertclf` command line: parse options, build a config, call one core function, render the result.

Nothing heavy is imported at module level (torch, transformers, datasets, accelerate), so `--help`,
`--version` and usage errors answer at once; each command imports what it needs inside its body.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from bertclf import __version__, console
from bertclf.config import TrainConfig, parse_learning_rate
from bertclf.errors import EXIT_INTERNAL, EXIT_IO, EXIT_SIGINT, BertclfError, UsageError

app = typer.Typer(
    name="bertclf",
    help="Fine-tune BERT models for Chinese or English text classification; evaluate and predict with them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DATA_PANEL, MODEL_PANEL, OPT_PANEL, RUN_PANEL = "Data", "Model", "Optimisation", "Runtime and output"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"bertclf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Fine-tune BERT text classifiers: `bertclf train`, then `bertclf eval` and `bertclf predict`."""


@contextlib.contextmanager
def user_errors():
    """Turn every failure into a message on stderr and a distinct exit code, never a traceback
    (set BERTCLF_DEBUG=1 to see one)."""
    debug = os.environ.get("BERTCLF_DEBUG", "") not in ("", "0")
    try:
        yield
    except BertclfError as exc:
        if debug:
            raise
        console.err.print(f"[bold red]Error:[/bold red] {exc.message}", highlight=False)
        if exc.hint:
            console.err.print(f"[dim]Hint:[/dim] {exc.hint}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.err.print("Interrupted.")
        raise typer.Exit(EXIT_SIGINT) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except OSError as exc:
        if debug:
            raise
        console.err.print(f"[bold red]Error:[/bold red] I/O error: {exc}", highlight=False)
        raise typer.Exit(EXIT_IO) from None
    except Exception as exc:
        if debug:
            raise
        console.err.print(f"[bold red]Internal error:[/bold red] {type(exc).__name__}: {exc}", highlight=False)
        console.err.print("[dim]This is a bug in bertclf. Run again with BERTCLF_DEBUG=1 for the traceback, "
                          "and report it.[/dim]")
        raise typer.Exit(EXIT_INTERNAL) from None


# --------------------------------------------------------------------------------------------- train
D = TrainConfig  # defaults live once, in the dataclass


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Training data: CSV, TSV, JSON or JSONL with a text and a label column.",
                                         show_default=False)],
    validation: Annotated[Path | None, typer.Option("--validation", help="Validation file. Default: a stratified "
                          "split of DATA sized by --validation-split.", rich_help_panel=DATA_PANEL)] = None,
    validation_split: Annotated[float, typer.Option(help="Share of DATA held out for validation when --validation "
                                "is not given.", rich_help_panel=DATA_PANEL)] = D.validation_split,
    text_column: Annotated[str | None, typer.Option(help="Text column. Default: the first of text, sentence, "
                           "content, review.", rich_help_panel=DATA_PANEL)] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column. Default: the first of label, labels, "
                            "target, category.", rich_help_panel=DATA_PANEL)] = None,
    encoding: Annotated[str | None, typer.Option(help="File encoding. Default: UTF-8 (with or without BOM), then "
                        "GB18030.", rich_help_panel=DATA_PANEL)] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Local directory, packaged model (all-MiniLM-L6-v2), "
                     "Hub id (bert-base-chinese), scratch[:tiny|mini|small], or auto (bert-base-chinese for "
                     "Chinese data, else bert-base-uncased).", rich_help_panel=MODEL_PANEL)] = D.model,
    max_length: Annotated[int, typer.Option(help="Tokens per text, [CLS] and [SEP] included.",
                          rich_help_panel=MODEL_PANEL)] = D.max_length,
    truncation: Annotated[str, typer.Option(help="Which tokens of a long text to keep: head, tail or head+tail.",
                          rich_help_panel=MODEL_PANEL)] = D.truncation,
    epochs: Annotated[float, typer.Option(help="Passes over the training data.", rich_help_panel=OPT_PANEL)]
    = D.epochs,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps (overrides --epochs).",
                         rich_help_panel=OPT_PANEL)] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per batch (per process).", rich_help_panel=OPT_PANEL)]
    = D.batch_size,
    lr: Annotated[str, typer.Option("--lr", help="Peak learning rate, or auto (by model size: 5e-5 for base "
                  "BERTs, 1e-4 for MiniLM-size, 5e-4 for scratch models).", rich_help_panel=OPT_PANEL)] = "auto",
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.", rich_help_panel=OPT_PANEL)]
    = D.weight_decay,
    warmup_ratio: Annotated[float, typer.Option(help="Share of steps spent warming the learning rate up.",
                            rich_help_panel=OPT_PANEL)] = D.warmup_ratio,
    grad_accum: Annotated[int, typer.Option(help="Batches per optimizer step (gradient accumulation).",
                          rich_help_panel=OPT_PANEL)] = D.grad_accum,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm.", rich_help_panel=OPT_PANEL)]
    = D.max_grad_norm,
    eval_every: Annotated[int | None, typer.Option(help="Evaluate every N optimizer steps. Default: once per epoch.",
                          rich_help_panel=OPT_PANEL)] = None,
    early_stopping: Annotated[int | None, typer.Option(metavar="PATIENCE", help="Stop after PATIENCE evaluations "
                              "without improvement of --metric.", rich_help_panel=OPT_PANEL)] = None,
    metric: Annotated[str, typer.Option(help="Validation metric that picks the best model: macro_f1, accuracy, "
                      "micro_f1, weighted_f1, mcc, loss, ...", rich_help_panel=OPT_PANEL)] = D.metric,
    seed: Annotated[int, typer.Option(help="Random seed (split, initialisation, data order).",
                    rich_help_panel=OPT_PANEL)] = D.seed,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Run directory to write. Default: "
                      "runs/<data name>-<time>.", rich_help_panel=RUN_PANEL)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier run in --output.",
                         rich_help_panel=RUN_PANEL)] = False,
    mixed_precision: Annotated[str, typer.Option(help="auto, no, fp16 or bf16. auto: bf16/fp16 on GPUs, fp32 "
                               "on CPUs without native bf16.", rich_help_panel=RUN_PANEL)] = D.mixed_precision,
    cpu: Annotated[bool, typer.Option(help="Train on the CPU even if a GPU is present.",
                   rich_help_panel=RUN_PANEL)] = False,
    log_every: Annotated[int, typer.Option(help="Optimizer steps between train_log.jsonl lines.",
                         rich_help_panel=RUN_PANEL)] = D.log_every,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout.",
                           rich_help_panel=RUN_PANEL)] = False,
) -> None:
    """Fine-tune a BERT classifier on DATA and save it as a run directory.

    Examples:

        bertclf train examples/en_topics.csv -m all-MiniLM-L6-v2 -o runs/topics

        bertclf train reviews.csv --model bert-base-chinese --validation dev.csv --epochs 2
    """
    with user_errors():
        config = TrainConfig(
            train_file=data, validation_file=validation, validation_split=validation_split,
            text_column=text_column, label_column=label_column, model=model, output=output, overwrite=overwrite,
            max_length=max_length, truncation=truncation, epochs=epochs, max_steps=max_steps,
            batch_size=batch_size, lr=parse_learning_rate(lr), weight_decay=weight_decay,
            warmup_ratio=warmup_ratio, grad_accum=grad_accum, max_grad_norm=max_grad_norm,
            eval_every=eval_every, early_stopping=early_stopping, metric=metric, seed=seed,
            mixed_precision=mixed_precision, cpu=cpu, encoding=encoding, log_every=log_every,
            argv=tuple(sys.argv),
        )
        from bertclf.train import train as run_training

        result = run_training(config)
    if json_output:
        console.print_json(result.summary())
        return
    from bertclf.metrics import scalar_metrics

    console.out.print(console.metrics_table(
        scalar_metrics(result.validation_metrics),
        title=f"Validation metrics, best step {result.best_step} of {result.steps}"))
    console.out.print(f"Run saved to [bold]{result.output_dir}[/bold]  "
                      f"({result.train_seconds:.0f} s training, {result.samples_per_second:.1f} samples/s)")


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="bertclf")
    except UsageError as exc:  # raised outside a command body (should not happen, but never a traceback)
        console.err.print(f"Error: {exc.message}")
        sys.exit(exc.exit_code)
