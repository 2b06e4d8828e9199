"""Asking a running trainer to stop: the `stop` file it polls, plus SIGINT when it runs here."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from jepa_core.rundir import STOPFILE, pid_is_local_and_alive, read_pidfile


@dataclass
class StopRequest:
    stop_file: Path
    signalled_pid: int | None  # the process sent SIGINT, if any


def request_stop(run_dir: Path, fallback_pid: int | None = None) -> StopRequest:
    """Create `run_dir/stop` and SIGINT the trainer named by `train.pid` if it is alive on this host.

    The file alone is enough (the trainer checks it every step, also across
    hosts on a shared disk); the signal wakes a trainer blocked in a long step.
    `fallback_pid` is the process the dashboard started itself, used before the
    trainer has written its pid file.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stop = run_dir / STOPFILE
    stop.write_text(f"stop requested by the dashboard at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    info = read_pidfile(run_dir)
    pid: int | None = None
    if pid_is_local_and_alive(info):
        pid = int(info["pid"])  # type: ignore[index]
    elif info is None and fallback_pid is not None:
        pid = fallback_pid
    if pid is not None:
        try:
            os.kill(pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError):
            pid = None
    return StopRequest(stop, pid)
