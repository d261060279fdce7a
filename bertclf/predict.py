"""`Predictor`: load a run directory once, then classify lists or streams of texts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bertclf import console
from bertclf.batching import fixed_chunks, timed_chunks
from bertclf.config import BACKENDS, PredictConfig, check_compile, check_precision
from bertclf.encoding import Encoded, EncodingSpec, encode
from bertclf.errors import UsageError
from bertclf.labels import DEFAULT_THRESHOLD, LabelSpace, parse_threshold_option
from bertclf.precision import Choice
from bertclf.prediction_rows import prediction_row, rows_from_options

if TYPE_CHECKING:
    from bertclf.compiling import CompileReport
    from bertclf.streams import InputRecords

# A text to classify, or a (text, second text) pair for a model trained with --text-pair-column.
Item = str | tuple[str, str]
# A live stream's chunk closes this long after its first row arrived (issue: `tail -f | predict` answered only
# after 2,048 rows or EOF).
LIVE_WAIT_SECONDS = 0.5


@dataclass(frozen=True)
class Prediction:
    label: str | None  # the most probable label; None for an empty text
    score: float | None  # its probability
    top_k: list[tuple[str, float]]
    probs: dict[str, float]  # every label's probability; empty for an empty text
    labels: list[str] | None = None  # multi-label: the labels at or above their threshold, most probable first

    @property
    def is_empty(self) -> bool:
        return not self.probs


class Predictor:
    """A trained classifier, ready to predict. Encodes texts as the run was trained: max length, truncation,
    windows for long texts (--long-text chunks), sentence pairs; multi-label runs apply the tuned thresholds."""

    def __init__(self, run_dir: Path, manifest: dict, tokenizer, model, device, *, max_length: int | None = None,
                 truncation: str | None = None, threshold: str | None = None):
        self.compile_report: CompileReport | None = None  # set by from_dir: what --compile did, and its cost
        self.precision = Choice("fp32", "full precision")  # from_dir resolves --precision
        self.run_dir = Path(run_dir)
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.labels: list[str] = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.space = LabelSpace(tuple(self.labels), multi_label=manifest.get("task") == "multi_label")
        self.spec = EncodingSpec(
            max_length=min(max_length or manifest.get("max_length", 128), int(model.config.max_position_embeddings)),
            truncation=truncation or manifest.get("truncation", "head"),
            long_text=manifest.get("long_text", "truncate"), stride=int(manifest.get("stride") or 0))
        self.text_pair_column: str | None = manifest.get("text_pair_column")
        chosen = dict(manifest.get("thresholds") or {})
        if threshold is not None:
            if not self.space.multi_label:
                raise UsageError("--threshold applies to multi-label runs only; this run predicts one label per "
                                 "text (the most probable).")
            chosen.update(parse_threshold_option(threshold, self.labels))
        self.thresholds = np.asarray([chosen.get(label, DEFAULT_THRESHOLD) for label in self.labels]) \
            if self.space.multi_label else None

    @property
    def max_length(self) -> int:
        return self.spec.max_length

    @property
    def truncation(self) -> str:
        return self.spec.truncation

    @classmethod
    def from_dir(cls, run_dir: Path | str, *, cpu: bool = False, max_length: int | None = None,
                 truncation: str | None = None, quantize: str | None = None,
                 threshold: str | None = None, backend: str = "torch", compile: str = "auto",
                 precision: str = "auto") -> Predictor:
        """Load a run. backend "onnx" runs RUN_DIR/onnx/model.onnx (model_quantized.onnx with quantize int8)
        with onnxruntime on the CPU, in the same inference engine; it needs no model.safetensors. compile
        "yes" compiles the torch model's forward (bertclf.compiling) and compiles it here, before returning.
        precision: auto, fp32 or bf16 (bertclf.precision; auto: bf16 where native and checked in training); in
        bf16 `model` holds bf16 weights (cast once), so code calling it directly gets bf16 logits."""
        import torch

        from bertclf.precision import cast_model, resolve_precision

        check_compile(compile, backend=backend, quantize=quantize)
        check_precision(precision, backend=backend, quantize=quantize)

        if backend not in BACKENDS:
            raise UsageError(f"Invalid value for --backend: {backend!r}. Choose one of: {', '.join(BACKENDS)}.")
        if quantize is not None and quantize != "int8":
            raise UsageError(f"Invalid value for --quantize: {quantize!r}. The only mode is int8.")
        if backend == "onnx":
            manifest, tokenizer, model = _load_onnx_run(Path(run_dir), quantize)
        else:
            from bertclf.model import load_run

            manifest, tokenizer, model = load_run(Path(run_dir))
        if not manifest.get("completed", False):
            console.warn(f"{run_dir}: training did not finish (bertclf.json has completed: false); "
                         "using the best model saved so far.")
        device = torch.device("cuda" if torch.cuda.is_available() and not cpu and not quantize
                              and backend == "torch" else "cpu")
        if quantize and backend == "torch":
            model = quantize_int8(model, quantize)
        model.to(device)
        predictor = cls(Path(run_dir), manifest, tokenizer, model, device, max_length=max_length,
                        truncation=truncation, threshold=threshold)
        predictor.precision = resolve_precision(precision, device, manifest, backend=backend, quantize=quantize)
        cast_model(model, predictor.precision.precision)
        predictor.compile_report = predictor._compile(compile if backend == "torch" and not quantize else "no")
        return predictor

    def _compile(self, requested: str) -> CompileReport:
        """--compile: compile the model's inference forward now, on two made-up texts, so the compile time is
        measured apart from the predictions. A compile that fails is reported and prediction runs eagerly."""
        from bertclf import compiling
        from bertclf.inference import predict_logits

        if not compiling.resolve_compile(requested, self.device.type):
            return compiling.CompileReport(requested, enabled=False)
        forward = compiling.compile_model(self.model, training=False)
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        filler = self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else sep_id
        # Two texts of different lengths, neither padded length 2 (the batch size; see compiling's duck shaping).
        warm_up = Encoded(input_ids=[[cls_id, *[filler] * 7, sep_id], [cls_id, filler, filler, sep_id]],
                          token_type_ids=None, text_index=[0, 1], n_texts=2, truncated=0)
        try:
            seconds = compiling.timed_warm_up(lambda: predict_logits(self.model, self.tokenizer, warm_up, 64,
                                                                     device=self.device,
                                                                     precision=self.precision.precision))
        except Exception as error:  # torch.compile fails in many ways (InductorError, BackendCompilerFailed, ...)
            forward.disable()
            reason = compiling.compile_failed(error)
            console.warn(f"torch.compile failed, predicting without it: {reason}")
            return compiling.CompileReport(requested, enabled=False, error=reason)
        return compiling.CompileReport(requested, enabled=True, seconds=seconds, graphs=forward.graphs)

    def probabilities_of(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                         batch_size: int = 64) -> tuple[np.ndarray, Encoded]:
        """Probabilities (n_texts, n_labels) of non-empty texts, and their encoding."""
        from bertclf.inference import predict_probs

        if self.text_pair_column is not None and pairs is None:
            raise UsageError(f"{self.run_dir} was trained on text pairs (column {self.text_pair_column!r}); "
                             "give the second text of each pair as well.")
        if self.text_pair_column is None and pairs is not None:
            raise UsageError(f"{self.run_dir} was trained on single texts, not pairs; leave out the second texts "
                             "(--text-pair-column, --text-pair).")
        encoded = encode(self.tokenizer, list(texts), self.spec, None if pairs is None else list(pairs))
        return predict_probs(self.model, self.tokenizer, encoded, self.space, batch_size, device=self.device,
                             precision=self.precision.precision), encoded

    def predict_proba(self, texts: Sequence[Item], batch_size: int = 64) -> np.ndarray:
        """Probabilities (n_texts, n_labels) in input order; empty texts get a row of NaN."""
        first, second = _split_items(texts)
        probs = np.full((len(first), len(self.labels)), np.nan, dtype=np.float64)
        keep = [i for i, text in enumerate(first) if text.strip()]
        if keep:
            probs[keep], _ = self.probabilities_of([first[i] for i in keep],
                                                   None if second is None else [second[i] for i in keep], batch_size)
        return probs

    def predict(self, texts: Sequence[Item], *, top_k: int = 1, batch_size: int = 64) -> list[Prediction]:
        """Texts, or (text, second text) pairs for a pair model, to predictions in input order."""
        if top_k < 1:
            raise UsageError(f"Invalid value for --top-k: {top_k}. Give 1 or more.")
        probs = self.predict_proba(texts, batch_size)
        return [self._prediction(row, top_k) for row in probs]

    def _prediction(self, row: np.ndarray, top_k: int) -> Prediction:
        if np.isnan(row).any():
            return Prediction(None, None, [], {}, [] if self.space.multi_label else None)
        order = np.argsort(-row)
        best = int(order[0])
        chosen = None
        if self.space.multi_label:
            chosen = [self.labels[i] for i in order if row[i] >= self.thresholds[i]]
        return Prediction(self.labels[best], float(row[best]),
                          [(self.labels[i], float(row[i])) for i in order[:top_k]],
                          {label: float(p) for label, p in zip(self.labels, row, strict=True)}, chosen)

    def predict_rows(self, rows: Iterable[dict[str, str]], text_column: Callable[[], str],
                     pair_column: str | None = None, *, top_k: int = 1, batch_size: int = 64, chunk_size: int = 2048,
                     live: bool = False) -> Iterator[tuple[dict[str, str], Prediction]]:
        """(row, prediction) in input order for table rows. `text_column` is asked once rows flow (a JSON
        input names its columns in its first record). A `live` stream (stdin) is cut into chunks that close
        within LIVE_WAIT_SECONDS, so each answer follows its line at once."""
        chunks = timed_chunks(rows, chunk_size, LIVE_WAIT_SECONDS) if live else fixed_chunks(rows, chunk_size)
        for chunk in chunks:
            column = text_column()
            items = [(row.get(column, ""), row.get(pair_column, "")) if pair_column else row.get(column, "")
                     for row in chunk]
            yield from zip(chunk, self.predict(items, top_k=top_k, batch_size=batch_size), strict=True)
            if live:
                console.stdout.flush()

    def predict_file(self, config: PredictConfig, source: RowSource | None = None) -> PredictSummary:
        """`bertclf predict`: read the input (file, stdin or --text), write one output row per input row, in
        input order, to --output (through a temporary file) or stdout."""
        from bertclf.streams import RowWriter, output_format

        source = source or open_rows(config, self.manifest)
        fmt = output_format(config.output, config.output_format)
        top_k = min(config.top_k, len(self.labels))
        summary = PredictSummary()
        started = time.perf_counter()
        writer = RowWriter(config.output, fmt)
        success = False
        try:
            predictions = self.predict_rows(source.rows, source.text_column, source.pair_column, top_k=top_k,
                                            batch_size=config.batch_size, live=config.input == "-")
            for number, (row, prediction) in enumerate(predictions, start=1):
                summary.rows += 1
                summary.empty += prediction.is_empty
                writer.write(prediction_row(number, row, source.id_column(), prediction, self, fmt, top_k=top_k,
                                            all_probs=config.all_probs, keep_columns=config.keep_columns))
            success = True
        finally:
            writer.close(success)
        summary.predict_seconds = time.perf_counter() - started
        return summary


@dataclass
class RowSource:
    """Input rows and the columns to read from them. A JSON input names its columns in its first record,
    so the text and id columns are asked for once rows flow."""

    rows: Iterator[dict[str, str]]
    records: InputRecords | None  # None for --text options
    pair_column: str | None

    def text_column(self) -> str:
        return self.records.text_column if self.records is not None else "text"

    def id_column(self) -> str | None:
        return "id" if self.records is not None and "id" in self.records.columns else None


def open_rows(config: PredictConfig, manifest: dict) -> RowSource:
    """The rows to classify: --text options, or the INPUT file or stdin (opened, not yet read)."""
    from bertclf.streams import open_input

    pair_col = config.text_pair_column or manifest.get("text_pair_column")  # the input's second-text column
    if config.texts:
        return RowSource(iter(rows_from_options(list(config.texts), list(config.text_pairs) or None, pair_col)),
                         None, pair_col)
    records = open_input(config.input, fmt=config.input_format, encoding=config.encoding,
                         text_column=config.text_column, preferred_column=manifest.get("text_column"),
                         pair_column=pair_col)
    return RowSource(iter(records), records, pair_col)


@dataclass
class PredictSummary:
    rows: int = 0  # rows read and written
    empty: int = 0  # of which had an empty text (written with an empty label)
    predict_seconds: float = 0.0  # reading, predicting and writing the rows (loading and compiling excluded)
    compile_seconds: float | None = None  # --compile: the time torch.compile took; None when not compiled


def run_predict(config: PredictConfig) -> PredictSummary:
    """Open the input first (a missing file fails before the model loads), then load the run once and classify."""
    from bertclf.model import read_manifest

    source = open_rows(config, read_manifest(config.run_dir))
    predictor = Predictor.from_dir(config.run_dir, cpu=config.cpu, quantize=config.quantize,
                                   threshold=config.threshold, backend=config.backend, compile=config.compile,
                                   precision=config.precision)
    if predictor.precision.precision == "bf16":  # scores differ from fp32's in the third decimal: say why
        console.info(f"Predicting in bf16 ({predictor.precision.reason}); --precision fp32 for full precision.")
    summary = predictor.predict_file(config, source)
    if predictor.compile_report is not None and predictor.compile_report.enabled:
        summary.compile_seconds = predictor.compile_report.seconds
    if summary.empty:
        console.warn(f"{summary.empty} of {summary.rows} input row(s) had an empty text; their label is left "
                     "empty.")
    return summary


def _split_items(items: Sequence[Item]) -> tuple[list[str], list[str] | None]:
    """Items to (first texts, second texts or None). All items are plain texts, or all are pairs."""
    if all(isinstance(item, str) for item in items):
        return list(items), None
    if all(isinstance(item, tuple) and len(item) == 2 for item in items):
        return [item[0] for item in items], [item[1] for item in items]
    raise UsageError("Give either texts or (text, second text) pairs, not a mix.")


def _load_onnx_run(run_dir: Path, quantize: str | None):
    """(manifest, tokenizer, OnnxClassifier) of an exported run: bertclf.json, config.json and the tokenizer
    checked as for torch, the weights read from the ONNX file instead of model.safetensors."""
    from transformers import BertConfig

    from bertclf.model import _check_config, load_tokenizer, quiet_transformers, read_manifest
    from bertclf.onnx_backend import OnnxClassifier, onnx_path

    quiet_transformers()
    manifest = read_manifest(run_dir)
    _check_config(run_dir, manifest["labels"])
    tokenizer = load_tokenizer(run_dir)
    config = BertConfig.from_pretrained(str(run_dir), local_files_only=True)
    return manifest, tokenizer, OnnxClassifier.from_file(onnx_path(run_dir, quantize), config)


def quantize_int8(model, mode: str):
    """Dynamic int8 quantization of the Linear layers, for CPU inference: weights stored as int8,
    activations quantized on the fly. Embeddings and LayerNorm stay fp32."""
    if mode != "int8":
        raise UsageError(f"Invalid value for --quantize: {mode!r}. The only mode is int8.")
    import warnings

    import torch

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency here;
        # quantize_dynamic still works in torch 2.13 and the tests pin its accuracy.
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return quantized
