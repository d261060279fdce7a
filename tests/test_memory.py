"""bertclf.memory: the training loop hands the C heap's free pages back to the operating system now and then."""

import ctypes

import pytest
from conftest import EXAMPLES

from bertclf import memory


def test_release_free_memory_calls_glibc_malloc_trim():
    if not hasattr(ctypes.CDLL(None), "malloc_trim"):
        pytest.skip("this C library has no malloc_trim (not glibc)")
    assert memory.release_free_memory() is True


def test_without_malloc_trim_it_does_nothing(monkeypatch):
    class NoTrim:  # a C library such as macOS's or musl's
        def __init__(self, name):
            pass

    monkeypatch.setattr(memory.ctypes, "CDLL", NoTrim)
    memory._malloc_trim.cache_clear()
    try:
        assert memory.release_free_memory() is False
    finally:
        memory._malloc_trim.cache_clear()


def test_the_trimmer_waits_its_interval(monkeypatch):
    calls, now = [], [100.0]
    monkeypatch.setattr(memory.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(memory, "release_free_memory", lambda: calls.append(now[0]) or True)
    trimmer = memory.Trimmer(interval=10.0)
    for now[0] in (105.0, 109.9, 110.0, 115.0, 121.0):
        trimmer.maybe_trim()
    assert calls == [110.0, 121.0]


def test_training_trims_between_steps(monkeypatch, tiny_model_dir, tmp_path, cli):
    calls = []
    monkeypatch.setattr(memory, "TRIM_SECONDS", 0.0)
    monkeypatch.setattr(memory, "release_free_memory", lambda: calls.append(1) or True)
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "--model", tiny_model_dir, "-o", tmp_path / "run",
                          "--max-steps", "4", "--batch-size", "8", "--cpu")
    assert code == 0, stderr
    assert len(calls) == 4  # once after every optimizer step when the interval is 0
