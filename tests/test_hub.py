"""The download path end to end: the real CLI, in a subprocess, against a local Hub (tests/hub_server.py) reached
through HF_ENDPOINT, the same way as a mirror such as hf-mirror.com; `--revision`; every way the download fails
(exit 69, a message naming the fix, no traceback); and ModelScope's `ms://owner/name` against the same server.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so each command runs as a
process of its own with them set. The commands that only need the model resolved (the failures) run `inspect
--model`, which resolves --model exactly as `train` does but starts faster."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, run_bertclf, write_csv
from hub_server import HubServer

from bertclf.errors import EXIT_MODEL_UNAVAILABLE, EXIT_USAGE

TRAIN_FAST = ("--max-steps", "1", "--batch-size", "8", "--cpu", "--no-calibration")


@pytest.fixture(scope="module")
def model_dirs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Two versions of the tiny BERT (main: 2 layers; the older tag v1: 1 layer), and a repository that has
    only pickled weights."""
    from transformers import BertConfig, BertModel

    older = tmp_path_factory.mktemp("tiny-bert-v1")
    config = BertConfig.from_pretrained(str(tiny_model_dir))
    config.num_hidden_layers = 1
    BertModel(config).save_pretrained(str(older))
    for name in ("vocab.txt", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"):
        if (tiny_model_dir / name).is_file():
            shutil.copy(tiny_model_dir / name, older / name)
    pickles = tmp_path_factory.mktemp("pickle-only")
    shutil.copy(tiny_model_dir / "config.json", pickles / "config.json")
    shutil.copy(tiny_model_dir / "vocab.txt", pickles / "vocab.txt")
    (pickles / "pytorch_model.bin").write_bytes(b"a pickle is never fetched")
    return {"main": tiny_model_dir, "v1": older, "pickles": pickles}


@pytest.fixture(scope="module")
def hub(model_dirs):
    """The local Hub: org/name at two commits (tag v1, then main; `master` is ModelScope's default branch),
    a gated repository, and one with only pickled weights."""
    with HubServer() as server:
        server.shas["v1"] = server.add_commit("org/name", model_dirs["v1"], refs=("v1",))
        server.shas["main"] = server.add_commit("org/name", model_dirs["main"], refs=("main", "master"))
        server.add_commit("org/gated", model_dirs["main"], gated=True)
        server.add_commit("org/pickles", model_dirs["pickles"])
        yield server


@pytest.fixture
def server(hub):
    """The module's server, answering normally and with an empty request log for each test."""
    hub.mode = "ok"
    hub.requests.clear()
    hub.answers.clear()
    yield hub
    hub.mode = "ok"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A small slice of examples/en_topics.csv: enough rows per label for the stratified validation split."""
    import csv

    with (EXAMPLES / "en_topics.csv").open(encoding="utf-8") as handle:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(handle)]
    picked = [row for label in sorted({label for _, label in rows}) for row in
              [r for r in rows if r[1] == label][:6]]
    return write_csv(tmp_path_factory.mktemp("hub-data") / "topics.csv", picked)


def hub_env(server: HubServer, hf_home: Path, **extra: str) -> dict:
    return {"HF_ENDPOINT": server.url, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "0", "HF_TOKEN": "", **extra}


def start_in_background(args: list[str], env: dict[str, str | None]) -> tuple[threading.Thread, dict]:
    """A bertclf command in a subprocess (`env` on top of this one's; None unsets), waited for by a thread;
    `outcome` gets its result and seconds."""
    full = {key: value for key, value in {**os.environ, **env}.items() if value is not None}
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "bertclf", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=full, cwd=ROOT)
    outcome: dict = {}

    def wait() -> None:
        try:
            stdout, stderr = process.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        outcome.update(seconds=time.monotonic() - started,
                       result=subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, outcome


@pytest.fixture(scope="module", autouse=True)
def silent_server_runs(model_dirs, data, tmp_path_factory):
    """`inspect --model org/name` against servers that accept connections and then never answer: "hang"
    answers nothing, "stall" answers the repository info and nothing after it. Both run with
    huggingface_hub's default timeouts, start before the module's first test and are waited for by their own
    tests: the wait is wall-clock time, not work, so the other tests run meanwhile."""
    runs, servers = {}, []
    for mode in ("hang", "stall"):
        server = HubServer().start()
        server.add_commit("org/name", model_dirs["main"])
        server.mode = mode
        servers.append(server)
        env = {**hub_env(server, tmp_path_factory.mktemp(f"hf-{mode}")), "HF_HUB_ETAG_TIMEOUT": None,
               "HF_HUB_DOWNLOAD_TIMEOUT": None}
        runs[mode] = start_in_background(["inspect", str(data), "--model", "org/name"], env)
    yield runs
    for thread, _ in runs.values():
        thread.join(timeout=160)
    for server in servers:
        server.stop()


def manifest_of(run: Path) -> dict:
    return json.loads((run / "bertclf.json").read_text(encoding="utf-8"))


def layers_of(run: Path) -> int:
    return json.loads((run / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]


def assert_unavailable(result, *phrases: str) -> None:
    assert result.returncode == EXIT_MODEL_UNAVAILABLE, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def test_download_through_hf_endpoint_with_progress_at_the_resolved_commit(server, data, tmp_path):
    env, main = hub_env(server, tmp_path / "hf"), server.shas["main"]
    # TQDM_POSITION=-1 shows huggingface_hub's progress bars where stderr is not a terminal, as here.
    result = run_bertclf("inspect", data, "--model", "org/name", env={**env, "TQDM_POSITION": "-1"})
    assert result.returncode == 0, result.stderr
    assert f"Downloading org/name (default branch, commit {main[:12]}) from {server.url}: 5 files" in result.stderr
    bars = re.findall(r"(\S+): 100%\|[^\r\n]*B/s\]", result.stderr)  # one bar of bytes per file, on stderr
    assert len(set(bars)) == 5 and any(bar.endswith("/config.json") for bar in bars), bars
    assert "Downloaded org/name in" in result.stderr and "Downloading" not in result.stdout
    snapshot = tmp_path / "hf" / "hub" / "models--org--name" / "snapshots" / main
    assert sorted(path.name for path in snapshot.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json",
                                                               "tokenizer_config.json", "vocab.txt"]
    # The revision was resolved once; every file was fetched at that commit, the weights through the LFS
    # redirect to the "CDN"; nothing pickled was asked for.
    assert [path for _, path in server.requests if path.startswith("/api/models/")] == \
        ["/api/models/org/name?blobs=true"]
    heads = [path for method, path in server.requests if method == "HEAD"]
    assert len(heads) == 5 and all(path.startswith(f"/org/name/resolve/{main}/") for path in heads)
    gets = [path for method, path in server.requests if method == "GET" and "/resolve/" in path]
    assert len(gets) == 4 and all(path.startswith(f"/org/name/resolve/{main}/") for path in gets)
    weights = hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
    assert [path for _, path in server.requests if path.startswith("/cdn/")] == [f"/cdn/{weights}"]
    assert (tmp_path / "hf" / "hub" / "models--org--name" / "refs" / "main").read_text() == main
    # Once cached, a Hub that fails still leaves the model usable, with a warning.
    server.mode = "500"
    result = run_bertclf("inspect", data, "--model", "org/name", env=env)
    assert result.returncode == 0, result.stderr
    assert f"cannot be reached (HTTP 500); using the cached org/name at commit {main}" in result.stderr


def test_train_pins_a_revision_records_its_commit_and_a_second_run_offline_uses_the_cache(server, data, tmp_path):
    env, main, v1 = hub_env(server, tmp_path / "hf"), server.shas["main"], server.shas["v1"]
    result = run_bertclf("train", data, "--model", "org/name", "--revision", "v1", "-o", tmp_path / "v1",
                         *TRAIN_FAST, env=env)
    assert result.returncode == 0, result.stderr
    assert f"Downloading org/name (v1, commit {v1[:12]}) from {server.url}" in result.stderr
    manifest = manifest_of(tmp_path / "v1")
    assert manifest["model"]["source"] == "hub" and manifest["model"]["revision"] == v1
    assert manifest["config"]["revision"] == "v1"
    assert Path(manifest["model"]["path"]) == tmp_path / "hf" / "hub" / "models--org--name" / "snapshots" / v1
    assert layers_of(tmp_path / "v1") == 1  # the tagged commit's weights, not main's
    assert ("GET", "/api/models/org/name/revision/v1?blobs=true") in server.requests
    # The tag is remembered in the cache's refs/, where an offline run looks it up (hf_hub_download, called
    # with the commit, does not write it).
    assert (tmp_path / "hf" / "hub" / "models--org--name" / "refs" / "v1").read_text() == v1

    # Offline, a revision not in the cache (here the default branch) fails fast: never another revision.
    server.requests.clear()
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    result = run_bertclf("inspect", data, "--model", "org/name", env=offline)
    assert_unavailable(result, "'org/name' (the default branch) is not in the local Hugging Face cache",
                       "HF_HUB_OFFLINE", "--model scratch")
    assert server.requests == [] and time.monotonic() - started < 20

    # Once the default branch is cached too, a second training run offline uses the cache, asks nothing, and
    # records main's commit.
    assert run_bertclf("inspect", data, "--model", "org/name", env=env).returncode == 0
    server.requests.clear()
    result = run_bertclf("train", data, "--model", "org/name", "-o", tmp_path / "main", *TRAIN_FAST, env=offline)
    assert result.returncode == 0, result.stderr
    assert server.requests == [] and "Downloading" not in result.stderr
    assert manifest_of(tmp_path / "main")["model"]["revision"] == main and layers_of(tmp_path / "main") == 2


@pytest.mark.parametrize(("repo", "extra_env", "phrases"), [
    ("org/missing", {}, ("'org/missing' was not found", "HF_TOKEN")),
    ("org/gated", {}, ("gated or private", "HF_TOKEN", "hf auth login")),  # no token: 401
    ("org/gated", {"HF_TOKEN": "hf_no_access"}, ("gated or private", "HF_TOKEN")),  # a token without access: 403
    ("org/pickles", {}, ("only pickle weights (pytorch_model.bin)", "--revision refs/pr/N")),
], ids=["404", "401", "403", "pickles"])
def test_repository_errors_exit_69_naming_the_fix(server, data, tmp_path, repo, extra_env, phrases):
    result = run_bertclf("inspect", data, "--model", repo, env=hub_env(server, tmp_path / "hf", **extra_env))
    assert_unavailable(result, *phrases)
    if repo == "org/gated":  # the repository's info is public; its files answer 401, or 403 to a token
        assert (403 if extra_env else 401) in {status for path, status in server.answers if "/resolve/" in path}


def test_unknown_revision_exits_69(server, data, tmp_path):
    result = run_bertclf("train", data, "--model", "org/name", "--revision", "no-such-tag", "-o", tmp_path / "r",
                         *TRAIN_FAST, env=hub_env(server, tmp_path / "hf"))
    assert_unavailable(result, "has no revision 'no-such-tag'")


def test_server_error_exits_69(server, data, tmp_path):
    server.mode = "500"
    result = run_bertclf("inspect", data, "--model", "org/name", env=hub_env(server, tmp_path / "hf"))
    assert_unavailable(result, "cannot be reached (HTTP 500)", "HF_ENDPOINT", "ms://", "--model scratch")


def test_a_server_that_never_answers_exits_69_within_60_seconds(silent_server_runs):
    thread, outcome = silent_server_runs["hang"]
    thread.join(timeout=90)
    assert outcome["seconds"] < 60, outcome
    assert_unavailable(outcome["result"], "cannot be reached (no answer within 10 s", "HF_HUB_ETAG_TIMEOUT")


def test_a_server_that_goes_silent_after_the_info_exits_69_within_60_seconds(silent_server_runs):
    thread, outcome = silent_server_runs["stall"]
    thread.join(timeout=90)
    assert outcome["seconds"] < 60, outcome
    assert_unavailable(outcome["result"], "Downloading org/name", "failed (no data for 30 s",
                       "HF_HUB_DOWNLOAD_TIMEOUT")


def test_revision_of_a_local_model_is_a_usage_error(cli, data, tiny_model_dir, tmp_path):
    code, _, stderr = cli("train", data, "--model", tiny_model_dir, "--revision", "v1", "-o", tmp_path / "r",
                          *TRAIN_FAST)
    assert code == EXIT_USAGE and "--revision 'v1' applies to Hub and ModelScope" in stderr


# -- ModelScope -----------------------------------------------------------------------------------------------


def test_modelscope_model_downloads_with_snapshot_download_and_trains(cli, server, data, tmp_path, monkeypatch):
    """In this process: the modelscope package reads MODELSCOPE_ENDPOINT and MODELSCOPE_CACHE when it is
    called, not when imported (and HF_HUB_OFFLINE, set for every test, does not concern it)."""
    pytest.importorskip("modelscope")
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    code, _, stderr = cli("train", data, "--model", "ms://org/name", "-o", tmp_path / "run", *TRAIN_FAST)
    assert code == 0, stderr
    assert f"Downloading org/name (master) from ModelScope ({server.url})" in stderr
    model = manifest_of(tmp_path / "run")["model"]
    assert model["source"] == "modelscope" and model["requested"] == "ms://org/name" and model["revision"] == "master"
    assert Path(model["path"]).is_relative_to(tmp_path / "ms")
    assert layers_of(tmp_path / "run") == 2  # main's weights, loaded by plain transformers
    # "master" names a branch, not a version: the weights' digest says exactly which files the run started from
    assert model["weights_sha256"] == {"model.safetensors": hashlib.sha256(
        (Path(model["path"]) / "model.safetensors").read_bytes()).hexdigest()}
    fetched = [path for _, path in server.requests if "FilePath=" in path]
    assert fetched and not any(".bin" in path for path in fetched) and server.hub_requests() == []

    code, _, stderr = cli("inspect", data, "--model", "ms://org/name", "--json")
    assert code == 0, stderr
    code, _, stderr = cli("inspect", data, "--model", "ms://org/missing")
    assert code == EXIT_MODEL_UNAVAILABLE and "'org/missing' was not found on ModelScope" in stderr


def test_modelscope_not_installed_exits_69_naming_the_install(cli, data, monkeypatch):
    for name in ("modelscope", "modelscope.hub", "modelscope.hub.snapshot_download"):
        monkeypatch.setitem(sys.modules, name, None)  # what an environment without the package sees
    code, _, stderr = cli("inspect", data, "--model", "ms://org/name")
    assert code == EXIT_MODEL_UNAVAILABLE
    assert "pip install 'bertclf[modelscope]'" in stderr and "Traceback" not in stderr


def test_malformed_modelscope_id_is_a_usage_error(cli, data):
    code, _, stderr = cli("inspect", data, "--model", "ms://just-a-name")
    assert code == EXIT_USAGE and "ms://owner/name" in stderr
