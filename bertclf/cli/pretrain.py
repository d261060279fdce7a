"""`bertclf pretrain`: options -> PretrainConfig -> `bertclf.pretrain.pretrain` -> the summary renderer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

import bertclf.cli._output as _output
from bertclf.cli._cli_utils import DATA_PANEL, MODEL_PANEL, OPT_PANEL, RUN_PANEL
from bertclf.cli._errors import user_errors
from bertclf.cli.train import (
    BatchSizeOpt,
    BigramBucketsOpt,
    CpuOpt,
    EncodingOpt,
    EpochsOpt,
    GradAccumOpt,
    JsonOutputOpt,
    KeepOpt,
    LogEveryOpt,
    MaxGradNormOpt,
    MaxStepsOpt,
    MixedPrecisionOpt,
    OverwriteOpt,
    ResumeOpt,
    RevisionOpt,
    SaveEveryOpt,
    SeedOpt,
    WeightDecayOpt,
)
from bertclf.config import PretrainConfig, parse_bigram_buckets, parse_learning_rate

D = PretrainConfig

CorpusOpt = Annotated[list[Path], typer.Argument(
    metavar="CORPUS", help="Unlabelled text: .txt (one text a line), or CSV, TSV, JSONL, JSON or Parquet with a text "
    "column. Several files allowed.", show_default=False)]
TextColumnOpt = Annotated[str | None, typer.Option(help="Text column of CSV/TSV/JSON/Parquet corpora. Default: the "
                           "first of text, sentence, content, review.", rich_help_panel=DATA_PANEL)]
FormatOpt = Annotated[str | None, typer.Option("--format", help="txt, csv, tsv, jsonl, json or parquet. Default: "
                       "from the file extension (.txt: one text a line).", rich_help_panel=DATA_PANEL)]
ValidationSplitOpt = Annotated[float, typer.Option(help="Share of the corpus texts held out to report the masked-LM "
                                "loss and perplexity (at most --max-validation-texts).", rich_help_panel=DATA_PANEL)]
MaxValidationOpt = Annotated[int, typer.Option(help="Most texts held out.", rich_help_panel=DATA_PANEL)]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="scratch[:tiny|mini|small] (a new BERT, vocabulary "
                     "built from the corpus), or a model to continue pre-training: a local directory, a packaged "
                     "model (all-MiniLM-L6-v2), a Hub id (bert-base-chinese; HF_ENDPOINT for a mirror) or "
                     "ms://owner/name (ModelScope).", rich_help_panel=MODEL_PANEL)]
MaxLengthOpt = Annotated[int, typer.Option(help="Tokens per packed sequence ([CLS] and [SEP] included): short texts "
                          "are packed together up to this length.", rich_help_panel=MODEL_PANEL)]
MlmProbabilityOpt = Annotated[float, typer.Option(help="Share of tokens masked and predicted (80% become [MASK], "
                               "10% a random token, 10% stay).", rich_help_panel=MODEL_PANEL)]
WholeWordMaskOpt = Annotated[bool, typer.Option(help="Mask whole words: Chinese words as the jieba segmenter cuts "
                              "them (pip install 'bertclf[zh]'), other words as WordPiece pieces; every chosen "
                              "word becomes [MASK].",
                              rich_help_panel=MODEL_PANEL)]
LrOpt = Annotated[str, typer.Option("--lr", help="Peak learning rate, or auto (1e-3 for scratch:tiny/mini, 5e-4 for "
                  "larger scratch models, 1e-4 continuing MiniLM-size models, 5e-5 base-size).",
                  rich_help_panel=OPT_PANEL)]
WarmupRatioOpt = Annotated[float, typer.Option(help="Share of steps spent warming the learning rate up.",
                            rich_help_panel=OPT_PANEL)]
EvalEveryOpt = Annotated[int | None, typer.Option(help="Score the held-out texts every N optimizer steps. Default: "
                          "10 times in the run.", rich_help_panel=OPT_PANEL)]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Model directory to write. Default: "
                      "runs/pretrain-<corpus name>-<time>.", rich_help_panel=RUN_PANEL)]


def pretrain(
    corpus: CorpusOpt,
    text_column: TextColumnOpt = None,
    data_format: FormatOpt = None,
    encoding: EncodingOpt = None,
    validation_split: ValidationSplitOpt = D.validation_split,
    max_validation_texts: MaxValidationOpt = D.max_validation_texts,
    model: ModelOpt = D.model,
    revision: RevisionOpt = None,
    max_length: MaxLengthOpt = D.max_length,
    mlm_probability: MlmProbabilityOpt = D.mlm_probability,
    whole_word_mask: WholeWordMaskOpt = False,
    bigram_buckets: BigramBucketsOpt = "auto",
    epochs: EpochsOpt = D.epochs,
    max_steps: MaxStepsOpt = None,
    batch_size: BatchSizeOpt = D.batch_size,
    lr: LrOpt = "auto",
    weight_decay: WeightDecayOpt = D.weight_decay,
    warmup_ratio: WarmupRatioOpt = D.warmup_ratio,
    grad_accum: GradAccumOpt = D.grad_accum,
    max_grad_norm: MaxGradNormOpt = D.max_grad_norm,
    eval_every: EvalEveryOpt = None,
    seed: SeedOpt = D.seed,
    output: OutputOpt = None,
    overwrite: OverwriteOpt = False,
    mixed_precision: MixedPrecisionOpt = D.mixed_precision,
    cpu: CpuOpt = False,
    log_every: LogEveryOpt = D.log_every,
    save_every: SaveEveryOpt = None,
    keep: KeepOpt = D.keep,
    resume: ResumeOpt = None,
    json_output: JsonOutputOpt = False,
) -> None:
    """Pre-train a BERT as a masked language model on unlabelled text (from scratch or continuing a model), for
    `bertclf train --model DIR` to fine-tune.

    Examples:

        bertclf pretrain reviews.txt --model scratch -o models/zh-reviews

        bertclf pretrain corpus.txt train.csv --model bert-base-chinese --whole-word-mask -o models/dapt
    """
    with user_errors():
        config = PretrainConfig(
            corpus_files=tuple(corpus), text_column=text_column, data_format=data_format, encoding=encoding,
            validation_split=validation_split, max_validation_texts=max_validation_texts, model=model,
            revision=revision, max_length=max_length, mlm_probability=mlm_probability,
            whole_word_mask=whole_word_mask, bigram_buckets=parse_bigram_buckets(bigram_buckets), epochs=epochs,
            max_steps=max_steps, batch_size=batch_size, lr=parse_learning_rate(lr), weight_decay=weight_decay,
            warmup_ratio=warmup_ratio, grad_accum=grad_accum, max_grad_norm=max_grad_norm, eval_every=eval_every,
            seed=seed, output=output, overwrite=overwrite, mixed_precision=mixed_precision, cpu=cpu,
            log_every=log_every, save_every=save_every, keep=keep, resume=resume, argv=tuple(sys.argv),
        )
        from bertclf.pretrain import pretrain as run_pretraining

        result = run_pretraining(config)
        if result.is_main_process:
            _output.render_pretrain_result(result, as_json=json_output)
