"""`bertclf export`: a run directory to ONNX (fp32, and dynamic int8), each file checked before it is kept.

The model is traced with `torch.onnx.export(dynamo=True)` (opset 18; batch and sequence dimensions symbolic;
inputs exactly the tokenizer's: input_ids, attention_mask, token_type_ids; output `logits`), with the last
layer computing [CLS] only, as bertclf's torch inference does. The model's bytes stay in memory until they
have passed the parity check: onnxruntime runs them on real texts through the same inference engine as
torch (bertclf/inference.py), and fp32 logits must agree within FP32_TOLERANCE with the same label for every
text. Only then is `onnx/model.onnx` written (atomically, bertclf/safe_write.py), so a failed check (exit 70)
leaves no model.onnx behind. Int8 (`onnxruntime.quantization`: quant_pre_process, then quantize_dynamic) is
checked for its accuracy change against fp32 on the labelled rows.

Check texts: `--check-data FILE` if given; else the run's validation file, else its training file, when the
manifest names one that still exists (read with the run's columns), evenly spaced rows, at most --check-rows.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertclf import console
from bertclf.errors import BertclfError, DataError, InputMissingError, UsageError
from bertclf.onnx_backend import FP32_FILE, INPUT_NAMES, INT8_FILE, ONNX_DIR, OnnxClassifier, make_session
from bertclf.safe_write import atomic_output

FP32_TOLERANCE = 1e-4  # max abs difference of fp32 logits, ONNX against torch
OPSET = 18
REPORT_FILE = "export_report.json"
# Files copied beside onnx/ when -o DIR is not the run directory, so DIR is a model directory of its own
# (the layout TEI's ONNX backend and Optimum read, and `bertclf predict/serve --backend onnx DIR` loads).
RUN_FILES = ("config.json", "bertclf.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "vocab.txt")


class ParityError(BertclfError):
    """The exported model does not compute what the torch model computes: a bug (of bertclf or the exporter)."""
    # exit_code 70 (EX_SOFTWARE), inherited


@dataclass(frozen=True)
class ExportConfig:
    run_dir: Path
    output: Path | None = None  # None: the run directory itself (files go to RUN_DIR/onnx)
    quantize: str | None = None  # "int8": also model_quantized.onnx
    check_data: Path | None = None
    check_rows: int = 512
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.quantize is not None and self.quantize != "int8":
            raise UsageError(f"Invalid value for --quantize: {self.quantize!r}. The only mode is int8.")
        if self.check_rows < 1:
            raise UsageError(f"Invalid value for --check-rows: {self.check_rows}. Give 1 or more.")

    @property
    def model_dir(self) -> Path:
        return Path(self.output) if self.output is not None else Path(self.run_dir)


@dataclass
class CheckTexts:
    texts: list[str]
    pairs: list[str] | None
    gold: list | None  # label names (lists of names for multi-label); None for unlabelled texts
    path: Path
    source: str


def export_run(config: ExportConfig) -> dict:
    """Export, check, write; returns the report (also written to onnx/export_report.json)."""
    from bertclf.predict import Predictor

    started = time.perf_counter()
    predictor = Predictor.from_dir(config.run_dir, cpu=True, precision="fp32")  # the parity check is against fp32
    check = check_texts(config, predictor.manifest)
    onnx_dir = config.model_dir / ONNX_DIR
    onnx_dir.mkdir(parents=True, exist_ok=True)
    fp32_bytes, graph = export_fp32(predictor.model)
    exported = time.perf_counter()
    report = {"run_dir": str(config.run_dir), "model_dir": str(config.model_dir),
              "exporter": "torch.onnx.export(dynamo=True)", "opset": OPSET, **graph,
              "check_data": {"path": str(check.path), "source": check.source, "rows": len(check.texts),
                             "labelled": check.gold is not None}}
    torch_logits, encoded = _logits(predictor, predictor.model, check)
    fp32 = _compare(predictor, check, encoded, torch_logits, OnnxClassifier(make_session(fp32_bytes),
                                                                            predictor.model.config))
    fp32.update(file=f"{ONNX_DIR}/{FP32_FILE}", bytes=len(fp32_bytes), tolerance=FP32_TOLERANCE)
    fp32["passed"] = bool(fp32["max_abs_diff"] <= FP32_TOLERANCE and fp32["labels_differ"] == 0)
    report["fp32"] = fp32
    if not fp32["passed"]:
        _write_report(onnx_dir, report, started)
        raise ParityError(f"The exported ONNX model disagrees with the torch model on {config.run_dir}: max "
                          f"logit difference {fp32['max_abs_diff']:.2e} (tolerance {FP32_TOLERANCE:g}), "
                          f"{fp32['labels_differ']} of {len(check.texts)} label(s) differ; no {FP32_FILE} was "
                          "written.", hint=f"The figures are in {onnx_dir / REPORT_FILE}. This is a bug: report it "
                          "with that file.")
    _write_bytes(onnx_dir / FP32_FILE, fp32_bytes)
    if config.output is not None:
        _copy_run_files(Path(config.run_dir), config.model_dir)
    if config.quantize:
        int8_bytes, settings = quantize_int8(fp32_bytes)
        int8 = _compare(predictor, check, encoded, torch_logits,
                        OnnxClassifier(make_session(int8_bytes), predictor.model.config))
        int8.update(file=f"{ONNX_DIR}/{INT8_FILE}", bytes=len(int8_bytes), **settings)
        if fp32.get("accuracy") is not None:
            int8["accuracy_change"] = round(int8["accuracy"] - fp32["accuracy"], 6)
        report["int8"] = int8
        _write_bytes(onnx_dir / INT8_FILE, int8_bytes)
    report["seconds"] = {"export": round(exported - started, 2)}
    _write_report(onnx_dir, report, started)
    return report


def export_fp32(model) -> tuple[bytes, dict]:
    """The model as ONNX bytes (dynamo exporter), and its inputs with their symbolic dimensions."""
    import torch

    from bertclf.cls_only import cls_only_last_layer

    class Logits(torch.nn.Module):
        """Exactly the tokenizer's inputs in, logits out (a ModelOutput is no ONNX output)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits

    # Batch 2 and 9 tokens with padding: an example of size 1 would be specialised to a constant.
    ids = torch.full((2, 9), 5, dtype=torch.long)
    ids[:, 0], ids[:, -1] = 101 % model.config.vocab_size, 102 % model.config.vocab_size
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    wrapper = Logits(model).eval()
    with _quiet_exporter(), torch.inference_mode(), cls_only_last_layer(model):
        program = torch.onnx.export(wrapper, (ids, mask, types), dynamo=True, opset_version=OPSET,
                                    input_names=list(INPUT_NAMES), output_names=["logits"], verbose=False,
                                    dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES})
    proto = program.model_proto
    shapes = {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
              for value in [*proto.graph.input, *proto.graph.output]}
    static = [name for name in INPUT_NAMES if not all(isinstance(d, str) for d in shapes.get(name, [0]))]
    if static or [i.name for i in proto.graph.input] != list(INPUT_NAMES):
        raise ParityError(f"The exporter gave inputs {shapes}; bertclf needs {list(INPUT_NAMES)} with symbolic "
                          "batch and sequence dimensions.", hint="This is a bug: report it with your torch version.")
    return proto.SerializeToString(), {"inputs": list(INPUT_NAMES), "shapes": shapes}


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs optional-dependency notes (torchvision) and prints progress; results own stdout."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def cpu_has_vnni() -> bool:
    """u8s8 int8 matmuls can saturate on x86 CPUs without VNNI; onnxruntime's advice there is reduce_range."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return True  # no /proc/cpuinfo (not Linux): assume a current CPU
    return "vnni" in flags or "flags" not in flags  # no x86 flags at all: ARM, which has no such saturation


def quantize_int8(fp32_bytes: bytes) -> tuple[bytes, dict]:
    """Dynamic int8 (weights int8 per channel, activations quantized on the fly) of an fp32 model."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reduce_range = not cpu_has_vnni()
    with tempfile.TemporaryDirectory(prefix="bertclf-quantize-") as work, _quiet_exporter():
        source, prepared, target = (Path(work) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(fp32_bytes)
        # onnxruntime's symbolic shape inference stops short on the dynamo graph ("Incomplete symbolic shape
        # inference") and then dumps sym_shape_infer_temp.onnx into the working directory: skip it. ONNX's own
        # shape inference and the graph optimisation still run.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(onnx.load(str(prepared)), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=reduce_range)
        return target.read_bytes(), {"weight_type": "int8", "per_channel": True, "reduce_range": reduce_range}


def _logits(predictor, model, check: CheckTexts):
    from bertclf.encoding import encode
    from bertclf.inference import predict_logits

    encoded = encode(predictor.tokenizer, check.texts, predictor.spec, check.pairs)
    return predict_logits(model, predictor.tokenizer, encoded, 64, device=predictor.device), encoded


def _compare(predictor, check: CheckTexts, encoded, torch_logits: np.ndarray, onnx_model) -> dict:
    """Max logit difference, label disagreements with torch and, for labelled texts, accuracy of each."""
    from bertclf.encoding import pool_windows
    from bertclf.inference import predict_logits

    started = time.perf_counter()
    logits = predict_logits(onnx_model, predictor.tokenizer, encoded, 64)
    seconds = time.perf_counter() - started
    space = predictor.space
    decided = [space.decide(pool_windows(space.probabilities(x), encoded), predictor.thresholds)
               for x in (torch_logits, logits)]
    same = (decided[0] == decided[1]).all(axis=1) if space.multi_label else decided[0] == decided[1]
    result = {"max_abs_diff": float(np.abs(logits - torch_logits).max()) if len(logits) else 0.0,
              "labels_differ": int((~same).sum()), "texts_per_second": round(len(check.texts) / seconds, 1)}
    if check.gold is not None:
        gold = _gold_matrix(check.gold, space)
        result["torch_accuracy"], result["accuracy"] = (round(_accuracy(d, gold, space), 6) for d in decided)
    return result


def _gold_matrix(gold: list, space) -> np.ndarray:
    if space.multi_label:
        return np.asarray([[name in set(names) for name in space.names] for names in gold], dtype=np.int64)
    index = {name: i for i, name in enumerate(space.names)}
    return np.asarray([index.get(name, -1) for name in gold])


def _accuracy(decided: np.ndarray, gold: np.ndarray, space) -> float:
    """Accuracy (subset accuracy for multi-label); rows with a label the run never saw count as wrong."""
    hits = (decided == gold).all(axis=1) if space.multi_label else decided == gold
    return float(hits.mean()) if len(hits) else 0.0


def check_texts(config: ExportConfig, manifest: dict) -> CheckTexts:
    """The real texts the export is checked on (see the module docstring)."""
    if config.check_data is not None:
        if not Path(config.check_data).is_file():
            raise InputMissingError(f"--check-data {config.check_data} does not exist.",
                                    hint="Give a CSV, TSV, JSON or JSONL file of texts like those the run will see.")
        return _read_check_file(Path(config.check_data), manifest, "--check-data", config.check_rows)
    data = manifest.get("data") or {}
    for role in ("validation", "train"):
        entry = data.get(role) or {}
        path = Path(entry["path"]) if entry.get("path") else None
        for candidate in ([path, Path(config.run_dir).parent / path] if path and not path.is_absolute() else [path]):
            if candidate is not None and candidate.is_file():
                return _read_check_file(candidate, manifest, f"the run's {role} file", config.check_rows)
    raise InputMissingError(f"{config.run_dir}: the run's data files are gone, so there are no real texts to check "
                            "the export on.", hint="Pass --check-data FILE: texts (with labels, to measure int8 "
                            "accuracy) like those the run will classify.")


def _read_check_file(path: Path, manifest: dict, source: str, limit: int) -> CheckTexts:
    from bertclf.config import LABEL_COLUMN_CANDIDATES
    from bertclf.data import read_labelled, read_table

    table = read_table(path)
    label_column = manifest.get("label_column")
    labelled = label_column in table.columns if label_column else \
        any(c in table.columns for c in LABEL_COLUMN_CANDIDATES)
    if labelled:
        data = read_labelled(path, text_column=manifest.get("text_column"), label_column=label_column,
                             text_pair_column=manifest.get("text_pair_column"),
                             multi_label=manifest.get("task") == "multi_label",
                             label_separator=manifest.get("label_separator", ","), drop_empty=True)
        texts, pairs, gold = data.texts, data.pairs, data.labels
    else:
        from bertclf.config import TEXT_COLUMN_CANDIDATES
        from bertclf.data import pick_column

        text_col = pick_column(table, manifest.get("text_column"), TEXT_COLUMN_CANDIDATES, "--text-column")
        pair_col = manifest.get("text_pair_column")
        if pair_col and pair_col not in table.columns:
            raise DataError(f"{path}: no column {pair_col!r} (the second text the run was trained on).")
        keep = [i for i, t in enumerate(table.column(text_col)) if t.strip()]
        texts = [table.column(text_col)[i] for i in keep]
        pairs = [table.column(pair_col)[i] for i in keep] if pair_col else None
        gold = None
    if not texts:
        raise DataError(f"{path}: no non-empty texts to check the export on.")
    picked = sorted({int(i) for i in np.linspace(0, len(texts) - 1, min(limit, len(texts)))})
    return CheckTexts([texts[i] for i in picked], None if pairs is None else [pairs[i] for i in picked],
                      None if gold is None else [gold[i] for i in picked], path, source)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path, "wb") as handle:
        handle.write(data)


def _copy_run_files(run_dir: Path, model_dir: Path) -> None:
    if model_dir.resolve() == run_dir.resolve():
        return
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            _write_bytes(model_dir / name, (run_dir / name).read_bytes())


def _write_report(onnx_dir: Path, report: dict, started: float) -> None:
    import json

    report.setdefault("seconds", {})["total"] = round(time.perf_counter() - started, 2)
    with atomic_output(onnx_dir / REPORT_FILE) as handle:
        handle.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    console.info(f"Wrote {onnx_dir / REPORT_FILE}")
