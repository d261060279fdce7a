"""`Predictor`: load a run directory once, then classify lists or streams of texts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertclf import console
from bertclf.data import encode_texts
from bertclf.errors import UsageError


@dataclass(frozen=True)
class Prediction:
    label: str | None  # None for an empty text
    score: float | None
    top_k: list[tuple[str, float]]
    probs: dict[str, float]


class Predictor:
    """A trained classifier, ready to predict. Uses the run's max length and truncation strategy."""

    def __init__(self, run_dir: Path, manifest: dict, tokenizer, model, device, *, max_length: int | None = None,
                 truncation: str | None = None):
        self.run_dir = Path(run_dir)
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.labels: list[str] = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.max_length = min(max_length or manifest.get("max_length", 128),
                              int(model.config.max_position_embeddings))
        self.truncation = truncation or manifest.get("truncation", "head")

    @classmethod
    def from_dir(cls, run_dir: Path | str, *, cpu: bool = False, max_length: int | None = None,
                 truncation: str | None = None, quantize: str | None = None) -> Predictor:
        import torch

        from bertclf.model import load_run

        manifest, tokenizer, model = load_run(Path(run_dir))
        if not manifest.get("completed", False):
            console.warn(f"{run_dir}: training did not finish (bertclf.json has completed: false); "
                         "using the best model saved so far.")
        device = torch.device("cuda" if torch.cuda.is_available() and not cpu and not quantize else "cpu")
        if quantize:
            model = quantize_int8(model, quantize)
        model.to(device)
        return cls(Path(run_dir), manifest, tokenizer, model, device, max_length=max_length, truncation=truncation)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Probabilities (n_texts, n_labels) in input order; empty texts get a row of NaN."""
        from bertclf.evaluation import predict_logits, softmax

        probs = np.full((len(texts), len(self.labels)), np.nan, dtype=np.float32)
        keep = [i for i, text in enumerate(texts) if text.strip()]
        if keep:
            encoded = encode_texts(self.tokenizer, [texts[i] for i in keep], self.max_length, self.truncation)
            logits = predict_logits(self.model, self.tokenizer, encoded, batch_size, device=self.device)
            probs[keep] = softmax(logits)
        return probs

    def predict(self, texts: Sequence[str], *, top_k: int = 1, batch_size: int = 64) -> list[Prediction]:
        if top_k < 1:
            raise UsageError(f"Invalid value for --top-k: {top_k}. Give 1 or more.")
        probs = self.predict_proba(texts, batch_size)
        return [self._prediction(row, top_k) for row in probs]

    def _prediction(self, row: np.ndarray, top_k: int) -> Prediction:
        if np.isnan(row).any():
            return Prediction(None, None, [], {})
        order = np.argsort(-row)[:top_k]
        best = int(order[0])
        return Prediction(self.labels[best], float(row[best]), [(self.labels[i], float(row[i])) for i in order],
                          {label: float(p) for label, p in zip(self.labels, row, strict=True)})

    def predict_stream(self, texts: Iterable[str], *, chunk_size: int = 2048, top_k: int = 1,
                       batch_size: int = 64) -> Iterator[Prediction]:
        """Predictions in input order, chunk by chunk, so memory does not grow with the input."""
        chunk: list[str] = []
        for text in texts:
            chunk.append(text)
            if len(chunk) >= chunk_size:
                yield from self.predict(chunk, top_k=top_k, batch_size=batch_size)
                chunk = []
        if chunk:
            yield from self.predict(chunk, top_k=top_k, batch_size=batch_size)


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
