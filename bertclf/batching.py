"""Cutting a stream of items into chunks for batched inference, without holding up a slow stream.

A file is cut into fixed chunks (the same input always gives the same chunks, so the same bytes out). A live
stream (stdin: `tail -f log | bertclf predict RUN -`) is read by a background thread, and a chunk is closed when
it is full *or* when its first item has waited `max_wait` seconds, so each prediction comes out about a second
after its line arrives while a fast pipe still fills whole chunks.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def fixed_chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def timed_chunks(items: Iterable[T], size: int, max_wait: float) -> Iterator[list[T]]:
    """Chunks of at most `size` items, each closed at most `max_wait` seconds after its first item arrived.
    The items are drawn in a daemon thread; an exception there is raised here, at its place in the stream."""
    inbox: queue.Queue = queue.Queue(maxsize=2 * size)  # bounded: a fast reader cannot run ahead unboundedly

    def read() -> None:
        try:
            for item in items:
                inbox.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            inbox.put(_Failure(exc))
            return
        inbox.put(_DONE)

    threading.Thread(target=read, name="bertclf-input", daemon=True).start()
    while True:
        item = inbox.get()
        if item is _DONE:
            return
        if isinstance(item, _Failure):
            raise item.error
        chunk, deadline = [item], time.monotonic() + max_wait
        while len(chunk) < size:
            try:
                item = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _DONE or isinstance(item, _Failure):
                yield chunk
                if isinstance(item, _Failure):
                    raise item.error
                return
            chunk.append(item)
        yield chunk
