"""`bertclf predict`: options -> PredictConfig -> `bertclf.predict.run_predict` (which streams rows in and out)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertclf import console
from bertclf.cli._cli_utils import PrecisionOpt
from bertclf.cli._errors import user_errors
from bertclf.config import PredictConfig


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
    precision: PrecisionOpt = "auto",
    quantize: Annotated[str | None, typer.Option(help="int8: dynamic int8 quantization of the linear layers for "
                        "faster CPU inference (runs on the CPU); with --backend onnx, the int8 ONNX model.")] = None,
    backend: Annotated[str, typer.Option(help="torch, or onnx: the model `bertclf export` wrote to RUN_DIR/onnx, "
                       "on onnxruntime (CPU).")] = "torch",
    compile: Annotated[str, typer.Option("--compile", help="torch.compile the model: auto, yes or no. auto compiles "
                       "only where it was measured to pay (nowhere yet: not on 2-core CPUs); yes pays a one-off "
                       "compile time (reported on stderr) for faster batches.")] = PredictConfig.compile,
) -> None:
    """Classify new texts with a trained run; one output row per input row, in input order.

    Examples:

        bertclf predict runs/topics examples/new_texts.txt

        cat texts.txt | bertclf predict runs/topics - --top-k 3 > predictions.jsonl

        bertclf predict runs/topics new.csv -o predictions.csv --all-probs --keep-columns
    """
    with user_errors():
        config = PredictConfig(run_dir=run_dir, input=input_path, texts=tuple(text or ()),
                               text_pairs=tuple(text_pair or ()), output=output, output_format=output_format,
                               input_format=input_format, text_column=text_column, text_pair_column=text_pair_column,
                               threshold=threshold, top_k=top_k, all_probs=all_probs, keep_columns=keep_columns,
                               batch_size=batch_size, encoding=encoding, cpu=cpu, quantize=quantize,
                               backend=backend, compile=compile, precision=precision)
        from bertclf.predict import run_predict

        summary = run_predict(config)
        took = f"{summary.predict_seconds:.1f} s ({summary.rows / max(summary.predict_seconds, 1e-9):.1f} rows/s)"
        if summary.compile_seconds is not None:  # apart, so rows/s says what compiling bought
            console.info(f"torch.compile took {summary.compile_seconds:.1f} s, once, before the first row; the "
                         f"{summary.rows} rows then took {took}")
        if output is not None:
            console.info(f"Wrote {summary.rows} predictions to {output} in {took}")
