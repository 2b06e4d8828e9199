"""Run directories: naming, discovery, and the files in them (DESIGN section 5)."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from jepa_core.errors import CheckpointError

METRICS = "metrics.jsonl"
CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
PIDFILE = "train.pid"
STOPFILE = "stop"
CKPT_DIR = "checkpoints"
LATEST = "latest.json"


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def new_run_dir(out_dir: str | Path, profile: str) -> Path:
    """runs/<profile>-<UTC timestamp>, with a numeric suffix when that exists already."""
    base = Path(out_dir) / f"{profile}-{utc_stamp()}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


@dataclass(frozen=True)
class CheckpointRef:
    run_dir: Path
    step: int
    weights: Path
    state: Path


def read_latest(run_dir: Path) -> CheckpointRef | None:
    """The checkpoint named by checkpoints/latest.json, or None when there is none."""
    latest = Path(run_dir) / CKPT_DIR / LATEST
    if not latest.is_file():
        return None
    try:
        d = json.loads(latest.read_text())
        ref = CheckpointRef(
            run_dir=Path(run_dir),
            step=int(d["step"]),
            weights=latest.parent / d["weights"],
            state=latest.parent / d["state"],
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{latest} is unreadable ({e}).") from None
    return ref


def find_resume_point(target: str, out_dir: str | Path, profile: str) -> CheckpointRef:
    """Resolve `--resume auto|PATH` to a checkpoint.

    `auto`: the newest run directory of this profile under out_dir that has a
    checkpoint. PATH: a run directory, or a weights file inside one.
    """
    if target == "auto":
        candidates = sorted(
            (p for p in Path(out_dir).glob(f"{profile}-*") if (p / CKPT_DIR / LATEST).is_file()),
            key=lambda p: (p / CKPT_DIR / LATEST).stat().st_mtime,
            reverse=True,
        )
        if not candidates:
            raise CheckpointError(
                f"--resume auto found no run of profile `{profile}` with a checkpoint under {out_dir}/.",
                hint="Start a new run without --resume, or pass a run directory: --resume runs/<run>.",
            )
        ref = read_latest(candidates[0])
        assert ref is not None
        return ref
    path = Path(target)
    if path.is_dir():
        run_dir = path.parent if path.name == CKPT_DIR else path
        ref = read_latest(run_dir)
        if ref is None:
            raise CheckpointError(f"{run_dir} has no checkpoints/{LATEST}: nothing to resume.")
        return ref
    if path.is_file() and path.name.endswith(".safetensors") and not path.name.endswith(".state.safetensors"):
        state = path.with_name(path.name.replace(".safetensors", ".state.safetensors"))
        step = int(path.stem.split("-")[-1]) if path.stem.startswith("step-") else -1
        return CheckpointRef(run_dir=path.parent.parent, step=step, weights=path, state=state)
    raise CheckpointError(
        f"Cannot resume from {target}: not a run directory or a step-*.safetensors weights file.",
        hint="Use --resume auto, --resume runs/<run>, or --resume runs/<run>/checkpoints/step-XXXXXXXX.safetensors.",
    )


def write_pidfile(run_dir: Path) -> None:
    (Path(run_dir) / PIDFILE).write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    )


def remove_pidfile(run_dir: Path) -> None:
    try:
        (Path(run_dir) / PIDFILE).unlink()
    except FileNotFoundError:
        pass
