"""Every file bertclf writes for a user goes through here: whole or not at all, never through a planted link.

A regular file (new, or an existing one) is written to a unique temporary file made by `tempfile.mkstemp`
in the target's own directory (O_EXCL: a planted `<name>.tmp` symlink cannot redirect it, and two writers
never share one), fsynced, then renamed over the target, so a reader sees the old file or the new one,
never half of either, and a failure leaves neither a partial file nor the temporary one behind.
An existing symlink is written through: the file it points to is replaced, the link stays. A device or
FIFO (`/dev/null`, `/dev/stdout`, `mkfifo`) is written to directly, as `cat > /dev/null` would, and is
never replaced by a regular file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bertclf.errors import OutputError


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only swap it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicFile:
    """An open output file; `commit()` puts it in place, `abort()` throws it away. See the module docstring."""

    def __init__(self, path: Path | str, mode: str = "w", *, encoding: str | None = "utf-8",
                 newline: str | None = "", what: str | None = None):
        self.path = Path(path)
        self.what = what or str(self.path)  # how messages name the target, e.g. "--output out.csv"
        if "b" in mode:
            encoding = newline = None
        self._tmp: str | None = None
        self.target = Path(os.path.realpath(self.path))  # a symlink is written through to its file
        try:
            info = os.stat(self.path)  # follows links: what the path leads to
        except FileNotFoundError:
            info = None  # a new file (or a dangling link: its target is created)
        except OSError as exc:
            raise self._error(exc) from None
        try:
            if info is not None and stat.S_ISDIR(info.st_mode):
                raise OutputError(f"Cannot write {self.what}: it is a directory.", hint="Give a file name.")
            if (info is not None and not stat.S_ISREG(info.st_mode)) or _is_special(self.path):
                # A device, FIFO or socket (or /dev/stdout, /proc/self/fd/N even when they lead to a file):
                # write to it as it is. Replacing /dev/null by a file would break the system, a FIFO's
                # reader waits on this very node, and /dev/stdout's file belongs to the shell's redirect.
                self.handle: IO = open(self.path, mode, encoding=encoding, newline=newline)  # noqa: SIM115
                return
            fd, self._tmp = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.",
                                             suffix=".tmp")
            # mkstemp makes the file 0600; give it the mode a plain open() would (or the replaced file's).
            os.fchmod(fd, stat.S_IMODE(info.st_mode) if info is not None else 0o666 & ~_umask())
            self.handle = os.fdopen(fd, mode, encoding=encoding, newline=newline)
        except OSError as exc:
            self._discard()
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(f"Cannot write {self.what}: {exc.strerror or exc}.",
                           hint="Check the path, free disk space and permissions.")

    def _discard(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None

    def commit(self) -> None:
        """Flush to disk and rename into place (for a device or FIFO: flush and close)."""
        try:
            self.handle.flush()
            if self._tmp is not None:
                os.fsync(self.handle.fileno())
            self.handle.close()
            if self._tmp is not None:
                os.replace(self._tmp, self.target)
                self._tmp = None
                _fsync_directory(self.target.parent)
        except OSError as exc:
            self.abort()
            raise self._error(exc) from None

    def abort(self) -> None:
        """Close and delete the temporary file; the target is left as it was."""
        with contextlib.suppress(OSError, ValueError):
            self.handle.close()
        self._discard()


def _is_special(path: Path) -> bool:
    parts = Path(os.path.abspath(path)).parts
    return len(parts) > 2 and parts[1] in ("dev", "proc")


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; not every filesystem lets a directory be fsynced."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(path: Path | str, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = "",
                  what: str | None = None) -> Iterator[IO]:
    """`with atomic_output(path) as handle: ...`: committed when the block ends, discarded if it raises.
    OSErrors while writing become OutputError (exit 74) naming the target."""
    output = AtomicFile(path, mode, encoding=encoding, newline=newline, what=what)
    try:
        yield output.handle
    except OSError as exc:
        output.abort()
        raise output._error(exc) from None
    except BaseException:
        output.abort()
        raise
    output.commit()
