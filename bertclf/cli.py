"""The `bertclf` command line: parse options, build a config, call one core function, render the result.

Nothing heavy is imported at module level (torch, transformers, datasets, accelerate), so `--help`,
`--version` and usage errors answer at once; each command imports what it needs inside its body.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from bertclf import __version__, console
from bertclf.config import EvalConfig, TrainConfig, parse_gates, parse_learning_rate
from bertclf.errors import (
    EXIT_INTERNAL,
    EXIT_IO,
    EXIT_SIGINT,
    EXIT_SIGPIPE,
    BertclfError,
    QualityGateError,
    UsageError,
)

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
    except BrokenPipeError:
        # `bertclf predict ... | head`: the reader has what it wanted. Stop quietly, as cat or grep would;
        # point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(EXIT_SIGPIPE) from None
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
    text_pair_column: Annotated[str | None, typer.Option(help="Column of a second text per row (sentence pairs: "
                                "question/answer, premise/hypothesis), encoded as a BERT pair [CLS] a [SEP] b [SEP].",
                                rich_help_panel=DATA_PANEL)] = None,
    multi_label: Annotated[bool, typer.Option(help="Each row may have several labels (or none): a JSON list, or "
                           "names separated by --label-separator. Sigmoid outputs, per-label thresholds tuned on "
                           "validation.", rich_help_panel=DATA_PANEL)] = False,
    label_separator: Annotated[str, typer.Option(help="Separator between the labels of a --multi-label cell.",
                               rich_help_panel=DATA_PANEL)] = D.label_separator,
    encoding: Annotated[str | None, typer.Option(help="File encoding. Default: UTF-8 (with or without BOM), then "
                        "GB18030.", rich_help_panel=DATA_PANEL)] = None,
    data_format: Annotated[str | None, typer.Option("--format", help="csv, tsv, json, jsonl, parquet or fasttext. "
                           "Default: from the file extension.", rich_help_panel=DATA_PANEL)] = None,
    drop_empty: Annotated[bool, typer.Option(help="Leave out rows with an empty text, with a warning, instead of "
                          "failing.", rich_help_panel=DATA_PANEL)] = False,
    model: Annotated[str, typer.Option("--model", "-m", help="Local directory, packaged model (all-MiniLM-L6-v2), "
                     "Hub id (bert-base-chinese), scratch[:tiny|mini|small], or auto (bert-base-chinese for "
                     "Chinese data, else bert-base-uncased).", rich_help_panel=MODEL_PANEL)] = D.model,
    max_length: Annotated[int, typer.Option(help="Tokens per text, [CLS] and [SEP] included.",
                          rich_help_panel=MODEL_PANEL)] = D.max_length,
    truncation: Annotated[str, typer.Option(help="Which tokens of a long text to keep: head, tail or head+tail.",
                          rich_help_panel=MODEL_PANEL)] = D.truncation,
    long_text: Annotated[str, typer.Option(help="truncate (per --truncation), or chunks: split long texts into "
                         "overlapping windows of --max-length and average the windows' probabilities.",
                         rich_help_panel=MODEL_PANEL)] = D.long_text,
    stride: Annotated[int | None, typer.Option(help="With --long-text chunks: tokens shared by consecutive "
                      "windows. Default: a quarter of --max-length.", rich_help_panel=MODEL_PANEL)] = None,
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
    class_weights: Annotated[str | None, typer.Option(help="Weight the loss by class: balanced (inverse "
                             "frequency) or LABEL=WEIGHT,... for imbalanced data.", rich_help_panel=OPT_PANEL)]
    = None,
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
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute activations during backward: less "
                                      "memory for large models on small GPUs, about 30% slower.",
                                      rich_help_panel=RUN_PANEL)] = False,
    report_to: Annotated[str, typer.Option(help="Also log to an experiment tracker: none, tensorboard, wandb or "
                         "mlflow (its package must be installed).", rich_help_panel=RUN_PANEL)] = D.report_to,
    log_every: Annotated[int, typer.Option(help="Optimizer steps between train_log.jsonl lines.",
                         rich_help_panel=RUN_PANEL)] = D.log_every,
    save_every: Annotated[int | None, typer.Option(help="Write a resumable checkpoint every N optimizer steps.",
                          rich_help_panel=RUN_PANEL)] = None,
    keep: Annotated[int, typer.Option(help="Checkpoints to keep (older ones are deleted once a newer one is "
                    "complete).", rich_help_panel=RUN_PANEL)] = D.keep,
    resume: Annotated[str | None, typer.Option("--resume", metavar="[CHECKPOINT]", help="Continue the run in "
                      "--output from its newest valid checkpoint, or from the CHECKPOINT directory given.",
                      rich_help_panel=RUN_PANEL)] = None,
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
            text_column=text_column, label_column=label_column, text_pair_column=text_pair_column,
            multi_label=multi_label, label_separator=label_separator, model=model, output=output,
            overwrite=overwrite, max_length=max_length, truncation=truncation, long_text=long_text, stride=stride,
            epochs=epochs, max_steps=max_steps,
            batch_size=batch_size, lr=parse_learning_rate(lr), weight_decay=weight_decay,
            warmup_ratio=warmup_ratio, grad_accum=grad_accum, max_grad_norm=max_grad_norm,
            eval_every=eval_every, early_stopping=early_stopping, metric=metric, seed=seed,
            mixed_precision=mixed_precision, cpu=cpu, encoding=encoding, data_format=data_format,
            drop_empty=drop_empty, log_every=log_every, save_every=save_every, keep=keep, resume=resume,
            gradient_checkpointing=gradient_checkpointing, report_to=report_to, class_weights=class_weights,
            argv=tuple(sys.argv),
        )
        from bertclf.train import train as run_training

        result = run_training(config)
    if not result.is_main_process:
        return
    if json_output:
        console.print_json(result.summary())
        return
    from bertclf.metrics import scalar_metrics

    console.out.print(console.metrics_table(
        scalar_metrics(result.validation_metrics),
        title=f"Validation metrics, best step {result.best_step} of {result.steps}"))
    console.out.print(f"Run saved to [bold]{result.output_dir}[/bold]  "
                      f"({result.train_seconds:.0f} s training, {result.samples_per_second:.1f} samples/s)")


# ---------------------------------------------------------------------------------------------- eval


@app.command("eval")
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
                          "VALUE, e.g. macro_f1=0.85. Repeatable.")] = None,
    ignore_unknown_labels: Annotated[bool, typer.Option(help="Leave out rows whose label the model never saw "
                                     "(default: error, exit 65).")] = False,
    output: Annotated[Path | None, typer.Option("--output", "--report-dir", "-o", help="Write metrics.json, "
                      "confusion_matrix.csv/.png and errors.csv here.")] = None,
    cpu: Annotated[bool, typer.Option(help="Run on the CPU even if a GPU is present.")] = False,
    quantize: Annotated[str | None, typer.Option(help="int8: score the dynamically quantized model (CPU), to "
                        "check its accuracy before predicting with it.")] = None,
    threshold: Annotated[str | None, typer.Option(help="Multi-label runs: decision threshold for every label "
                         "(0.4) or some (toxic=0.3,spam=0.7), instead of those tuned in training.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Score a trained run on a labelled file: accuracy, precision/recall/F1, MCC, ROC-AUC, per class.

    Examples:

        bertclf eval runs/topics examples/en_topics_test.csv

        bertclf eval runs/topics test.csv --fail-under macro_f1=0.85 --json > report.json
    """
    with user_errors():
        gates = parse_gates(fail_under or [])
        config = EvalConfig(run_dir=run_dir, data_file=data, text_column=text_column, label_column=label_column,
                            text_pair_column=text_pair_column, threshold=threshold,
                            batch_size=batch_size, max_length=max_length, truncation=truncation, encoding=encoding,
                            data_format=data_format, drop_empty=drop_empty, cpu=cpu,
                            ignore_unknown_labels=ignore_unknown_labels, report_dir=output, quantize=quantize)
        from bertclf.evaluation import evaluate

        report = evaluate(config)
        if output is not None:
            from bertclf.report import write_report

            write_report(report, output)
        failures = _failed_gates(report["metrics"], gates)
        report["gates"] = {name: {"threshold": threshold, "value": report["metrics"].get(name),
                                  "passed": name not in failures} for name, threshold in gates.items()}
        if json_output:
            console.print_json({k: v for k, v in report.items() if k != "errors"})
        else:
            _render_eval(report)
        if output is not None:
            console.info(f"Report written to {output}")
        if failures:
            raise QualityGateError("Quality gate failed: " + "; ".join(failures.values()) + ".")


