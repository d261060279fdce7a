"""The run directory's descriptive files: the bertclf.json manifest, metrics.json and the model card."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bertclf import __version__
from bertclf.safe_write import atomic_output

MANIFEST = "bertclf.json"
LIBRARIES = ("torch", "transformers", "tokenizers", "accelerate", "datasets", "scikit-learn", "numpy")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "bertclf": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_json_atomic(path: Path, document: Any) -> None:
    """Write through a unique temporary file renamed into place (bertclf.safe_write), so a reader never sees
    half a file; OSErrors become OutputError (exit 74) naming the file."""
    text = json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n"
    with atomic_output(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def base_manifest(argv: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {
        "bertclf_version": __version__,
        "argv": list(argv) or sys.argv,
        "versions": library_versions(),
        "platform": platform.platform(),
        "completed": False,
    }


def train_manifest(config, *, data, spec, model: dict[str, Any], lr: float, mixed_precision: str, device: str,
                   world_size: int, threads: int, encoded: dict[str, Any], loss_weights: list[float] | None,
                   steps: dict[str, int]) -> dict[str, Any]:
    """The manifest of a training run as it starts (completed: false): what it trains on, with what.
    `config` is the TrainConfig, `data` the train module's TrainingData, `encoded` the encoded train and
    validation sets."""
    train, validation = data.train, data.validation
    return {
        **base_manifest(config.argv),
        "config": config.to_dict(),
        "labels": data.labels,
        "task": "multi_label" if config.multi_label else "single_label",
        "text_column": train.text_column,
        "text_pair_column": train.pair_column,
        "label_column": train.label_column,
        "label_separator": config.label_separator if config.multi_label else None,
        **spec.to_dict(),
        "max_length_source": "auto" if config.max_length is None else "--max-length",
        "model": model,
        "learning_rate": lr,
        "learning_rate_source": "auto" if config.lr is None else "--lr",
        "mixed_precision": mixed_precision,
        "device": device,
        "world_size": world_size,
        "seed": config.seed,
        "threads": threads,
        "data": {"train": train.table.describe(), "validation": validation.table.describe() if validation else None},
        "validation_source": str(config.validation_file) if validation else
        f"{config.validation_split:.0%} stratified split of the training file (seed {config.seed})",
        "train_rows": len(data.train_texts),
        "validation_rows": len(data.val_texts),
        "truncated": {split: e.truncated for split, e in encoded.items()},
        "sequences": {split: len(e) for split, e in encoded.items()},
        "data_warnings": data.warnings,
        "class_weights": dict(zip(data.labels, loss_weights, strict=True)) if loss_weights else None,
        "steps": steps,
        "metric": config.metric,
    }


def complete_manifest(manifest: dict[str, Any], *, metric: str, state, total_seconds: float,
                      calibration: dict[str, Any] | None = None) -> None:
    """Mark the manifest of a finished run complete, with its best step, timings (`state`: the loop's
    LoopState) and the temperature folded into the model (None: raw scores, --no-calibration or multi-label)."""
    manifest.update({
        "completed": True,
        "calibration": calibration,
        "best_step": state.best_step,
        "best_metric": {metric: state.best_value},
        "steps_done": state.step,
        "stopped_early": state.stopped_early,
        "timings": {"train_seconds": round(state.train_seconds, 2),
                    "total_seconds": round(total_seconds, 2),
                    "samples_per_second": round(state.samples_seen / max(state.train_seconds, 1e-9), 2),
                    # --compile: torch.compile's time, outside train_seconds (so samples/s leaves it out)
                    **({"compile_seconds": manifest["compile"]["seconds"]} if "compile" in manifest else {})},
    })


def _pipeline_use() -> list[str]:
    return ["```python", "from transformers import pipeline",
            'classifier = pipeline("text-classification", model="THIS_DIR")', "```", "",
            "Note: bertclf applies the truncation strategy, windows and thresholds above; `pipeline` keeps the head "
            "of a text and, for multi-label runs, uses 0.5 for every label.", ""]


def _transformers_use(manifest: dict[str, Any]) -> list[str]:
    """How to run the model with transformers alone: `pipeline`, unless the model is one transformers' own
    classes would read differently (mean pooling, a bigram table)."""
    unknown = []
    if manifest.get("pooling", "cls") != "cls":
        unknown.append("reads the mean of all tokens' vectors (`classifier_pooling: mean` in config.json)")
    if manifest.get("bigram_buckets"):
        unknown.append("adds a table of token-pair vectors to its embeddings (`bigram_buckets` in config.json)")
    if not unknown:
        return _pipeline_use()
    return [f"The model {' and '.join(unknown)}, which transformers' own classes ignore: `pipeline` would give "
            "other labels. Use bertclf, or `bertclf export THIS_DIR` for an ONNX model that runs anywhere.", ""]


def model_card(manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A short README.md for the run directory: what the model does, on what data, how well, how to use it."""
    labels = manifest["labels"]
    data = manifest["data"]
    scalar = {k: v for k, v in metrics.items() if isinstance(v, float)}
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "tags: [bertclf, text-classification]",
        "---",
        "",
        f"# {'Multi-label text' if manifest.get('task') == 'multi_label' else 'Text'} classifier "
        f"({len(labels)} labels)",
        "",
        f"Fine-tuned with bertclf {manifest['bertclf_version']} from `{manifest['model']['name']}` "
        f"({manifest['model']['source']}).",
        "",
        "## Labels",
        "",
        ", ".join(f"`{label}`" for label in labels),
        "",
        "## Data",
        "",
        f"- train: `{data['train']['path']}` ({manifest['train_rows']} rows used, "
        f"encoding {data['train']['encoding']})",
        f"- validation: {manifest['validation_source']} ({manifest['validation_rows']} rows)",
        f"- text column `{manifest['text_column']}`"
        + (f", second text column `{manifest['text_pair_column']}` (sentence pairs)"
           if manifest.get("text_pair_column") else "")
        + f", label column `{manifest['label_column']}`",
        f"- max length {manifest['max_length']} tokens, "
        + (f"long texts split into windows sharing {manifest['stride']} tokens, probabilities averaged"
           if manifest.get("long_text") == "chunks" else f"truncation `{manifest['truncation']}`"),
        *(["- decision thresholds per label (tuned on validation): "
           + ", ".join(f"`{k}` {v:.3f}" for k, v in manifest["thresholds"].items())] if manifest.get("thresholds")
          else []),
        *([f"- scores calibrated by temperature scaling on validation (T = {calibration['temperature']:.4f}, "
           f"folded into the classifier; ECE {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f})"]
          if (calibration := manifest.get("calibration")) and "temperature" in calibration
          else [f"- scores not calibrated: {calibration['skipped']}"] if calibration else []),
        "",
        f"## Validation metrics (best step {manifest.get('best_step')})",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {k} | {v:.4f} |" for k, v in scalar.items()],
        "",
        "## Use",
        "",
        "```bash",
        "bertclf predict THIS_DIR new.csv",
        "bertclf eval THIS_DIR test.csv",
        "```",
        "",
        *_transformers_use(manifest),
    ]
    return "\n".join(lines)
