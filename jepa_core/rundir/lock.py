"""The trainer's presence in a run directory: its pid file, the one-trainer lock and the heartbeat (stdlib only)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jepa_core.errors import JepaError

from .layout import HEARTBEAT, LOCKFILE, PIDFILE, STOPFILE


def pid_text() -> str:
    """The body of train.pid for this process."""
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})


def write_pidfile(run_dir: Path) -> None:
    (Path(run_dir) / PIDFILE).write_text(pid_text())


def remove_pidfile(run_dir: Path) -> str | None:
    """Remove `train.pid`; None when it is gone, else why it stayed (a folder made read-only during the run).

    A pid file left behind is harmless: the lock, not the pid file, decides who trains (a resume takes
    over), and readers see that the process it names has exited. So this never raises.
    """
    try:
        (Path(run_dir) / PIDFILE).unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        return f"{e.strerror or e}" + (f" (errno {e.errno})" if e.errno else "")
    return None


def read_pidfile(run_dir: Path) -> dict[str, Any] | None:
    """`train.pid` as a dict ({"pid", "host", "started"}), or None if absent or unreadable."""
    try:
        info = json.loads((Path(run_dir) / PIDFILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int) or isinstance(info.get("pid"), bool):
        return None
    return info


def pid_is_local_and_alive(info: Mapping[str, Any] | None) -> bool | None:
    """True/False for a pid file written on this host; None when it names another host."""
    if not info:
        return None
    host = info.get("host")
    if host and host != socket.gethostname():
        return None
    pid = int(info["pid"])
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_held(run_dir: Path) -> bool | None:
    """Whether a trainer holds the run's lock now (`RunLock`): the authority on liveness, where the pid
    file is a hint. None when it cannot be told: no lock file (no trainer of this tool made it), no
    flock (not POSIX), or a file this process may not open. Takes a shared lock for an instant and
    never creates the file; `RunLock.acquire` waits out such an instant."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(Path(run_dir) / LOCKFILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # drops the shared lock, if taken
    return False


class RunBusy(JepaError):
    """Another trainer holds this run directory."""


class RunLock:
    """One trainer per run directory: an exclusive flock on `train.lock`, held for the run's life.

    The OS drops the lock when the process dies however it dies, so a stale pid
    file never blocks a resume. Where flock is unavailable (not POSIX) the lock
    is advisory only and always succeeds.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCKFILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # as any new file: the umask decides
        try:
            _flock_exclusive(fd)
        except OSError:
            os.close(fd)
            info = read_pidfile(self.path.parent)
            who = f"process {info['pid']} on {info.get('host', '?')}" if info else "another process"
            raise RunBusy(
                f"{self.path.parent} is being trained by {who}: one trainer per run directory.",
                hint=f"Watch it with `jepa watch {self.path.parent}`, stop it with `touch {self.path.parent / STOPFILE}`, "
                "or start a separate run without --run-dir/--resume.",
            ) from None
        self._fd = fd
        return self

    def probe(self) -> None:
        """Raise RunBusy if a trainer holds the lock now (an early, cheap check; `acquire` is the real one)."""
        if self.path.exists():
            try:
                self.acquire()
            except OSError:
                return  # cannot even open the lock file: `acquire` will say so when it matters
            self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _flock_exclusive(fd: int, patience_s: float = 0.5) -> None:
    """LOCK_EX without blocking on a trainer, but waiting out the instant a reader's `lock_held` holds
    the lock shared (a status poll), which would otherwise read as another trainer."""
    import fcntl

    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def write_heartbeat(run_dir: Path, **fields: Any) -> None:
    """Replace heartbeat.json (no fsync: it is a liveness hint, rewritten many times a second at most)."""
    path = Path(run_dir) / HEARTBEAT
    tmp = path.with_name(f".{HEARTBEAT}.{os.getpid()}.tmp")
    try:
        tmp.write_text(heartbeat_text(**fields))
        os.replace(tmp, path)
    except OSError:  # a missing heartbeat only makes the dashboard less lively; the run goes on
        try:
            tmp.unlink()
        except OSError:
            pass


def heartbeat_text(**fields: Any) -> str:
    """The body of heartbeat.json: `fields` and the time now."""
    return json.dumps({**fields, "time": time.time()})


def read_heartbeat(run_dir: Path) -> dict[str, Any] | None:
    try:
        d = json.loads((Path(run_dir) / HEARTBEAT).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None
