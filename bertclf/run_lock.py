"""The --output directory of one `bertclf train`: checked, created, locked, and left as found when the run
fails before it has written anything worth keeping.

The lock is an exclusive `fcntl.flock` on the directory itself (no lock file: a lock file would stay in
the run directory, or be unlinked while another process waits on it). The kernel drops it when the
process ends, however it ends, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from bertclf.errors import OutputError, UsageError
from bertclf.runinfo import MANIFEST

# Files a run writes; --overwrite removes these (and only these) from an earlier run in the same place.
RUN_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", MANIFEST, "metrics.json", "train_log.jsonl", "README.md",
             "pretrain.json")
RUN_DIRS = ("checkpoints", ".cache", ".scratch-vocab")


class RunDirectory:
    """Call claim() before anything touches the directory, make_ready() before the run's first write,
    keep() once it holds something worth keeping (a checkpoint, a finished loop), and in any case
    close(failed=...) at the end: a failed run that kept nothing is undone."""

    def __init__(self, path: Path, *, overwrite: bool = False, resume: bool = False, manifest: str = MANIFEST):
        self.path = Path(path)
        self.manifest = manifest  # the file that marks a run to resume (pretrain writes pretrain.json)
        self.overwrite, self.resume = overwrite, resume
        self.created: list[Path] = []  # directories this run made, outermost first
        self.found: set[str] | None = None  # the entries present before this run wrote anything
        self.kept = resume  # a resumed run's directory is never undone
        self.ready = False
        self._fd: int | None = None

    def claim(self) -> None:
        """Lock the directory (creating it if needed) and check it may take this run; exit 2 or 74 if not.
        A claim that fails leaves the directory as it was."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise UsageError(f"--output {path} exists and is not a directory.")
        if self.resume and not path.exists():
            raise UsageError(f"--resume: {path} holds no bertclf run to resume.",
                             hint="Pass the --output directory of the interrupted run.")
        self._create()
        try:
            self._lock()  # before looking inside: a run in progress is reported as such, and never cleared
            self._check_contents()
        except BaseException:
            self._remove_created()
            self._release()
            raise
        self.found = set(os.listdir(path))

    def _check_contents(self) -> None:
        path = self.path
        if self.resume:
            if not (path / self.manifest).is_file():
                raise UsageError(f"--resume: {path} holds no bertclf run to resume.",
                                 hint="Pass the --output directory of the interrupted run.")
        elif any(path.iterdir()) and not self.overwrite:
            raise UsageError(f"--output {path} is not empty.",
                             hint="Choose another directory, or pass --overwrite to replace the run in it.")
        try:  # fail now, not after loading a model, if nothing can be written here
            handle, probe = tempfile.mkstemp(dir=path, prefix=".bertclf-write-test-")
            os.close(handle)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(f"Cannot write to --output {path}: {exc.strerror or exc}.",
                              hint="Choose a writable directory.") from None

    def _create(self) -> None:
        missing = []
        for directory in (self.path, *self.path.parents):
            if directory.exists():
                break
            missing.append(directory)
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                continue  # made by someone else meanwhile: theirs, not ours to remove
            except OSError as exc:
                self._remove_created()
                raise OutputError(f"Cannot create --output {self.path}: {exc.strerror or exc}.",
                                  hint="Choose a writable directory.") from None
            self.created.append(directory)

    def _lock(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise OutputError(f"Cannot open --output {self.path}: {exc.strerror or exc}.") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._release()
            raise UsageError(f"--output {self.path} is locked: another `bertclf train` is writing to it "
                             f"(an exclusive flock lock on the directory {self.path}).",
                             hint="Wait for that run to finish, or choose another --output.") from None

    def make_ready(self) -> None:
        """Just before the run's first write: with --overwrite, remove the earlier run's files now (not
        earlier: a run that fails before this point leaves them as they were). Safe to call twice."""
        if self.ready or self.found is None:
            return
        self.ready = True
        if self.overwrite and not self.resume:
            for name in RUN_FILES:
                (self.path / name).unlink(missing_ok=True)
            for name in RUN_DIRS:
                shutil.rmtree(self.path / name, ignore_errors=True)
            self.found = set(os.listdir(self.path))

    def keep(self) -> None:
        self.kept = True

    def close(self, failed: bool) -> None:
        """Release the lock; after a failure that kept nothing, undo what this run wrote."""
        try:
            if failed and not self.kept and self.found is not None:
                self._undo()
        finally:
            self._release()

    def _undo(self) -> None:
        if self.path not in self.created:
            for name in set(os.listdir(self.path)) - self.found:
                entry = self.path / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        self._remove_created()

    def _remove_created(self) -> None:
        for directory in reversed(self.created):  # innermost first
            if directory == self.path:
                shutil.rmtree(directory, ignore_errors=True)  # made by this run: all of it is this run's
                continue
            try:
                directory.rmdir()  # a parent this run made, only if nothing else has moved in
            except OSError:
                break
        self.created = []

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
