"""The run directory's descriptive files: the bertclf.json manifest, metrics.json and the model card."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bertclf import __version__
from bertclf.errors import OutputError

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
    """Write to a temporary name and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}.",
                          hint="Check free disk space and permissions on the output directory.") from None


def base_manifest(argv: list[str] | tuple[str, ...]) -> dict[str, Any]:
    return {
        "bertclf_version": __version__,
        "argv": list(argv) or sys.argv,
        "versions": library_versions(),
        "platform": platform.platform(),
        "completed": False,
    }


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
        "```python",
        "from transformers import pipeline",
        'classifier = pipeline("text-classification", model="THIS_DIR")',
        "```",
        "",
        "Note: bertclf applies the truncation strategy, windows and thresholds above; `pipeline` keeps the head "
        "of a text and, for multi-label runs, uses 0.5 for every label.",
        "",
    ]
    return "\n".join(lines)
