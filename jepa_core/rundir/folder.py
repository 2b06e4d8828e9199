"""The run directory as the trainer claimed it: every write into it goes through `RunFolder`, which
first checks that the path still names the same folder (device and inode recorded at start).

A run directory deleted or moved while the trainer runs (during the eval before a checkpoint,
say) must not come back: a write that created the missing folders would bring a deleted run back
to life, or split a moved one in two (the checkpoint at the old path, the metrics at the new).
So writes here never create parent folders, and each first asks `check()`; a changed or missing
folder raises `RunFolderGone`, an OSError, which every writer already turns into a clean
`write_failed` stop. Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from jepa_core.fsutil import atomic_path


class RunFolderGone(FileNotFoundError):
    """The run directory was deleted, moved or replaced since the run started."""


def identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of `path`, or None when it does not exist (or cannot be looked at)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class RunFolder:
    """A run directory that exists now, and the writes into it (paths are relative to it)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.identity = identity(self.path)
        if self.identity is None:
            raise FileNotFoundError(errno.ENOENT, "the run directory does not exist", str(self.path))

    @classmethod
    def create(cls, path: Path | str) -> "RunFolder":
        """Make the folder (and its parents) when missing, then record it: for a run being started."""
        Path(path).mkdir(parents=True, exist_ok=True)
        return cls(path)

    def gone(self) -> bool:
        """The path no longer names the folder the run started in (deleted, moved or replaced)."""
        return identity(self.path) != self.identity

    def check(self) -> Path:
        """The one check before every write: raise RunFolderGone when the folder is not the run's any more."""
        if self.gone():
            raise RunFolderGone(
                errno.ENOENT, "the run directory was deleted, moved or replaced during training; nothing more is written there",
                str(self.path),
            )
        return self.path

    def mkdir(self, name: str) -> Path:
        """A folder inside the run (never its parents); returns its path."""
        sub = self.check() / name
        sub.mkdir(exist_ok=True)
        return sub

    @contextlib.contextmanager
    def atomic(self, name: str, *, durable: bool = True) -> Iterator[Path]:
        """`fsutil.atomic_path` for the file `name` inside the run, after the check and without creating folders."""
        with atomic_path(self.check() / name, parents=False, durable=durable) as tmp:
            yield tmp

    def write_bytes(self, name: str, data: bytes, *, durable: bool = True) -> None:
        with self.atomic(name, durable=durable) as tmp:
            tmp.write_bytes(data)

    def write_text(self, name: str, text: str, *, durable: bool = True) -> None:
        self.write_bytes(name, text.encode("utf-8"), durable=durable)
