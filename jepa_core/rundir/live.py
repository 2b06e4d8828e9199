"""Read a run directory while (or after) it trains: metrics, status, alerts.

The trainer appends one JSON object a line to `metrics.jsonl` and flushes each
line; readers (the dashboard, `inspect`, the ablate report) follow the file
without ever talking to the trainer. This module is the one reader they share:
standard library only, no UI imports, cheap to poll a few times a second.

The file is followed by `tail.MetricsTail` (its rules are there). Non-finite
numbers (`NaN`, `Infinity`, as Python's json module writes them) are kept in
the columns and raise a `nonfinite` alert.
"""

from __future__ import annotations

import math
import os
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import layout
from .lock import lock_held, pid_is_local_and_alive, read_heartbeat, read_pidfile
from .status import LIVE_STATES
from .tail import MetricsTail, RunUnreadable, TailRead, unreadable

__all__ = ["Alert", "MetricsTail", "RunLog", "RunSet", "RunStatus", "RunUnreadable", "Table", "TailRead", "finite_number",
           "step_number", "unreadable"]

# ---------------------------------------------------------------- columns


_NAN1 = (math.nan,)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: The largest step a reader believes: past it a "step" is a corrupt field, not a place in training.
MAX_STEP = 2**53


def finite_number(v: Any) -> float | None:
    """A metrics field as a finite float, or None: bools, strings, NaN, infinities and integers too
    large for a float (a 400-digit number) all count as missing."""
    if not _is_number(v):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def step_number(v: Any) -> int | None:
    """A `step`-like field as a whole number in [0, MAX_STEP], or None."""
    f = finite_number(v)
    if f is None or f < 0 or f > MAX_STEP or f != int(f):
        return None
    return int(f)



class Table:
    """Append-only numeric columns, one row per metrics line; missing values are NaN.

    Columns are `array('d')` so that a plotting layer can copy them into numpy
    in one memcpy, without this module importing numpy.
    """

    def __init__(self) -> None:
        self.columns: dict[str, array] = {}
        self.n = 0

    def append(self, rec: Mapping[str, Any]) -> list[str]:
        """Add a row; return the keys whose value is NaN or infinite."""
        bad: list[str] = []
        cols = self.columns
        n = self.n
        seen = 0
        isfinite = math.isfinite
        for k, v in rec.items():
            tv = type(v)
            if tv is not float and tv is not int:  # bool is its own type: excluded
                if not _is_number(v):
                    continue
            try:
                fv = float(v)
            except OverflowError:  # an integer past float range (a 400-digit number): missing
                continue
            col = cols.get(k)
            if col is None:
                col = cols[k] = array("d", _NAN1) * n
            if not isfinite(fv):
                bad.append(k)
            col.append(fv)
            seen += 1
        self.n = n + 1
        if seen != len(cols):
            for col in cols.values():
                if len(col) <= n:
                    col.append(math.nan)
        return bad

    def column(self, key: str) -> array | None:
        return self.columns.get(key)

    def has(self, key: str) -> bool:
        """True when the column exists and holds at least one finite value."""
        col = self.columns.get(key)
        return col is not None and any(math.isfinite(v) for v in col)

    def last(self, key: str) -> float | None:
        """The most recent finite value of a column."""
        col = self.columns.get(key)
        if col is None:
            return None
        for v in reversed(col):
            if math.isfinite(v):
                return v
        return None

    def last_row(self) -> dict[str, float]:
        if not self.n:
            return {}
        return {k: c[self.n - 1] for k, c in self.columns.items()}

    def truncate(self, n: int) -> None:
        if n >= self.n:
            return
        for col in self.columns.values():
            del col[n:]
        self.n = n

    def drop_after_step(self, step: float) -> None:
        """Forget rows past `step` (a resumed run replays them from a checkpoint)."""
        steps = self.columns.get("step")
        if steps is None:
            return
        n = self.n
        while n and steps[n - 1] > step:
            n -= 1
        self.truncate(n)


# ---------------------------------------------------------------- alerts and status


@dataclass
class Alert:
    """One kind of problem, aggregated: a collapse alert repeated 50 times is one Alert."""

    kind: str  # "collapse", "diverged", "nonfinite", or any kind the trainer sends
    key: str  # what it is about: the metric for nonfinite, else the kind
    message: str
    first_step: int
    last_step: int
    count: int = 1