def _failed_gates(metrics: dict, gates: dict[str, float]) -> dict[str, str]:
    failures = {}
    for name, threshold in gates.items():
        value = metrics.get(name)
        if value is None:
            failures[name] = f"{name} is undefined on this data (needed >= {threshold})"
        elif value < threshold:
            failures[name] = f"{name} {value:.4f} < {threshold} (short by {threshold - value:.4f})"
    return failures


def _render_eval(report: dict) -> None:
    from rich.table import Table

    from bertclf.metrics import scalar_metrics

    metrics = report["metrics"]
    console.out.print(console.metrics_table(
        scalar_metrics(metrics), title=f"{report['data']['path']}: {report['rows_evaluated']} rows"))
    per_class = Table(title="Per class", header_style="bold")
    for column in ("label", "precision", "recall", "f1", "support"):
        per_class.add_column(column, justify="left" if column == "label" else "right")
    multi_label = report.get("task") == "multi_label"
    if multi_label:
        per_class.title = "Per label"
        per_class.add_column("threshold", justify="right")
    for label, row in metrics["per_class"].items():
        per_class.add_row(label, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                          str(row["support"]), *([f"{row['threshold']:.3f}"] if multi_label else []))
    console.out.print(per_class)
    if multi_label:  # a label set has no single confusion matrix; per-label counts are in --json
        return
    matrix = metrics["confusion_matrix"]
    confusion = Table(title="Confusion matrix (rows: gold, columns: predicted)", header_style="bold")
    confusion.add_column("gold \\ predicted")
    for label in matrix["labels"]:
        confusion.add_column(label, justify="right")
    for i, (label, row) in enumerate(zip(matrix["labels"], matrix["matrix"], strict=True)):
        confusion.add_row(label, *[f"[bold]{v}[/bold]" if i == j else str(v) for j, v in enumerate(row)])
    console.out.print(confusion)


