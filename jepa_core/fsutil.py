"""Atomic file writes: temp file in the same directory, fsync, rename.

A crash, Ctrl-C or a full disk during a write leaves the previous file intact
(the rename is the commit point), and never a half-written file under the
final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def new_file_mode() -> int:
    """The mode a file created here gets (0644 under the usual umask 022)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: Path, *, parents: bool = True, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically.

    `parents=False` never creates a missing folder (a run directory that vanished must stay
    gone); `durable=False` skips the fsyncs (a heartbeat, rewritten often, need not survive a crash).
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    mode = new_file_mode()
    # mkstemp makes the file 0600; the final file should have the mode any new file gets here
    os.fchmod(fd, mode)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # again: a writer may have replaced the temp file rather than written into it (safetensors'
        # save_file does, and its file is 0600 again)
        os.chmod(tmp_path, mode)
        if durable:
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp_path, path)
        if durable:
            _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
