"""The runs in a folder, one summary each (`jepa runs`), the newest one (`jepa watch`
without an argument), and short labels from what differs between runs (the dashboard).

Reads run directories only (metrics.jsonl, config.toml, train.pid, heartbeat.json),
through `RunLog`; standard library only, except `overrides_vs_profile`, which loads
the profile (pydantic) to reconstruct the `--set` values of a run that did not record them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jepa_core.errors import CheckpointError, JepaError

from . import layout
from .layout import holds_run
from .live import RunLog, RunUnreadable

#: Config keys never worth a label or an override column: names, where runs go, and sinks.
_IGNORED_KEYS = frozenset({"name", "description", "train.out_dir", "log.tensorboard", "log.wandb", "log.wandb_project"})


# --------------------------------------------------------------------------- finding runs


#: How deep below a folder runs are looked for: runs/<run>, runs/<ablation>/<arm-seed>, one more level.
MAX_DEPTH = 3


def find_run_dirs(folder: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Run directories in `folder` (`holds_run`): the folder itself when it is one, else its
    children, and theirs when a child is not a run (an ablation), down to `max_depth` levels."""
    folder = Path(folder)
    out: list[Path] = []

    def walk(p: Path, depth: int) -> None:
        try:
            children = sorted(c for c in p.iterdir() if c.is_dir())
        except OSError:
            return
        for c in children:
            if holds_run(c):
                out.append(c)
            elif depth < max_depth:
                walk(c, depth + 1)

    if holds_run(folder):
        return [folder]
    walk(folder, 1)
    return out


def discover_runs(paths: Iterable[Path]) -> list[Path]:
    """Run directories named by `paths` (`jepa watch`): each a run dir (or its metrics.jsonl), or a
    folder of them (an ablation), in order and without repeats. CheckpointError for a path that is neither."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.name == layout.METRICS:
            p = p.parent
        if not p.exists():
            raise CheckpointError(
                f"{p} does not exist.",
                hint="Pass a run directory (runs/<profile>-<time>) or a folder of run directories; `ls runs/` lists them.",
            )
        found = find_run_dirs(p) if p.is_dir() else []
        if not found:
            raise CheckpointError(
                f"{p} is not a run directory: it has no {layout.METRICS} or config.toml, and no sub-folder holds a run.",
                hint="Pass a directory written by `jepa train` (runs/<profile>-<time>) or an ablation folder that contains them.",
            )
        seen = {o.resolve() for o in out}
        out += [f for f in found if f.resolve() not in seen]
    return out


def last_activity(run_dir: Path) -> float:
    """When the run last wrote anything the readers look at (metrics, heartbeat, config)."""
    best = -math.inf
    for name in (layout.METRICS, layout.HEARTBEAT, layout.CONFIG):
        try:
            best = max(best, (Path(run_dir) / name).stat().st_mtime)
        except OSError:
            pass
    if best == -math.inf:
        try:
            best = Path(run_dir).stat().st_mtime
        except OSError:
            best = 0.0
    return best


def newest_run_dir(folder: Path) -> Path | None:
    """The run under `folder` (ablation runs included) that wrote last; None when there is none.

    Unlike `checkpoints.newest_run` (what `--resume auto` continues), a run needs no
    checkpoint to count: `jepa watch` wants the run that is training now.
    """
    runs = find_run_dirs(Path(folder))
    return max(runs, key=last_activity, default=None)


# --------------------------------------------------------------------------- config differences


def flatten_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """{"optim": {"lr": 1e-3}} -> {"optim.lr": 1e-3}; top-level scalars keep their name."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, Mapping):
            for kk, vv in v.items():
                out[f"{k}.{kk}"] = vv
        else:
            out[k] = v
    return out