@dataclass
class RunStatus:
    state: str  # waiting, running, stopping, stale, or one of END_STATES
    detail: str = ""

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES




def _fmt_age(s: float) -> str:
    s = int(s)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _num(v: Any) -> float | None:
    """A number field as a float (NaN and infinities kept); None for non-numbers and integers past float range."""
    if not _is_number(v):
        return None
    try:
        return float(v)
    except OverflowError:
        return None


def _without_huge_ints(rec: dict[str, Any]) -> dict[str, Any]:
    """`rec` with top-level integers past float range (a 400-digit number) as None, so that no
    reader doing arithmetic or float formatting on an event's fields can overflow."""
    if not any(type(v) is int and v.bit_length() >= 1024 for v in rec.values()):
        return rec
    return {k: (None if type(v) is int and v.bit_length() >= 1024 and finite_number(v) is None else v) for k, v in rec.items()}


class RunLog:
    """Everything a reader knows about one run directory, updated by `poll()`."""

    def __init__(self, run_dir: Path, *, stale_after: float = 60.0, clock: Callable[[], float] = time.time):
        self.run_dir = Path(run_dir)
        self.stale_after = stale_after
        self.clock = clock
        self.tail = MetricsTail(self.run_dir / layout.METRICS)
        self.version = 0  # bumped whenever the data changes; caches key on it
        self.resets = 0  # times the file was truncated or replaced and reading started over
        self._hb: dict[str, Any] | None = None
        self._hb_read_at = -math.inf
        self.unreadable: RunUnreadable | None = None  # why the last poll could not read metrics.jsonl
        self._reset_state()

    def _reset_state(self) -> None:
        self.train = Table()
        self.evals = Table()
        self.events: list[dict[str, Any]] = []
        self.alerts: dict[tuple[str, str], Alert] = {}
        self.start: dict[str, Any] = {}
        self.end: dict[str, Any] | None = None
        self.bad_lines = 0
        self.last_record_time: float | None = None
        self._toml_config: dict[str, Any] | None = None

    # ---- ingest

    def poll(self, budget_s: float | None = None, chunk_bytes: int = 1 << 20) -> bool:
        """Read what was appended since the last call; True when anything changed. A metrics.jsonl that
        cannot be read sets `unreadable` (cleared once it reads again) instead of raising.

        With `budget_s`, stop after about that many seconds even if more is
        waiting (`behind` then says so): attaching to a long run fills in over a
        few polls instead of freezing the caller.
        """
        t_end = None if budget_s is None else time.monotonic() + budget_s
        changed = False
        while True:
            try:
                r = self.tail.read(chunk_bytes if t_end is not None else None)
            except RunUnreadable as e:  # kept, not raised: a dashboard polling many runs decides what to do
                changed |= self.unreadable is None or self.unreadable.message != e.message
                self.unreadable = e
                break
            changed |= self.unreadable is not None
            self.unreadable = None
            if r.reset:
                self._reset_state()
                self.resets += 1
            for rec in r.records:
                self._ingest(rec)
            self.bad_lines += r.bad_lines
            changed |= r.reset or bool(r.records) or bool(r.bad_lines)
            if t_end is None or not self.tail.pending or time.monotonic() > t_end:
                break
        if changed:
            self.version += 1
        return changed

    @property
    def behind(self) -> bool:
        """True when the last poll stopped before the end of the file."""
        return self.tail.pending > 0

    def _alert(self, kind: str, key: str, message: str, step: int) -> None:
        a = self.alerts.get((kind, key))
        if a is None:
            self.alerts[(kind, key)] = Alert(kind, key, message, step, step)
        else:
            a.count += 1
            a.last_step = step
            a.message = message

    def _ingest(self, rec: dict[str, Any]) -> None:
        typ = rec.get("type")
        step = rec.get("step")
        step_i = step_number(step) or 0  # NaN, a string or a 400-digit number: not a step
        t = _num(rec.get("time"))
        if t is not None and math.isfinite(t):
            self.last_record_time = t
        if typ in ("train", "eval"):
            table = self.train if typ == "train" else self.evals
            for key in table.append(rec):
                if key in ("time", "step"):
                    continue
                v = rec[key]
                self._alert("nonfinite", key, f"non-finite {key} ({v}) at step {step_i}", step_i)
        elif typ == "event":
            rec = _without_huge_ints(rec)
            self.events.append(rec)
            ev = rec.get("event")
            if ev == "run_start":
                self.start = rec
                self.end = None
            elif ev == "run_end":
                self.end = rec
                if rec.get("status") == "diverged":
                    self._alert("diverged", "diverged", str(rec.get("message") or "training diverged"), step_i)
            elif ev == "alert":
                kind = str(rec.get("kind") or "alert")
                self._alert(kind, kind, str(rec.get("message") or kind), step_i)
            elif ev == "resume":
                frm = _num(rec.get("from_step"))
                if frm is not None:
                    self.train.drop_after_step(frm)
                    self.evals.drop_after_step(frm)
                self.end = None
        # unknown types are accepted and ignored

    # ---- identity

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config: from run_start, else from config.toml (read once)."""
        cfg = self.start.get("config")
        if isinstance(cfg, dict):
            return cfg
        if self._toml_config is None:
            try:
                import tomllib

                self._toml_config = tomllib.loads((self.run_dir / layout.CONFIG).read_text())
            except (OSError, ValueError):
                self._toml_config = {}
        return self._toml_config

    @property
    def name(self) -> str:
        return str(self.start.get("run_name") or self.run_dir.name)

    @property
    def profile(self) -> str:
        return str(self.start.get("profile") or self.config.get("name") or "?")

    @property
    def device(self) -> str:
        dev = self.start.get("device") or (self.config.get("train") or {}).get("device") or "?"
        prec = self.start.get("precision")
        text = f"{dev} {prec}" if prec else str(dev)
        return f"{text} · {self.parallel}" if self.parallel else text

    @property
    def parallel(self) -> str | None:
        """"fsdp x2" / "ddp x2" for a torchrun run (its mode and world size), None for one process."""
        world = self.start.get("world_size")
        if not isinstance(world, int) or isinstance(world, bool) or world <= 1:
            return None
        # runs from before train.parallel existed were DDP
        mode = self.start.get("parallel") if self.start.get("parallel") in ("ddp", "fsdp") else "ddp"
        return f"{mode} x{world}"

    @property
    def max_steps(self) -> int | None:
        # NaN, a string or a 400-digit number is no step count: fall back, else unknown
        v = step_number(self.start.get("max_steps"))
        if v is None:
            v = step_number((self.config.get("train") or {}).get("max_steps"))
        return v

    @property
    def is_baseline(self) -> bool:
        return bool((self.config.get("jepa") or {}).get("run_baseline", False))

    # ---- progress

    @property
    def step(self) -> int:
        s = max(self.train.last("step") or 0, self.evals.last("step") or 0)
        return int(s)

    @property
    def tokens(self) -> float | None:
        return self.train.last("tokens")

    @property
    def tok_per_s(self) -> float | None:
        return self.train.last("tok_per_s")

    def elapsed(self) -> float | None:
        """Seconds of training: the last line's `elapsed`, plus the time since while running."""
        e = max(self.train.last("elapsed") or -1.0, self.evals.last("elapsed") or -1.0)
        if e < 0:
            return None
        if self.end is None and self.last_record_time is not None and self.status().state in ("running", "stopping"):
            e += max(0.0, self.clock() - self.last_record_time)
        return e

    def steps_per_second(self, window: int = 20) -> float | None:
        """Recent training speed from the last `window` train lines."""
        steps, el = self.train.column("step"), self.train.column("elapsed")
        if steps is None or el is None or self.train.n < 2:
            return None
        i0 = max(0, self.train.n - window)
        ds = steps[-1] - steps[i0]
        dt = el[-1] - el[i0]
        if not (math.isfinite(ds) and math.isfinite(dt)) or ds <= 0 or dt <= 0:
            return None
        return ds / dt

    def eta(self) -> float | None:
        """Seconds to max_steps at the recent speed; None when unknown or not running."""
        if self.end is not None or self.max_steps is None:
            return None
        rate = self.steps_per_second()
        if rate is None:
            return None
        return max(0.0, (self.max_steps - self.step) / rate)

    def _typical_gap(self) -> float:
        times = self.train.column("time")
        if times is None or self.train.n < 3:
            return 0.0
        last = times[-21:]
        recent = [b - a for a, b in zip(last[:-1], last[1:]) if math.isfinite(a) and math.isfinite(b)]
        if not recent:
            return 0.0
        return sorted(recent)[len(recent) // 2]

    def heartbeat(self) -> dict[str, Any] | None:
        """The trainer's heartbeat.json ({"step", "max_steps", "phase", "time"}), re-read at most every 0.2 s."""
        now = time.monotonic()
        if now - self._hb_read_at >= 0.2:
            hb = read_heartbeat(self.run_dir)
            if hb is not None:  # its numbers as the metrics' are: malformed means missing
                hb = {**hb, "step": step_number(hb.get("step")), "max_steps": step_number(hb.get("max_steps")),
                      "time": finite_number(hb.get("time"))}
            self._hb = hb
            self._hb_read_at = now
        return self._hb

    def status(self) -> RunStatus:
        """running, stopping, stale (quiet for a while or trainer gone), waiting, or how it ended."""
        if self.end is not None:
            st = str(self.end.get("status") or "finished")
            return RunStatus(st, str(self.end.get("message") or ""))
        if self.tail.mtime is None:
            return RunStatus("waiting", "no metrics.jsonl yet")
        pid = read_pidfile(self.run_dir)
        pid_alive = pid_is_local_and_alive(pid)
        hb = self.heartbeat()
        hb_time = _num(hb.get("time")) if hb else None
        # the heartbeat moves between log lines, so it is the fresher sign of life
        quiet = self.clock() - max(self.tail.mtime, hb_time if hb_time is not None and math.isfinite(hb_time) else -math.inf)
        # A step can legitimately be slow (eval, checkpoint): wait 5 typical gaps, at least stale_after.
        limit = max(self.stale_after, 5 * self._typical_gap())
        if pid_alive is False:
            return RunStatus("stale", "trainer process exited without run_end")
        # no trainer holds the lock (killed by a full disk after removing its pid file, say): stale now, not
        # after a minute's quiet. Not for a trainer on another host, whose flock this host may not see
        if (pid is None or pid_alive is True) and (self.events or self.train.n or self.evals.n):
            if lock_held(self.run_dir) is False:
                return RunStatus("stale", "no trainer holds the run's lock, and it has no run_end")
        # torch.compile's first step is one long call without heartbeats: a live trainer compiling is not stale
        compiling = bool(hb) and hb.get("phase") in ("compiling", "starting") and pid_alive is True
        if quiet > limit and not compiling:
            return RunStatus("stale", f"no new metrics for {_fmt_age(quiet)}")
        if (self.run_dir / layout.STOPFILE).exists():
            return RunStatus("stopping", "stop requested")
        if not self.events and not self.train.n and not self.evals.n:
            return RunStatus("waiting", "no metrics yet")
        return RunStatus("running")

    # ---- latest numbers

    def latest_eval(self) -> dict[str, float]:
        """The last eval line's numeric values (empty before the first eval)."""
        return self.evals.last_row()

    def horizons(self) -> list[int]:
        """Horizons with retrieval numbers in the eval lines, ascending."""
        hs = set()
        for k in self.evals.columns:
            if k.startswith("retrieval_top1_h") and k[len("retrieval_top1_h") :].isdigit():
                hs.add(int(k[len("retrieval_top1_h") :]))
        return sorted(hs)

    def alert_list(self) -> list[Alert]:
        return sorted(self.alerts.values(), key=lambda a: (a.first_step, a.kind))


@dataclass
class RunSet:
    """Several runs watched together; `poll()` returns the runs that changed."""

    runs: list[RunLog] = field(default_factory=list)

    @classmethod
    def open(cls, run_dirs: Iterable[Path], **kw: Any) -> RunSet:
        return cls([RunLog(d, **kw) for d in run_dirs])

    def poll(self, budget_s: float | None = None) -> list[RunLog]:
        """Poll every run (sharing the time budget, if any); the runs that changed."""
        each = None if budget_s is None else budget_s / max(1, len(self.runs))
        return [r for r in self.runs if r.poll(each)]

    @property
    def behind(self) -> bool:
        return any(r.behind for r in self.runs)

    def labels(self) -> list[str]:
        """Short unique labels: run names, or paths relative to the common parent when names clash."""
        names = [r.name for r in self.runs]
        if len(set(names)) == len(names):
            return names
        try:
            common = Path(os.path.commonpath([str(r.run_dir.resolve()) for r in self.runs]))
            return [str(r.run_dir.resolve().relative_to(common)) or r.name for r in self.runs]
        except ValueError:
            return [str(r.run_dir) for r in self.runs]
