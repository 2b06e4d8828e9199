"""The run directory's layout: every file name, the run and checkpoint naming, and where a new run may go.

    runs/<profile>-<UTC stamp>/
      config.toml  metrics.jsonl  tokenizer.json
      train.pid        {"pid", "host", "started"} of the trainer (informative)
      train.lock       held with flock() while a trainer runs (authoritative)
      heartbeat.json   {"step", "max_steps", "phase", "time"}: cheap liveness, written often
      stop             created to ask the trainer to stop
      train.log        stdout and stderr of a trainer the dashboard started detached
      batches.txt      an ablation arm's "<batch index> <sha256>" per batch drawn
      tensorboard/ wandb/   when the profile logs there too
      checkpoints/step-XXXXXXXX.safetensors / .state.safetensors, latest.json, best.json

Stdlib only. The writer (the trainer and its checkpointer) and every reader use these
names, so they cannot disagree on where a file lives (docs/architecture.md, "The run directory").
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path

from jepa_core.errors import JepaError

METRICS = "metrics.jsonl"
CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
PIDFILE = "train.pid"
LOCKFILE = "train.lock"
HEARTBEAT = "heartbeat.json"
STOPFILE = "stop"
CKPT_DIR = "checkpoints"
LATEST = "latest.json"  # in CKPT_DIR
BEST = "best.json"  # in CKPT_DIR
TENSORBOARD_DIR = "tensorboard"  # log.tensorboard
WANDB_DIR = "wandb"  # log.wandb (wandb.init makes it in the run directory)
LOG_FILE = "train.log"  # a detached trainer's stdout and stderr (the dashboard's launcher)
BATCH_LOG = "batches.txt"  # an ablation arm's batch digests, for the pairing check

#: Every name a run puts at the top of its directory (CKPT_DIR holds the rest). A folder that is
#: not a run but holds one of them is never trained into (`refuse_foreign_folder`).
RUN_NAMES = (CONFIG, METRICS, TOKENIZER, PIDFILE, LOCKFILE, HEARTBEAT, STOPFILE, CKPT_DIR, TENSORBOARD_DIR, WANDB_DIR, LOG_FILE)

WEIGHTS_RE = re.compile(r"^step-(\d{8})\.safetensors$")
STATE_RE = re.compile(r"^step-(\d{8})\.state\.safetensors$")

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


def refuse_foreign_folder(run_dir: str | Path, *, allow: tuple[str, ...] = ()) -> None:
    """Refuse a new run in an existing folder that is not a run but holds a file a run would write.

    `--run-dir` on an HF export folder would replace its `tokenizer.json`; on a project folder, its
    `config.toml` or `train.log`. A new or empty folder, or one whose files a run leaves alone, is
    fine. `allow`: names the caller itself has just written there (the dashboard's train.log).
    """
    p = Path(run_dir)
    if not p.is_dir():
        return
    taken = [n for n in RUN_NAMES if n not in allow and os.path.lexists(p / n)]
    if not taken:
        return
    names = ", ".join(taken)
    raise JepaError(
        f"The folder {_shown(p)} is not a run, but it holds {names}, which a run there would overwrite or remove; nothing was written.",
        hint=f"Give --run-dir a new or empty folder (e.g. {_shown(p / 'run')}), or drop --run-dir to start the run under train.out_dir.",
    )


def enclosing_run(path: str | Path) -> Path | None:
    """The run directory `path` lies inside (its nearest ancestor holding a run), else None.

    Stricter than `holds_run` on purpose: an ancestor counts only when it has what a
    trainer writes (metrics.jsonl, or config.toml with tokenizer.json), so a project folder
    that merely keeps a config.toml of its own does not refuse every run beneath it.
    """
    # abspath, not resolve: the error names the run as the user reaches it, not via symlink targets
    for parent in Path(os.path.abspath(path)).parents:
        if (parent / METRICS).is_file() or ((parent / CONFIG).is_file() and (parent / TOKENIZER).is_file()):
            return parent
    return None


def _shown(p: Path) -> str:
    """`p` relative to the working directory when below it (as the user likely typed it), else absolute."""
    try:
        return str(p.relative_to(Path.cwd().absolute())) or "."
    except ValueError:
        return str(p)


def refuse_nested_run(run_dir: str | Path, *, out_dir: str | None = None) -> None:
    """Refuse a new run inside an existing one (`--run-dir RUN/checkpoints`, `train.out_dir = RUN`).

    Nothing would be overwritten, but the new run's files would mix with the old run's
    (in its checkpoints folder, or among its files) where `jepa runs` does not look.
    `out_dir` is the train.out_dir the directory came from; None for an explicit --run-dir.
    """
    import shlex

    outer = enclosing_run(run_dir)
    if outer is None:
        return
    resume = f"jepa train --resume {shlex.quote(_shown(outer))}"
    further = "(with --set train.max_steps=N to train it past its last step)"
    if out_dir is not None:
        beside = _shown(outer.parent).replace("\\", "\\\\").replace('"', '\\"')
        fix = shlex.quote(f'train.out_dir="{beside}"')
        raise JepaError(
            f"train.out_dir = {out_dir!r} is inside the run {_shown(outer)}; a new run there would be nested in it.",
            hint=f"Start new runs beside it with --set {fix}, or continue that run with `{resume}` {further}.",
        )
    raise JepaError(
        f"The run directory {run_dir} is inside the run {_shown(outer)}; a new run there would be nested in it.",
        hint=f"Continue that run with `{resume}` {further}, or give --run-dir a directory outside it, e.g. {_shown(outer.parent / 'NEW-RUN')}.",
    )


# --------------------------------------------------------------------------- checkpoint names



def weights_name(step: int) -> str:
    return f"step-{step:08d}.safetensors"


def state_name(step: int) -> str:
    return f"step-{step:08d}.state.safetensors"


def weights_step(path: Path) -> int | None:
    """The step in a `step-XXXXXXXX.safetensors` name, else None."""
    m = WEIGHTS_RE.match(Path(path).name)
    return int(m.group(1)) if m else None