def fmt_value(v: Any) -> str:
    """A config value as one writes it after --set (TOML-ish, compact)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(fmt_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v) if (not v or any(c in v for c in " ,=[]\"'") or v.strip() != v) else v
    return str(v)


def overrides_vs_profile(config: Mapping[str, Any], profile: str) -> list[str] | None:
    """`key=value` for every key where a run's config differs from its profile as it is now.

    That is what the run was started with `--set` (or the profile was edited since).
    None when the profile cannot be loaded (renamed, or a path that is gone).
    """
    from jepa_core.config import load_config

    try:
        base = flatten_config(load_config(profile).to_dict())
    except JepaError:
        return None
    run = flatten_config(config)
    return [f"{k}={fmt_value(v)}" for k, v in run.items() if k not in _IGNORED_KEYS and k in base and base[k] != v]


def recorded_overrides(events: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """The `--set` values a run was started (and resumed) with, as its run_start events recorded them.

    A resume's `--set` of a key replaces the start's. None when some segment did not record
    them (a run from before they were recorded, or one started through the library without
    them): then only a comparison with the profile can tell.
    """
    starts = [e for e in events if e.get("event") == "run_start"]
    if not starts:
        return None
    merged: dict[str, str] = {}
    for start in starts:
        given = start.get("overrides")
        if not isinstance(given, list) or not all(isinstance(o, str) for o in given):
            return None
        for item in given:
            key, _, value = item.partition("=")
            merged.pop(key.strip(), None)  # a resume's value is shown where it was given, after the start's
            merged[key.strip()] = f"{key.strip()}={value.strip()}"
    return list(merged.values())


def distinct_labels(names: Sequence[str], profiles: Sequence[str], configs: Sequence[Mapping[str, Any]], max_len: int = 32) -> list[str]:
    """Labels for overlaid runs made of what differs between them: profile, config values, seed.

    `jepa watch a b` of two runs that differ in optim.lr and the seed gives
    `lr=0.001 seed=1` and `lr=0.003 seed=2`, not two truncated timestamps. Runs
    whose configs are identical (or unknown) keep their names; names are made
    unique by their index when all else fails.
    """
    n = len(names)
    if n <= 1:
        return list(names)
    flat = [flatten_config(c) if c else {} for c in configs]
    parts: list[list[str]] = [[] for _ in range(n)]
    if len(set(profiles)) > 1:
        for i, p in enumerate(profiles):
            parts[i].append(p)
    if all(flat):
        keys: list[str] = []
        for f in flat:
            keys += [k for k in f if k not in keys]
        differing = [k for k in keys if k not in _IGNORED_KEYS and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]
        # the seed reads best last; run_baseline reads as a word
        differing.sort(key=lambda k: (k == "train.seed", keys.index(k)))
        short = [k.split(".")[-1] for k in differing]
        for key, s in zip(differing, short):
            name = key if short.count(s) > 1 else s
            for i, f in enumerate(flat):
                v = f.get(key)
                if key == "jepa.run_baseline":
                    parts[i].append("baseline" if v else "jepa")
                elif v is not None:
                    parts[i].append(f"{name}={fmt_value(v)}")
    labels = [" ".join(p) for p in parts]
    if not all(labels) or len(set(labels)) < n:
        return _unique(list(names))
    return [lb if len(lb) <= max_len else lb[: max_len - 1] + "…" for lb in labels]


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for nm in names:
        seen[nm] = seen.get(nm, 0) + 1
        out.append(nm if seen[nm] == 1 else f"{nm}#{seen[nm]}")
    return out


def run_labels(runs: Sequence[RunLog]) -> list[str]:
    """`distinct_labels` of RunLogs (after at least one poll, so that run_start is known)."""
    return distinct_labels([r.name for r in runs], [r.profile for r in runs], [r.config for r in runs])


# --------------------------------------------------------------------------- `jepa runs`


@dataclass
class RunInfo:
    """One line of `jepa runs`."""

    path: str
    name: str
    profile: str
    status: str  # running, stopping, waiting, stale, or how it ended (finished, interrupted, diverged, ...)
    detail: str
    step: int
    max_steps: int | None
    val_bpb: float | None  # of the last eval
    best_val_bpb: float | None  # the trainer's, when it logs one; else the lowest eval so far
    tok_per_s: float | None
    started: float | None  # unix time of the first run_start (else the directory's mtime)
    updated: float  # unix time of the last write
    seed: int | None
    device: str
    overrides: list[str] | None = field(default_factory=list)  # None: the profile is gone, differences unknown
    epoch: float | None = None
    init_from: str | None = None  # "from SRC (step N)": the weights it started from (train.init_from)
    parallel: str | None = None  # "fsdp x2" / "ddp x2" under torchrun; None for one process

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def init_from_label(record: Any) -> str | None:
    """`from runs/x (step 200)`: the weights a run started from, as run_start and the checkpoints
    record them (`init_from`); None for a run from random weights."""
    if not isinstance(record, Mapping) or not isinstance(record.get("source"), str):
        return None
    step = record.get("step")
    return f"from {record['source']}" + (f" (step {step})" if isinstance(step, int) and not isinstance(step, bool) else "")


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def run_info(run_dir: Path, *, with_overrides: bool = True, stale_after: float = 60.0) -> RunInfo:
    """One run's line; RunUnreadable when its metrics.jsonl cannot be read."""
    run = RunLog(Path(run_dir), stale_after=stale_after)
    run.poll()
    if run.unreadable is not None:
        raise run.unreadable
    st = run.status()
    first_start = next((e for e in run.events if e.get("event") == "run_start"), None)
    started = _finite(first_start.get("time")) if first_start else None
    if started is None:
        try:
            started = Path(run_dir).stat().st_mtime
        except OSError:
            started = None
    ev = run.latest_eval()
    bpb_col = run.evals.column("val_bpb")
    lowest = min((v for v in bpb_col if math.isfinite(v)), default=None) if bpb_col is not None else None
    # the trainer's own best (by val loss), where it says it: run_end, or the overfitting alert
    logged_best = None
    for source in (run.end or {}, *reversed(run.events)):
        logged_best = _finite(source.get("best_val_bpb"))
        if logged_best is not None:
            break
    cfg = run.config
    seed = (cfg.get("train") or {}).get("seed") if isinstance(cfg.get("train"), Mapping) else None
    hb = run.heartbeat() or {}
    step = run.step
    end_step = (run.end or {}).get("step")
    if isinstance(end_step, int) and not isinstance(end_step, bool) and end_step > step:
        step = end_step  # stopped between log lines: run_end says where
    if st.state in ("running", "stopping") and isinstance(hb.get("step"), int):
        step = max(step, hb["step"])
    overrides: list[str] | None = []
    if with_overrides:
        recorded = recorded_overrides(run.events)
        if recorded is not None:
            overrides = recorded
        elif cfg:
            overrides = overrides_vs_profile(cfg, run.profile) if run.profile != "?" else None
    epoch = None
    for source in (ev, run.train.last_row()):
        epoch = _finite(source.get("epoch"))
        if epoch is not None:
            break
    return RunInfo(
        path=str(run_dir),
        name=run.name,
        profile=run.profile,
        status=st.state,
        detail=st.detail,
        step=step,
        max_steps=run.max_steps,
        val_bpb=_finite(ev.get("val_bpb")),
        best_val_bpb=logged_best if logged_best is not None else lowest,
        tok_per_s=run.tok_per_s,
        started=started,
        updated=last_activity(Path(run_dir)),
        seed=seed if isinstance(seed, int) else None,
        device=run.device,
        overrides=overrides,
        epoch=epoch,
        init_from=init_from_label(first_start.get("init_from")) if first_start else None,
        parallel=run.parallel,
    )


