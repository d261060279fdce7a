"""`bertclf export`: options -> ExportConfig -> `bertclf.export.export_run` -> a summary (or --json)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from bertclf import console
from bertclf.cli._errors import user_errors


def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `bertclf train`.", show_default=False)],
    quantize: Annotated[str | None, typer.Option(help="int8: also write onnx/model_quantized.onnx (dynamic int8, "
                        "onnxruntime.quantization), its accuracy change against fp32 measured.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write a self-contained model directory "
                      "here (DIR/onnx/model.onnx and copies of config.json, the tokenizer and bertclf.json) "
                      "instead of RUN_DIR/onnx.")] = None,
    check_data: Annotated[Path | None, typer.Option(help="Texts to check the export on (CSV, TSV, JSON, JSONL; "
                          "with labels, int8 accuracy is measured). Default: the run's validation file, else "
                          "its training file.")] = None,
    check_rows: Annotated[int, typer.Option(help="Most rows of the check file to use (evenly spaced).")] = 512,
    json_output: Annotated[bool, typer.Option("--json", help="Print the export report as JSON on stdout.")] = False,
) -> None:
    """Export a run to ONNX for onnxruntime, TEI or Optimum, and check it against the torch model: fp32 logits
    within 1e-4 and the same label for every check text (else exit 70 and no model.onnx).

    Examples:

        bertclf export runs/topics --quantize int8

        bertclf predict runs/topics new.csv --backend onnx --quantize int8
    """
    with user_errors():
        from bertclf.export import ExportConfig

        config = ExportConfig(run_dir=run_dir, output=output, quantize=quantize, check_data=check_data,
                              check_rows=check_rows)
        from bertclf.onnx_backend import import_onnxruntime

        import_onnxruntime()  # a missing deploy extra is exit 69 before the model loads
        from bertclf.export import export_run

        report = export_run(config)
        if json_output:
            console.print_json(report)
            return
        fp32 = report["fp32"]
        lines = [f"{report['model_dir']}/{fp32['file']}: fp32, max logit difference {fp32['max_abs_diff']:.1e} on "
                 f"{report['check_data']['rows']} texts ({report['check_data']['source']}), "
                 f"{fp32['labels_differ']} labels differ"]
        if "int8" in report:
            int8 = report["int8"]
            change = int8.get("accuracy_change")
            lines.append(f"{report['model_dir']}/{int8['file']}: int8, {int8['labels_differ']} labels differ from "
                         "torch fp32" + (f", accuracy {int8['accuracy']:.4f} ({change * 100:+.2f} points against "
                                         "fp32)" if change is not None else ""))
        for line in lines:
            console.out.print(Text(line))
