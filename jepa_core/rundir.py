"""The run-directory contract (DESIGN section 5): every name and small file format in one place.

Stdlib only, so readers (`inspect`, `runlog`, the dashboard, `ablate`) use it
without importing torch. The writer (the trainer and its checkpointer) uses the
same names, so a reader and the writer cannot disagree on where a file lives.

    runs/<profile>-<UTC stamp>/
      config.toml  metrics.jsonl  tokenizer.json
      train.pid        {"pid", "host", "started"} of the trainer (informative)
      train.lock       held with flock() while a trainer runs (authoritative)
      heartbeat.json   {"step", "max_steps", "phase", "time"}: cheap liveness, written often
      stop             created to ask the trainer to stop
      checkpoints/step-XXXXXXXX.safetensors / .state.safetensors, latest.json, best.json
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jepa_core.errors import CheckpointError, JepaError
from jepa_core.fsutil import atomic_write_text

METRICS = "metrics.jsonl"
CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
PIDFILE = "train.pid"
LOCKFILE = "train.lock"
HEARTBEAT = "heartbeat.json"
STOPFILE = "stop"
CKPT_DIR = "checkpoints"
LATEST = "latest.json"
BEST = "best.json"

_WEIGHTS_RE = re.compile(r"^step-(\d{8})\.safetensors$")
_STATE_RE = re.compile(r"^step-(\d{8})\.state\.safetensors$")


# --------------------------------------------------------------------------- time


def utc_now_iso() -> str:
    """ISO 8601 UTC time to the second: the `created` stamps of checkpoints, manifests and reports."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def utc_stamp() -> str:
    """UTC time as used in run and sweep directory names (sorts by time)."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def new_run_dir(out_dir: str | Path, profile: str) -> Path:
    """runs/<profile>-<UTC timestamp>, with a numeric suffix when that exists already."""
    base = Path(out_dir) / f"{profile}-{utc_stamp()}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def holds_run(path: Path) -> bool:
    """True when `path` is a directory some trainer has written a run into."""
    p = Path(path)
    return p.is_dir() and any((p / n).exists() for n in (METRICS, CONFIG, PIDFILE, CKPT_DIR))


# --------------------------------------------------------------------------- checkpoints


def weights_name(step: int) -> str:
    return f"step-{step:08d}.safetensors"


def state_name(step: int) -> str:
    return f"step-{step:08d}.state.safetensors"


def weights_step(path: Path) -> int | None:
    """The step in a `step-XXXXXXXX.safetensors` name, else None."""
    m = _WEIGHTS_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class CheckpointRef:
    run_dir: Path
    step: int
    weights: Path
    state: Path


def _ref(ckpt_dir: Path, step: int) -> CheckpointRef:
    return CheckpointRef(run_dir=ckpt_dir.parent, step=step, weights=ckpt_dir / weights_name(step), state=ckpt_dir / state_name(step))


def list_checkpoints(ckpt_dir: Path) -> list[CheckpointRef]:
    """Checkpoints in `ckpt_dir` whose weights file exists, oldest first."""
    try:
        names = os.listdir(ckpt_dir)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CheckpointError(f"Cannot list {ckpt_dir}: {e.strerror or e}.") from None
    steps = sorted(int(m.group(1)) for n in names if (m := _WEIGHTS_RE.match(n)))
    return [_ref(Path(ckpt_dir), s) for s in steps]


def _read_pointer(path: Path, run_dir: Path) -> CheckpointRef | None:
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        step, weights = d["step"], d["weights"]
        state = d.get("state") or (state_name(step) if isinstance(step, int) else None)
        if not (isinstance(step, int) and not isinstance(step, bool) and isinstance(weights, str) and isinstance(state, str)):
            raise TypeError("expected an integer step and file names")
        if "/" in weights + state or not weights:
            raise TypeError("file names must name files in the checkpoints folder")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}).") from None
    return CheckpointRef(run_dir=Path(run_dir), step=step, weights=path.parent / weights, state=path.parent / state)


def read_latest(run_dir: Path) -> CheckpointRef | None:
    """The checkpoint named by checkpoints/latest.json, or None when there is none."""
    return _read_pointer(Path(run_dir) / CKPT_DIR / LATEST, Path(run_dir))


def read_best(run_dir: Path) -> CheckpointRef | None:
    """The checkpoint named by checkpoints/best.json (best val loss so far), or None."""
    return _read_pointer(Path(run_dir) / CKPT_DIR / BEST, Path(run_dir))


def write_pointer(ckpt_dir: Path, name: str, step: int, **extra: Any) -> None:
    """Replace latest.json or best.json atomically, after the files it names are complete."""
    body = {"step": step, "weights": weights_name(step), "state": state_name(step), **extra}
    atomic_write_text(Path(ckpt_dir) / name, json.dumps(body) + "\n")


def resolve_checkpoint(path: str | Path) -> tuple[CheckpointRef, str | None]:
    """A run directory, a checkpoints/ folder, a weights file or a state file -> a checkpoint.

    The second value says how a directory was resolved (None for a file). A
    directory resolves through latest.json, or to its newest weights file when
    latest.json is missing or names a file that does not exist (said in the note).
    `RUN:best` names the run's best checkpoint (checkpoints/best.json).
    """
    text = str(path)
    if text.endswith(":best") and not Path(text).exists():
        run = Path(text[: -len(":best")])
        run = run.parent if run.name == CKPT_DIR else run
        ref = read_best(run)
        if ref is None:
            raise CheckpointError(f"{run} has no checkpoints/{BEST}: no best checkpoint was kept.", hint="Runs keep one with train.keep_best = true once they have evaluated.")
        return ref, f"{run / CKPT_DIR / BEST} names step {ref.step}"
    p = Path(path)
    if not p.exists():
        raise CheckpointError(
            f"{p} does not exist.",
            hint="Pass a run directory (runs/<run>), its checkpoints/ folder, or a step-*.safetensors file.",
        )
    if p.is_file():
        if (m := _STATE_RE.match(p.name)) is not None:
            step = int(m.group(1))
            return CheckpointRef(run_dir=p.parent.parent, step=step, weights=p.with_name(weights_name(step)), state=p), None
        step = weights_step(p)
        state = p.with_name(state_name(step)) if step is not None else p.with_name(p.stem + ".state.safetensors")
        return CheckpointRef(run_dir=p.parent.parent, step=-1 if step is None else step, weights=p, state=state), None
    ckpt_dir = p / CKPT_DIR if (p / CKPT_DIR).is_dir() else p
    ckpts = list_checkpoints(ckpt_dir)
    if not ckpts and ckpt_dir == p and not (p / LATEST).exists():
        raise CheckpointError(
            f"{p} is a directory without checkpoints (no checkpoints/ folder, {LATEST} or step-*.safetensors).",
            hint="Pass a run directory written by `jepa train` (runs/<run>), its checkpoints/ folder, or a .safetensors file. "
            "A run writes its first checkpoint after train.checkpoint_every steps or when it ends.",
        )
    try:
        ref = _read_pointer(ckpt_dir / LATEST, ckpt_dir.parent)
        problem = f"{ckpt_dir / LATEST} is missing" if ref is None else (None if ref.weights.is_file() else f"{ckpt_dir / LATEST} names {ref.weights.name}, which does not exist")
    except CheckpointError as e:
        ref, problem = None, e.message.rstrip(".")
    if ref is not None and problem is None:
        return ref, f"{ckpt_dir / LATEST} names step {ref.step}"
    if not ckpts:
        raise CheckpointError(f"{ckpt_dir} holds no weights checkpoints (step-*.safetensors); {problem}.")
    return ckpts[-1], f"{problem}; using the newest weights file, {ckpts[-1].weights.name}"


def newest_run(out_dir: str | Path, profile: str | None = None) -> Path | None:
    """The run under out_dir (of `profile`, or of any profile) whose latest.json changed last."""
    pattern = f"{profile}-*" if profile else "*"
    runs = [p for p in Path(out_dir).glob(pattern) if (p / CKPT_DIR / LATEST).is_file()]
    return max(runs, key=lambda p: (p / CKPT_DIR / LATEST).stat().st_mtime, default=None)


# --------------------------------------------------------------------------- the trainer's presence


def write_pidfile(run_dir: Path) -> None:
    (Path(run_dir) / PIDFILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))


def remove_pidfile(run_dir: Path) -> None:
    try:
        (Path(run_dir) / PIDFILE).unlink()
    except FileNotFoundError:
        pass


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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def write_heartbeat(run_dir: Path, **fields: Any) -> None:
    """Replace heartbeat.json (no fsync: it is a liveness hint, rewritten many times a second at most)."""
    path = Path(run_dir) / HEARTBEAT
    tmp = path.with_name(f".{HEARTBEAT}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({**fields, "time": time.time()}))
        os.replace(tmp, path)
    except OSError:
        pass  # a missing heartbeat only makes the dashboard less lively; the run goes on


def read_heartbeat(run_dir: Path) -> dict[str, Any] | None:
    try:
        d = json.loads((Path(run_dir) / HEARTBEAT).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None