# ------------------------------------------------------------------------------------------- predict
@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `bertclf train`.", show_default=False)],
    input_path: Annotated[str | None, typer.Argument(metavar="[INPUT]", help="CSV, TSV, JSON, JSONL or text file "
                          "(one text per line), or - for stdin.", show_default=False)] = None,
    text: Annotated[list[str] | None, typer.Option("--text", "-t", help="A text to classify. Repeatable.")] = None,
    text_pair: Annotated[list[str] | None, typer.Option("--text-pair", help="Pair models: the second text of the "
                         "--text at the same position. Repeatable.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write predictions here instead of "
                      "stdout.")] = None,
    output_format: Annotated[str | None, typer.Option("--format", help="jsonl, csv or tsv. Default: from the "
                             "--output extension, else jsonl.")] = None,
    input_format: Annotated[str | None, typer.Option(help="txt, csv, tsv, jsonl or json. Default: from the input "
                            "extension; txt for stdin.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column of a table input. Default: the one used "
                           "in training, else text, sentence, content, review.")] = None,
    text_pair_column: Annotated[str | None, typer.Option(help="Pair models: the second-text column of a table "
                                "input. Default: the one used in training.")] = None,
    threshold: Annotated[str | None, typer.Option(help="Multi-label runs: decision threshold for every label "
                         "(0.4) or some (toxic=0.3,spam=0.7), instead of those tuned in training.")] = None,
    top_k: Annotated[int, typer.Option(help="Also list the K most probable labels.")] = 1,
    all_probs: Annotated[bool, typer.Option(help="One probability column per label.")] = False,
    keep_columns: Annotated[bool, typer.Option(help="Copy the input columns into the output.")] = False,
    batch_size: Annotated[int, typer.Option(help="Most texts per batch (on a CPU also at most 1,024 tokens).")] = 64,
    encoding: Annotated[str | None, typer.Option(help="Input encoding. Default: UTF-8, then GB18030.")] = None,
    cpu: Annotated[bool, typer.Option(help="Run on the CPU even if a GPU is present.")] = False,
    quantize: Annotated[str | None, typer.Option(help="int8: dynamic int8 quantization of the linear layers for "
                        "faster CPU inference (runs on the CPU).")] = None,
) -> None:
    """Classify new texts with a trained run; one output row per input row, in input order.

    Examples:

        bertclf predict runs/topics examples/new_texts.txt

        cat texts.txt | bertclf predict runs/topics - --top-k 3 > predictions.jsonl

        bertclf predict runs/topics new.csv -o predictions.csv --all-probs --keep-columns
    """
    with user_errors():
        if (input_path is None) == (not text):
            raise UsageError("Give either an INPUT file (or - for stdin) or --text, not both and not neither.")
        if top_k < 1 or batch_size < 1:
            raise UsageError("--top-k and --batch-size must be 1 or more.")
        from bertclf.model import read_manifest
        from bertclf.streams import RowWriter, open_input
        from bertclf.streams import output_format as pick_output_format

        manifest = read_manifest(run_dir)
        fmt = pick_output_format(output, output_format)
        pair_col = text_pair_column or manifest.get("text_pair_column")
        if text:
            rows, text_col, id_col = _rows_from_options(text, text_pair, pair_col)
        else:
            records = open_input(input_path, fmt=input_format, encoding=encoding, text_column=text_column,
                                 preferred_column=manifest.get("text_column"), pair_column=pair_col)
            rows, text_col = iter(records), records.text_column
            id_col = "id" if "id" in records.columns else None

        from bertclf.predict import Predictor

        predictor = Predictor.from_dir(run_dir, cpu=cpu, quantize=quantize, threshold=threshold)
        top_k = min(top_k, len(predictor.labels))
        writer = RowWriter(output, fmt)
        success = False
        empty = total = 0
        try:
            buffered: collections.deque[dict[str, str]] = collections.deque()  # rows read, not yet written

            def texts():
                for row in rows:
                    buffered.append(row)
                    yield (row.get(text_col, ""), row.get(pair_col, "")) if pair_col else row.get(text_col, "")

            for number, prediction in enumerate(predictor.predict_stream(texts(), top_k=top_k,
                                                                         batch_size=batch_size), start=1):
                row = buffered.popleft()
                total += 1
                empty += prediction.is_empty
                writer.write(_prediction_row(number, row, id_col, prediction, predictor, fmt, top_k,
                                             all_probs, keep_columns))
            success = True
        finally:
            writer.close(success)
        if empty:
            console.warn(f"{empty} of {total} input row(s) had an empty text; their label is left empty.")
        if output is not None:
            console.info(f"Wrote {total} predictions to {output}")


