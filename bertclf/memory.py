"""Giving freed host memory back to the operating system during long CPU runs.

glibc's malloc keeps memory that torch frees in its heap for reuse. Training allocates tensors whose sizes change
from step to step (padded batch lengths, the number of masked tokens in pre-training), so the heap fragments and
the process keeps growing although nothing is leaked: `bertclf pretrain` of scratch:tiny on zh_unlabelled (256
tokens, batch 32, 2 threads) held 2.9 GB after 250 steps and 3.9 GB after 3,000, for a 1.5M-parameter model.
Calling `malloc_trim(0)` now and then hands the free pages back: every 25 steps the same run stayed at 1.2-1.3 GB
at unchanged speed (71 samples/s either way); every 10 seconds it peaked at 1.4 GB over 300 steps. Lowering
glibc's mmap threshold instead (MALLOC_MMAP_THRESHOLD_=64K or 4M) held 0.9-1.0 GB but cost 23% of the speed.
The other way, keeping freed memory in the heap (mallopt: the mmap threshold fixed at 32 MB, the trim threshold at
1 GB, with and without these trims), cut a 1,000-row MiniLM fine-tuning's minor page faults from 4.7-5.2M to
1.2-3.2M and its system time from 13-15 s to 6-11 s, but its training time (84-91 s against 87-94 s, bf16,
AVX512-BF16 VM, 2026-12-07) stayed within run-to-run noise, so it was not adopted.
"""

from __future__ import annotations

import ctypes
import functools
import time

# Seconds between trims. A trim takes milliseconds, but the pages it hands back are faulted in again by the next
# steps: trimming every 25 steps of a fast run (zh_reviews, scratch:tiny, 0.15 s a step) measured 314 against 341
# samples/s (one pair); every 10 s, two interleaved pairs measured 0.96x and 1.00x, i.e. within noise. Untrimmed,
# pre-training grew by up to 10 MB a second, so 10 s keeps the excess to about 100 MB.
TRIM_SECONDS = 10.0


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, Windows, musl)."""
    try:
        return ctypes.CDLL(None).malloc_trim  # the symbols already loaded into this process, libc among them
    except (OSError, AttributeError, TypeError):
        return None


def release_free_memory() -> bool:
    """Return the C heap's free pages to the operating system; True if the C library could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class Trimmer:
    """Calls release_free_memory at most once every TRIM_SECONDS (the training loop asks after every step)."""

    def __init__(self, interval: float | None = None):
        self.interval = TRIM_SECONDS if interval is None else interval
        self.last = time.monotonic()

    def maybe_trim(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.interval:
            return False
        self.last = now
        return release_free_memory()
