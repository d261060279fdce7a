"""bertclf.memory: the training loop keeps freed memory in the C heap and hands it back to the operating system
when the process has grown."""

import ctypes

import pytest
from conftest import EXAMPLES

from bertclf import memory


def test_release_free_memory_calls_glibc_malloc_trim():
    if not hasattr(ctypes.CDLL(None), "malloc_trim"):
        pytest.skip("this C library has no malloc_trim (not glibc)")
    assert memory.release_free_memory() is True


def test_keep_freed_memory_sets_glibc_thresholds():
    if not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("this C library has no mallopt (not glibc)")
    assert memory.keep_freed_memory() is True


def test_without_glibc_functions_they_do_nothing(monkeypatch):
    class NoGlibc:  # a C library such as macOS's or musl's
        def __init__(self, name):
            pass

    monkeypatch.setattr(memory.ctypes, "CDLL", NoGlibc)
    memory._libc_function.cache_clear()
    try:
        assert memory.release_free_memory() is False
        assert memory.keep_freed_memory() is False
    finally:
        memory._libc_function.cache_clear()


def test_resident_bytes_reads_this_process():
    size = memory.resident_bytes()
    if size is None:
        pytest.skip("no /proc/self/statm here (not Linux)")
    assert 10 * 2**20 < size < 64 * 2**30


def _run_trimmer(monkeypatch, sizes: dict[float, int | None]) -> list[float]:
    """Ask a 10-second Trimmer at each time in `sizes`, the resident size then being its value; the trim times.
    A trim brings the resident size down to 1 GB."""
    calls, now, size = [], [100.0], [None]
    monkeypatch.setattr(memory.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(memory, "resident_bytes", lambda: size[0])

    def trim():
        calls.append(now[0])
        size[0] = 2**30 if size[0] is not None else None
        return True

    monkeypatch.setattr(memory, "release_free_memory", trim)
    trimmer = memory.Trimmer(interval=10.0)
    for now[0], size[0] in sizes.items():
        trimmer.maybe_trim()
    return calls


def test_the_trimmer_trims_only_when_the_process_has_grown(monkeypatch):
    gib = 2**30
    # first look at 110 s (1 GB: the baseline); 1.2 GB is within 25% of it; 1.3 GB is not; after the trim the
    # baseline is 1 GB again; 105 s and 125 s come too soon after the previous look (or the start, 100 s).
    calls = _run_trimmer(monkeypatch, {105.0: 5 * gib, 110.0: gib, 120.0: int(1.2 * gib), 125.0: 9 * gib,
                                       130.0: int(1.3 * gib), 140.0: int(1.2 * gib), 150.0: 2 * gib})
    assert calls == [130.0, 150.0]


def test_where_the_size_cannot_be_read_the_trimmer_trims_every_interval(monkeypatch):
    calls = _run_trimmer(monkeypatch, {105.0: None, 109.9: None, 110.0: None, 115.0: None, 121.0: None})
    assert calls == [110.0, 121.0]


def test_training_keeps_the_heap_and_trims_between_steps(monkeypatch, tiny_model_dir, tmp_path, cli):
    calls, kept = [], []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: kept.append(1) or True)
    monkeypatch.setattr(memory, "TRIM_SECONDS", 0.0)
    monkeypatch.setattr(memory, "resident_bytes", lambda: None)  # unknown size: a trim at every look
    monkeypatch.setattr(memory, "release_free_memory", lambda: calls.append(1) or True)
    code, _, stderr = cli("train", EXAMPLES / "en_topics.csv", "--model", tiny_model_dir, "-o", tmp_path / "run",
                          "--max-steps", "4", "--batch-size", "8", "--cpu")
    assert code == 0, stderr
    assert len(calls) == 4  # once after every optimizer step when the interval is 0
    assert kept == [1]  # the heap settings, once per run