def list_runs(folder: Path, *, with_overrides: bool = True, skipped: list[RunUnreadable] | None = None) -> list[RunInfo]:
    """Every run under `folder`, oldest first (the newest ends next to the prompt).

    A run whose metrics.jsonl cannot be read is left out, so that one such run does not hide the
    others; its RunUnreadable is appended to `skipped` when given.
    """
    infos = []
    for d in find_run_dirs(Path(folder)):
        try:
            infos.append(run_info(d, with_overrides=with_overrides))
        except RunUnreadable as e:
            if skipped is not None:
                skipped.append(e)
    base = Path(folder)
    for info in infos:
        try:
            rel = str(Path(info.path).relative_to(base))
        except ValueError:
            rel = info.path
        if rel not in (".", ""):
            info.name = rel
    infos.sort(key=lambda r: (r.started if r.started is not None else r.updated, r.name))
    return infos


def fmt_age(seconds: float) -> str:
    """12s, 5m, 3h, 2d: how long ago, at a glance."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400 * 2:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s < 36000 else f"{s // 3600}h"
    return f"{s // 86400}d"


def age_of(info: RunInfo, now: float | None = None) -> float:
    now = time.time() if now is None else now
    return max(0.0, now - (info.started if info.started is not None else info.updated))


__all__ = [
    "RunInfo",
    "age_of",
    "distinct_labels",
    "discover_runs",
    "find_run_dirs",
    "flatten_config",
    "fmt_age",
    "fmt_value",
    "init_from_label",
    "last_activity",
    "list_runs",
    "newest_run_dir",
    "overrides_vs_profile",
    "recorded_overrides",
    "run_info",
    "run_labels",
]

