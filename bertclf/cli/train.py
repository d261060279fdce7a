"""`bertclf train`: options -> TrainConfig -> `bertclf.train.train` -> the summary renderer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

import bertclf.cli._output as _output
from bertclf.cli._cli_utils import DATA_PANEL, MODEL_PANEL, OPT_PANEL, RUN_PANEL
from bertclf.cli._errors import user_errors
from bertclf.config import (
    TrainConfig,
    parse_batch_size,
    parse_bigram_buckets,
    parse_learning_rate,
    parse_max_length,
)

D = TrainConfig  # defaults live once, in the dataclass


# Options, declared once as types (as the hf CLI does), so the command reads as options -> config -> core.
DataOpt = Annotated[Path, typer.Argument(help="Training data: CSV, TSV, JSON or JSONL with a text and a label column.",
                                         show_default=False)]
ValidationOpt = Annotated[Path | None, typer.Option("--validation", help="Validation file. Default: a stratified "
                          "split of DATA sized by --validation-split.", rich_help_panel=DATA_PANEL)]
ValidationSplitOpt = Annotated[float, typer.Option(help="Share of DATA held out for validation when --validation "
                                "is not given.", rich_help_panel=DATA_PANEL)]
TextColumnOpt = Annotated[str | None, typer.Option(help="Text column. Default: the first of text, sentence, "
                           "content, review.", rich_help_panel=DATA_PANEL)]
LabelColumnOpt = Annotated[str | None, typer.Option(help="Label column. Default: the first of label, labels, "
                            "target, category.", rich_help_panel=DATA_PANEL)]
TextPairColumnOpt = Annotated[str | None, typer.Option(help="Column of a second text per row (sentence pairs: "
                                "question/answer, premise/hypothesis), encoded as a BERT pair [CLS] a [SEP] b [SEP].",
                                rich_help_panel=DATA_PANEL)]
MultiLabelOpt = Annotated[bool, typer.Option(help="Each row may have several labels (or none): a JSON list, or "
                           "names separated by --label-separator. Sigmoid outputs, per-label thresholds tuned on "
                           "validation.", rich_help_panel=DATA_PANEL)]
LabelSeparatorOpt = Annotated[str, typer.Option(help="Separator between the labels of a --multi-label cell.",
                               rich_help_panel=DATA_PANEL)]
EncodingOpt = Annotated[str | None, typer.Option(help="File encoding. Default: UTF-8 (with or without BOM), then "
                        "GB18030.", rich_help_panel=DATA_PANEL)]
DataFormatOpt = Annotated[str | None, typer.Option("--format", help="csv, tsv, json, jsonl, parquet or fasttext. "
                           "Default: from the file extension.", rich_help_panel=DATA_PANEL)]
DropEmptyOpt = Annotated[bool, typer.Option(help="Leave out rows with an empty text, with a warning, instead of "
                          "failing.", rich_help_panel=DATA_PANEL)]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Local directory (a `bertclf pretrain` output too), "
                     "packaged model (all-MiniLM-L6-v2), Hub id (bert-base-chinese; HF_ENDPOINT for a mirror), "
                     "ms://owner/name (ModelScope), scratch[:tiny|mini|small], or auto (bert-base-chinese for "
                     "Chinese data, else bert-base-uncased).", rich_help_panel=MODEL_PANEL)]
RevisionOpt = Annotated[str | None, typer.Option(help="Branch, tag or commit of a Hub or ModelScope --model (a "
                        "commit pins the exact files; the commit used is recorded in bertclf.json). Default: the "
                        "default branch.", rich_help_panel=MODEL_PANEL)]
MaxLengthOpt = Annotated[str, typer.Option(help="Tokens per text, [CLS] and [SEP] included, or auto: the "
                          "shortest of 128, 256 and 512 that holds 95% of the training texts whole (at most what "
                          "the model was trained on).", rich_help_panel=MODEL_PANEL)]
TruncationOpt = Annotated[str, typer.Option(help="Which tokens of a long text to keep: head, tail or head+tail.",
                          rich_help_panel=MODEL_PANEL)]
LongTextOpt = Annotated[str, typer.Option(help="truncate (per --truncation), or chunks: split long texts into "
                         "overlapping windows of --max-length and average the windows' probabilities.",
                         rich_help_panel=MODEL_PANEL)]
PoolingOpt = Annotated[str, typer.Option(help="What the classifier reads: cls (the [CLS] vector, BERT's own head), "
                       "mean (the mean of all tokens' vectors) or auto (mean for a `bertclf pretrain --model "
                       "scratch` model, whose [CLS] learnt nothing in pre-training; cls otherwise).",
                       rich_help_panel=MODEL_PANEL)]
BigramBucketsOpt = Annotated[str, typer.Option("--bigram-buckets", help="Rows of a scratch model's character-bigram "
                             "table, or auto (50,000 for mostly-Chinese text, none otherwise); 0: no table.",
                             rich_help_panel=MODEL_PANEL)]
StrideOpt = Annotated[int | None, typer.Option(help="With --long-text chunks: tokens shared by consecutive "
                      "windows. Default: a quarter of --max-length.", rich_help_panel=MODEL_PANEL)]
EpochsOpt = Annotated[float, typer.Option(help="Passes over the training data.", rich_help_panel=OPT_PANEL)]
MaxStepsOpt = Annotated[int | None, typer.Option(help="Stop after this many optimizer steps (overrides --epochs).",
                         rich_help_panel=OPT_PANEL)]
BatchSizeOpt = Annotated[int, typer.Option(help="Examples per batch (per process).", rich_help_panel=OPT_PANEL)]
TrainBatchSizeOpt = Annotated[str, typer.Option("--batch-size", help="Examples per batch (per process), or auto: 32, "
                              "or 16 or 8 where 32 would give fewer than 1,500 optimizer updates (a from-scratch "
                              "model: 300), or 100 per label.",
                              rich_help_panel=OPT_PANEL)]
LrOpt = Annotated[str, typer.Option("--lr", help="Peak learning rate, or auto (by model size: 5e-5 for base "
                  "BERTs, 1e-4 for MiniLM-size (5e-5 with two labels), 5e-4 for scratch models).",
                  rich_help_panel=OPT_PANEL)]
WeightDecayOpt = Annotated[float, typer.Option(help="AdamW weight decay.", rich_help_panel=OPT_PANEL)]
WarmupRatioOpt = Annotated[float, typer.Option(help="Share of steps spent warming the learning rate up.",
                            rich_help_panel=OPT_PANEL)]
GradAccumOpt = Annotated[int, typer.Option(help="Batches per optimizer step (gradient accumulation).",
                          rich_help_panel=OPT_PANEL)]
MaxGradNormOpt = Annotated[float, typer.Option(help="Gradient clipping norm.", rich_help_panel=OPT_PANEL)]
EvalEveryOpt = Annotated[int | None, typer.Option(help="Evaluate every N optimizer steps. Default: once per epoch.",
                          rich_help_panel=OPT_PANEL)]
EarlyStoppingOpt = Annotated[int | None, typer.Option(metavar="PATIENCE", help="Stop after PATIENCE evaluations "
                              "without improvement of --metric.", rich_help_panel=OPT_PANEL)]
ClassWeightsOpt = Annotated[str | None, typer.Option(help="Weight the loss by class: balanced (inverse "
                             "frequency) or LABEL=WEIGHT,... for imbalanced data.", rich_help_panel=OPT_PANEL)]
CalibrationOpt = Annotated[bool, typer.Option(help="Single-label runs: fit a temperature on validation and fold it "
                            "into the classifier, so the scores are calibrated probabilities (predictions "
                            "unchanged). --no-calibration keeps the raw scores.", rich_help_panel=OPT_PANEL)]
MetricOpt = Annotated[str, typer.Option(help="Validation metric that picks the best model: macro_f1, accuracy, "
                      "micro_f1, weighted_f1, mcc, loss, ...", rich_help_panel=OPT_PANEL)]
SeedOpt = Annotated[int, typer.Option(help="Random seed (split, initialisation, data order).",
                    rich_help_panel=OPT_PANEL)]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Run directory to write. Default: "
                      "runs/<data name>-<time>.", rich_help_panel=RUN_PANEL)]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace an earlier run in --output.",
                         rich_help_panel=RUN_PANEL)]
MixedPrecisionOpt = Annotated[str, typer.Option(help="auto, no, fp16 or bf16. auto: bf16/fp16 on GPUs, fp32 "
                               "on CPUs without native bf16.", rich_help_panel=RUN_PANEL)]
CpuOpt = Annotated[bool, typer.Option(help="Train on the CPU even if a GPU is present.",
                   rich_help_panel=RUN_PANEL)]
CompileOpt = Annotated[str, typer.Option("--compile", help="torch.compile the training step: auto, yes or no. auto "
                       "compiles only where it was measured to pay (nowhere yet: not on 2-core CPUs); yes pays a "
                       "one-off compile time, reported apart from samples/s.", rich_help_panel=RUN_PANEL)]
GradientCheckpointingOpt = Annotated[bool, typer.Option(help="Recompute activations during backward: less "
                                      "memory for large models on small GPUs, about 30% slower.",
                                      rich_help_panel=RUN_PANEL)]
ReportToOpt = Annotated[str, typer.Option(help="Also log to an experiment tracker: none, tensorboard, wandb or "
                         "mlflow (its package must be installed).", rich_help_panel=RUN_PANEL)]
LogEveryOpt = Annotated[int, typer.Option(help="Optimizer steps between train_log.jsonl lines.",
                         rich_help_panel=RUN_PANEL)]
SaveEveryOpt = Annotated[int | None, typer.Option(help="Write a resumable checkpoint every N optimizer steps.",
                          rich_help_panel=RUN_PANEL)]
KeepOpt = Annotated[int, typer.Option(help="Checkpoints to keep (older ones are deleted once a newer one is "
                    "complete).", rich_help_panel=RUN_PANEL)]
ResumeOpt = Annotated[str | None, typer.Option("--resume", metavar="[CHECKPOINT]", help="Continue the run in "
                      "--output from its newest valid checkpoint, or from the CHECKPOINT directory given.",
                      rich_help_panel=RUN_PANEL)]
JsonOutputOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout.",
                           rich_help_panel=RUN_PANEL)]


def train(
    data: DataOpt,
    validation: ValidationOpt = None,
    validation_split: ValidationSplitOpt = D.validation_split,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    text_pair_column: TextPairColumnOpt = None,
    multi_label: MultiLabelOpt = False,
    label_separator: LabelSeparatorOpt = D.label_separator,
    encoding: EncodingOpt = None,
    data_format: DataFormatOpt = None,
    drop_empty: DropEmptyOpt = False,
    model: ModelOpt = D.model,
    revision: RevisionOpt = None,
    max_length: MaxLengthOpt = "auto",
    truncation: TruncationOpt = D.truncation,
    long_text: LongTextOpt = D.long_text,
    stride: StrideOpt = None,
    pooling: PoolingOpt = D.pooling,
    bigram_buckets: BigramBucketsOpt = "auto",
    epochs: EpochsOpt = D.epochs,
    max_steps: MaxStepsOpt = None,
    batch_size: TrainBatchSizeOpt = "auto",
    lr: LrOpt = "auto",
    weight_decay: WeightDecayOpt = D.weight_decay,
    warmup_ratio: WarmupRatioOpt = D.warmup_ratio,
    grad_accum: GradAccumOpt = D.grad_accum,
    max_grad_norm: MaxGradNormOpt = D.max_grad_norm,
    eval_every: EvalEveryOpt = None,
    early_stopping: EarlyStoppingOpt = None,
    class_weights: ClassWeightsOpt = None,
    calibration: CalibrationOpt = D.calibration,
    metric: MetricOpt = D.metric,
    seed: SeedOpt = D.seed,
    output: OutputOpt = None,
    overwrite: OverwriteOpt = False,
    mixed_precision: MixedPrecisionOpt = D.mixed_precision,
    cpu: CpuOpt = False,
    compile: CompileOpt = D.compile,
    gradient_checkpointing: GradientCheckpointingOpt = False,
    report_to: ReportToOpt = D.report_to,
    log_every: LogEveryOpt = D.log_every,
    save_every: SaveEveryOpt = None,
    keep: KeepOpt = D.keep,
    resume: ResumeOpt = None,
    json_output: JsonOutputOpt = False,
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
            multi_label=multi_label, label_separator=label_separator, model=model, revision=revision, output=output,
            overwrite=overwrite, max_length=parse_max_length(max_length), truncation=truncation, long_text=long_text,
            stride=stride, pooling=pooling, bigram_buckets=parse_bigram_buckets(bigram_buckets), epochs=epochs,
            max_steps=max_steps,
            batch_size=parse_batch_size(batch_size), lr=parse_learning_rate(lr), weight_decay=weight_decay,
            warmup_ratio=warmup_ratio, grad_accum=grad_accum, max_grad_norm=max_grad_norm,
            eval_every=eval_every, early_stopping=early_stopping, metric=metric, seed=seed,
            mixed_precision=mixed_precision, cpu=cpu, encoding=encoding, data_format=data_format,
            drop_empty=drop_empty, log_every=log_every, save_every=save_every, keep=keep, resume=resume,
            gradient_checkpointing=gradient_checkpointing, report_to=report_to, class_weights=class_weights,
            calibration=calibration, compile=compile, argv=tuple(sys.argv),
        )
        from bertclf.train import train as run_training

        result = run_training(config)
        if result.is_main_process:
            _output.render_train_result(result, as_json=json_output)