def _rows_from_options(texts: list[str], pairs: list[str] | None, pair_col: str | None):
    """--text (and --text-pair) options as input rows: (rows, text column, id column)."""
    if pair_col is None and pairs:
        raise UsageError("--text-pair is for models trained with --text-pair-column; this one takes single texts.")
    if pair_col is not None and len(pairs or []) != len(texts):
        raise UsageError(f"This model classifies text pairs: give one --text-pair for each --text "
                         f"({len(texts)} --text, {len(pairs or [])} --text-pair).")
    rows = [{"text": t, **({pair_col: p} if pair_col else {})} for t, p in zip(texts, pairs or [""] * len(texts),
                                                                              strict=True)]
    return iter(rows), "text", None


def _prediction_row(number: int, row: dict, id_col: str | None, prediction, predictor, fmt: str,
                    top_k: int, all_probs: bool, keep_columns: bool) -> dict:
    labels = predictor.labels
    out: dict = {"id": row.get(id_col) if id_col else number}
    if predictor.space.multi_label:
        # The label set and, always, every label's probability: a set alone hides how close the rest came.
        chosen = prediction.labels if not prediction.is_empty else None
        out["labels"] = chosen if fmt == "jsonl" or chosen is None else predictor.manifest.get(
            "label_separator", ",").join(chosen)
        all_probs = True
    else:
        out["label"] = prediction.label
        out["score"] = None if prediction.score is None else round(prediction.score, 6)
    if top_k > 1:
        if fmt == "jsonl":
            out["top_k"] = [{"label": label, "score": round(p, 6)} for label, p in prediction.top_k]
        else:
            for rank in range(top_k):
                pair = prediction.top_k[rank] if rank < len(prediction.top_k) else (None, None)
                out[f"label_{rank + 1}"] = pair[0]
                out[f"score_{rank + 1}"] = None if pair[1] is None else round(pair[1], 6)
    if all_probs:
        if fmt == "jsonl":
            out["probs"] = {label: round(prediction.probs[label], 6) for label in labels} if prediction.probs else {}
        else:
            for label in labels:
                out[f"prob_{label}"] = round(prediction.probs[label], 6) if prediction.probs else None
    if keep_columns:
        for key, value in row.items():
            out.setdefault(key if key not in out else f"input_{key}", value)
    return out


