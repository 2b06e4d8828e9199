"""What a run amounts to, read from its metrics.jsonl alone: `RunSummary` (the ablate report and
`jepa runs` read runs through it). Standard library only; never raises on a file's content."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import METRICS
from .live import MetricsTail, finite_number, step_number

def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete record of a run's metrics.jsonl (none when the file is missing); a half-written
    last line and lines that are not JSON objects are left out."""
    return MetricsTail(Path(run_dir) / METRICS).read().records


@dataclass
class RunSummary:
    """What a finished (or stopped) run amounts to, read from its metrics.jsonl alone.

    A resumed run is several segments (run_start ... run_end); the evals and train
    lines a segment logged past the step the next one resumed from are replayed
    work, so they are dropped from `curve`, `final_eval` and `train_time_to_step`.
    `tokens` and `train_time` keep the replayed work: it was paid for, and
    throughput is tokens per second of step time.
    """

    status: str  # "pending" (no records), "incomplete" (last segment has no run_end: killed), or run_end's status
    step: int  # the step the run got to
    message: str = ""
    segments: int = 0
    final_eval: dict[str, float] = field(default_factory=dict)  # finite numeric fields of the last eval
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, val_bpb) of every kept eval
    tokens: int = 0
    train_time: float = 0.0  # seconds of step time, all segments
    train_time_to_step: float | None = None  # step time up to `step`, replayed steps not counted
    wall_s: float = 0.0
    max_steps: int | None = None  # as the last segment planned it
    config: dict[str, Any] = field(default_factory=dict)  # from the last run_start
    bad_fields: int = 0  # train/eval lines skipped because their step was unusable
    # distinct values over the segments, in order: a resume on other code adds one
    init_digests: list[str] = field(default_factory=list)  # the shared LM weights at initialisation
    code: list[dict[str, str | None]] = field(default_factory=list)  # {"version", "commit"} of the code

    @property
    def tok_per_s(self) -> float | None:
        return self.tokens / self.train_time if self.train_time > 0 else None

    @property
    def final_eval_step(self) -> int | None:
        return step_number(self.final_eval.get("step"))


def _code_field(v: Any) -> dict[str, str | None] | None:
    if not isinstance(v, dict) or not isinstance(v.get("version"), str):
        return None
    commit = v.get("commit")
    return {"version": v["version"], "commit": commit if isinstance(commit, str) else None}


def _add_start_identity(out: RunSummary, start: dict[str, Any]) -> None:
    """Record a run_start's init digest and code version (runs before they were logged have neither)."""
    dig = start.get("init_digest")
    if isinstance(dig, str) and dig not in out.init_digests:
        out.init_digests.append(dig)
    code = _code_field(start.get("code"))
    if code is not None and code not in out.code:
        out.code.append(code)


def summarize_run(run_dir: Path, records: list[dict[str, Any]] | None = None) -> RunSummary:
    """The RunSummary of a run directory (or of `records`, as `read_records` returns them).

    Never raises on the file's content: unusable fields count as missing.
    """
    recs = read_records(run_dir) if records is None else records
    if not recs:
        return RunSummary("pending", 0)
    out = RunSummary("incomplete", 0)
    evals: list[tuple[int, dict[str, Any]]] = []
    times: list[tuple[int, float]] = []  # (step, step time since step 0), replayed points dropped
    base_time = 0.0  # step time before the current segment's resume point
    seg: dict[str, Any] = {}  # the current segment: start tokens, last tokens / train_time seen

    def close_segment() -> None:
        if seg:
            out.tokens += max(0, seg.get("tokens", 0) - seg.get("start_tokens", 0))
            out.train_time += seg.get("train_time", 0.0)
            out.wall_s += seg.get("wall_s", 0.0)
            seg.clear()

    def rewind(to: int) -> None:
        nonlocal base_time
        evals[:] = [e for e in evals if e[0] <= to]
        times[:] = [t for t in times if t[0] <= to]
        base_time = times[-1][1] if times else 0.0
        out.step = to

    for r in recs:
        kind = r.get("type")
        step = step_number(r.get("step"))
        if kind in ("train", "eval") and step is None:
            out.bad_fields += 1
            continue
        if kind == "eval":
            evals.append((step, r))
            out.step = step
        elif kind == "train":
            out.step = step
            t = finite_number(r.get("train_time"))
            if t is not None:
                times.append((step, base_time + t))
                seg["train_time"] = t
            tok = step_number(r.get("tokens"))
            if tok is not None:
                seg["tokens"] = tok
        elif kind == "event":
            ev = r.get("event")
            if ev == "run_start":
                close_segment()
                out.segments += 1
                out.status, out.message = "incomplete", ""
                start = step_number(r.get("start_step")) or 0
                per_step = step_number(r.get("tokens_per_step")) or 0
                seg["start_tokens"] = seg["tokens"] = start * per_step
                out.max_steps = step_number(r.get("max_steps"))
                cfg = r.get("config")
                out.config = cfg if isinstance(cfg, dict) else {}
                _add_start_identity(out, r)
                if start:
                    rewind(start)
            elif ev == "resume":
                frm = step_number(r.get("from_step"))
                if frm is not None:
                    rewind(frm)
            elif ev == "run_end":
                out.status = str(r.get("status") or "failed")
                out.message = str(r.get("message") or "")
                if step is not None:
                    out.step = step
                tok = step_number(r.get("tokens"))
                if tok is not None:
                    seg["tokens"] = tok
                t = finite_number(r.get("train_time"))
                if t is not None:
                    seg["train_time"] = t
                    times.append((out.step, base_time + t))
                w = finite_number(r.get("wall_s"))
                if w is not None:
                    seg["wall_s"] = w
                close_segment()
    close_segment()
    out.curve = []
    for s, e in evals:
        bpb = finite_number(e.get("val_bpb"))
        if bpb is not None:
            out.curve.append((s, bpb))
    if evals:
        out.final_eval = {k: f for k, v in evals[-1][1].items() if (f := finite_number(v)) is not None}
    out.train_time_to_step = times[-1][1] if times else None
    return out
