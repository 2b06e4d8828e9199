"""Follow a JSON-lines file another process appends to (`metrics.jsonl`): `MetricsTail`.

Tailing rules: a last line without its newline is not consumed until the
newline arrives (the trainer may be mid-write); a file that shrinks, is
replaced, or whose first bytes change was rewritten, so reading starts over; a
line that is not a JSON object is counted and skipped. A path that is there but
is no readable file (a folder, a pipe, no permission) is `RunUnreadable`.
Standard library only; `live.RunLog` is built on it.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jepa_core.errors import JepaError

from . import layout

# Bytes of the file's start remembered to notice a rewrite that is not a shrink.
_HEAD_BYTES = 64


class RunUnreadable(JepaError):
    """A run's metrics.jsonl exists but cannot be read: a folder, a pipe, no permission, an I/O error.
    Readers of many runs (`jepa runs`, `jepa watch`) leave such a run out with a note."""

    run_dir: Path
    why: str  # "it is a folder, not a file", "Permission denied (errno 13)"

    def note(self) -> str:
        """One line for a listing that goes on without this run."""
        return f"skipped {self.run_dir}: its {layout.METRICS} cannot be read ({self.why})"


def _unreadable(path: Path, why: str) -> RunUnreadable:
    e = RunUnreadable(
        f"{path} cannot be read: {why}.",
        hint=f"A run's {layout.METRICS} is a file the trainer appends to; move this one aside (or fix its permissions) to read the run.",
    )
    e.run_dir, e.why = path.parent, why
    return e


@dataclass
class TailRead:
    records: list[dict[str, Any]]
    reset: bool  # the file was truncated or replaced: earlier records are void
    bad_lines: int


class MetricsTail:
    """Incremental reader of a JSON-lines file that another process appends to."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0  # bytes consumed, complete lines and the pending partial line
        self._partial = b""
        self._ident: tuple[int, int] | None = None
        self._head = b""
        self.size = 0
        self.mtime: float | None = None

    def _restart(self) -> None:
        self._offset = 0
        self._partial = b""
        self._ident = None
        self._head = b""

    @property
    def pending(self) -> int:
        """Bytes known to be in the file but not read yet (as of the last read)."""
        return max(0, self.size - self._offset)

    def read(self, max_bytes: int | None = None) -> TailRead:
        """New complete lines since the last call (at most about max_bytes of them).
        RunUnreadable when the path is there but is no readable file (a folder, say)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            had = self._ident is not None
            self._restart()
            self.size, self.mtime = 0, None
            return TailRead([], had, 0)
        except OSError as e:
            raise _unreadable(self.path, _why(e)) from None
        if not stat.S_ISREG(st.st_mode):  # a folder fails to open; a FIFO would block the reader forever
            raise _not_a_file(self.path, st)
        self.mtime = st.st_mtime
        self.size = st.st_size
        ident = (st.st_dev, st.st_ino)
        reset = False
        if self._ident is not None and (ident != self._ident or st.st_size < self._offset):
            self._restart()
            reset = True
        if st.st_size == self._offset:
            self._ident = ident
            return TailRead([], reset, 0)
        try:
            with open(self.path, "rb") as f:
                if self._offset and self._head:
                    # Same inode and not shorter, but the start differs: rewritten in place.
                    if f.read(len(self._head)) != self._head:
                        self._restart()
                        reset = True
                f.seek(self._offset)
                data = f.read(max_bytes if max_bytes else -1)
        except FileNotFoundError:
            self._restart()
            return TailRead([], True, 0)
        except OSError as e:
            raise _unreadable(self.path, _why(e)) from None
        self._ident = ident
        if self._offset == 0:
            self._head = data[:_HEAD_BYTES]
        self._offset += len(data)
        buf = self._partial + data
        lines = buf.split(b"\n")
        self._partial = lines.pop()  # b"" when the data ended on a newline
        records: list[dict[str, Any]] = []
        bad = 0
        for raw in lines:
            raw = raw.strip()
            if not raw:
                continue
            try:
                obj = json.loads(raw.decode("utf-8", errors="replace"))
            except (ValueError, RecursionError):  # RecursionError: absurdly nested arrays, not a record
                bad += 1
                continue
            if isinstance(obj, dict):
                records.append(obj)
            else:
                bad += 1
        return TailRead(records, reset, bad)


def unreadable(run_dir: Path) -> RunUnreadable | None:
    """Why the run's metrics.jsonl cannot be read (it is a folder, say), or None: a check before attaching
    to it, which reads nothing (a missing file is fine: the run has not logged yet)."""
    path = Path(run_dir) / layout.METRICS
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return _not_a_file(path, st)
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        return None
    except OSError as e:
        return _unreadable(path, _why(e))
    return None


def _not_a_file(path: Path, st: os.stat_result) -> RunUnreadable:
    return _unreadable(path, "it is a folder, not a file" if stat.S_ISDIR(st.st_mode) else "it is not a regular file")


def _why(e: OSError) -> str:
    return f"{e.strerror or e}" + (f" (errno {e.errno})" if e.errno else "")