# ------------------------------------------------------------------------------------------- inspect
@app.command()
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
    if json_output:
        console.print_json(report)
        return
    _render_inspection(report)


def _render_inspection(report: dict) -> None:
    from rich.table import Table

    out = console.out
    out.print(f"[bold]{report['path']}[/bold]: {report['rows']} rows, {report['format']}, {report['encoding']}; "
              f"text column {report['text_column']!r}, label column {report['label_column']!r}")
    labels = Table(title=f"{len(report['labels'])} labels", header_style="bold")
    labels.add_column("label")
    labels.add_column("rows", justify="right")
    labels.add_column("share", justify="right")
    labels.add_column("")
    top = max(report["labels"].values())
    for label, count in report["labels"].items():
        bar = "█" * max(1, round(30 * count / top))
        labels.add_row(label, str(count), f"{count / report['rows_with_text']:.1%}", bar)
    out.print(labels)
    if "labels_per_row" in report:
        out.print("Labels per row: " + ", ".join(f"{n}: {rows} rows" for n, rows in report["labels_per_row"].items()))
    lengths = Table(title="Text length", header_style="bold")
    lengths.add_column("unit")
    for key in report["char_length"]:
        lengths.add_column(key, justify="right")
    lengths.add_row("characters", *[f"{v:.0f}" for v in report["char_length"].values()])
    if "tokens" in report:
        lengths.add_row(f"tokens ({report['tokens']['model']})",
                        *[f"{v:.0f}" for v in report["tokens"]["percentiles"].values()])
    out.print(lengths)
    if "tokens" in report:
        tokens = report["tokens"]
        out.print(f"{tokens['truncated']} texts ({tokens['truncated_share']:.1%}) exceed {tokens['max_length']} "
                  "tokens.")
    out.print(f"Duplicate texts: {report['duplicate_texts']}; texts with conflicting labels: "
              f"{report['conflicting_texts']}")
    if "against" in report:
        other = report["against"]
        out.print(f"Against {other['path']}: {other['overlapping_texts']} of {other['rows']} texts "
                  f"({other['overlap_share']:.1%}) also appear here; labels missing here: "
                  f"{other['labels_not_in_this_file'] or 'none'}")


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


def main() -> None:
    """Console-script entry point."""
    try:
        app(args=normalize_resume(sys.argv[1:]), prog_name="bertclf")
    except UsageError as exc:  # raised outside a command body (should not happen, but never a traceback)
        console.err.print(f"Error: {exc.message}")
        sys.exit(exc.exit_code)
