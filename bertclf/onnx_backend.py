"""An onnxruntime session in the torch model's seat of the inference engine (bertclf/inference.py).

`OnnxClassifier` answers the few things `predict_logits` asks of a model (`config`, `training`, `eval()`,
`train()`, and `model(**batch).logits`), so ONNX runs through the same length-sorted token-budget batches and
comes back in input order: there is one engine, whatever computes the logits. onnxruntime is imported here
only, when a session is made, so `bertclf --help` stays light.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from bertclf.errors import InputMissingError, ModelUnavailableError

# The files `bertclf export` writes, inside RUN_DIR/onnx (or -o DIR/onnx).
ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_quantized.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DEPLOY_HINT = "Install the deploy extra: pip install 'bertclf[deploy]'"


def onnx_path(run_dir: Path, quantize: str | None) -> Path:
    return Path(run_dir) / ONNX_DIR / (INT8_FILE if quantize else FP32_FILE)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ModelUnavailableError("The ONNX backend needs onnxruntime, which is not installed.",
                                    hint=DEPLOY_HINT) from None
    return onnxruntime


def make_session(model: Path | bytes, threads: int | None = None):
    """An onnxruntime CPU session with full graph optimisation. `model` is a file or the model's bytes."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    # Idle intra-op threads spin by default, taking the cores that tokenising, the server's event loop and
    # other processes need: on the shared 2-core machine, en_wordnet_verbs int8 predicted 236 texts/s without
    # spinning against 168 with it (2 threads, interleaved runs).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxClassifier:
    """A BERT sequence classifier exported to ONNX, callable as the torch model is by the inference engine."""

    training = False  # never trains; the engine restores train mode only when it was on

    def __init__(self, session, config, path: Path | None = None):
        self.session, self.config, self.path = session, config, path
        self._inputs = [i.name for i in session.get_inputs()]
        missing = [name for name in self._inputs if name not in INPUT_NAMES]
        if missing:
            raise ModelUnavailableError(f"{path or 'the ONNX model'} takes inputs {missing}, which bertclf's "
                                        "tokenizer does not produce.", hint="Export it again: bertclf export RUN_DIR")

    @classmethod
    def from_file(cls, path: Path, config) -> OnnxClassifier:
        path = Path(path)
        if not path.is_file():
            quantized = path.name == INT8_FILE
            raise InputMissingError(
                f"{path} does not exist: the run has not been exported{' with --quantize int8' if quantized else ''}.",
                hint=f"Export it first: bertclf export {path.parent.parent}{' --quantize int8' if quantized else ''}")
        try:
            session = make_session(path)
        except ModelUnavailableError:
            raise
        except Exception as exc:  # onnxruntime raises its own types for a damaged or foreign file
            from bertclf.errors import DataError

            raise DataError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc}).",
                            hint=f"Export it again: bertclf export {path.parent.parent}") from None
        return cls(session, config, path)

    def eval(self) -> OnnxClassifier:
        return self

    def train(self, mode: bool = True) -> OnnxClassifier:
        return self

    def to(self, device) -> OnnxClassifier:
        return self

    def __call__(self, **batch):
        import torch

        feeds = {name: batch[name].numpy() if hasattr(batch[name], "numpy") else batch[name]
                 for name in self._inputs}
        (logits,) = self.session.run(["logits"], feeds)
        return SimpleNamespace(logits=torch.from_numpy(logits))
