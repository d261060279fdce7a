"""`bertclf train`: options -> TrainConfig -> `bertclf.train.train` -> the summary renderer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bertclf.cli import _output
from bertclf.cli._cli_utils import DATA_PANEL, MODEL_PANEL, OPT_PANEL, RUN_PANEL
from bertclf.cli._errors import user_errors
from bertclf.config import TrainConfig, parse_learning_rate

D = TrainConfig  # defaults live once, in the dataclass


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
        if result.is_main_process:
            _output.render_train_result(result, as_json=json_output)
