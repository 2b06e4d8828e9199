"""Text of the dashboard's header, alert strip, eval panel and log lines (pure functions)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence

from rich.style import Style
from rich.table import Table as RichTable
from rich.text import Text

from jepa_core.rundir.status import badge_style

from .plot import fmt_duration, fmt_num

if TYPE_CHECKING:
    from jepa_core.rundir.live import RunLog


def start_phase(run: RunLog) -> tuple[str, float] | None:
    """("compiling" or "starting", seconds in it) while a live trainer has not finished its first step.

    From the trainer's heartbeat: it writes the phase when it starts and again after
    each step, so "compiling" stays on while torch.compile works on the first one.
    """
    if run.end is not None:
        return None
    hb = run.heartbeat()
    if not hb or hb.get("phase") not in ("compiling", "starting"):
        return None
    t = hb.get("time")
    since = max(0.0, run.clock() - t) if isinstance(t, (int, float)) and not isinstance(t, bool) else 0.0
    return str(hb["phase"]), since


def _status(run: RunLog) -> Text:
    st = run.status()
    phase = start_phase(run) if st.state in ("running", "waiting") else None
    if phase is not None:
        name, since = phase
        label = "COMPILING (first step)..." if name == "compiling" else "STARTING..."
        t = Text(label, Style.parse("bold magenta"))
        t.append(f" {since:.0f}s", Style(bold=True))
        return t
    t = Text(st.state.upper(), Style.parse(badge_style(st.state)))
    if st.detail and st.state in ("stale", "stopping", "diverged", "failed", "interrupted"):
        t.append(f" {st.detail}", Style(dim=True))
    return t


def live_step(run: RunLog) -> int:
    """The step to show: the heartbeat's (every step, cheaply) while running, else the last logged
    one, or run_end's when the run stopped between log lines."""
    step = run.step
    s = run.end.get("step") if run.end is not None else (run.heartbeat() or {}).get("step")
    if isinstance(s, int) and not isinstance(s, bool) and s > step:
        step = s
    return step


def _epoch(run: RunLog) -> str | None:
    """`epoch 1.40/3` when the stream says: train lines carry `epoch`, run_start `epochs_planned`."""
    e = run.train.last("epoch")
    if e is None:
        return None
    total = run.start.get("epochs_planned")
    of = f"/{total:g}" if isinstance(total, (int, float)) and not isinstance(total, bool) else ""
    return f"epoch {e:.2f}{of}"


def _progress(run: RunLog) -> str:
    ms = run.max_steps
    step = live_step(run)
    out = f"step {step}/{ms} ({100 * step / ms:.0f}%)" if ms else f"step {step}"
    ep = _epoch(run)
    return f"{out}  {ep}" if ep else out


def _elapsed(run: RunLog) -> float | None:
    """Seconds since the run started: from its log lines, or before the first one, from run_start."""
    e = run.elapsed()
    if e is None and run.end is None:
        t = run.start.get("time")
        if isinstance(t, (int, float)) and not isinstance(t, bool) and run.status().state == "running":
            e = max(0.0, run.clock() - t)
    return e


def _speed(run: RunLog) -> list[str]:
    return [
        f"tokens {fmt_num(run.tokens)}",
        f"{fmt_num(run.tok_per_s)} tok/s",
        f"elapsed {fmt_duration(_elapsed(run))}",
        f"ETA {fmt_duration(run.eta())}",
    ]


def header_text(runs: Sequence[RunLog], labels: Sequence[str], colors: Sequence[str], width: int, max_lines: int) -> Text:
    """One or two lines for a single run; one line per run (up to max_lines) for several."""
    if len(runs) == 1:
        run = runs[0]
        ident = Text()
        ident.append("● ", Style(color=colors[0]))
        ident.append(run.name, Style(bold=True))
        ident.append(f"  {run.profile} · {run.device}  ", Style(dim=True))
        ident.append_text(_status(run))
        numbers = "  ".join([_progress(run)] + _speed(run))
        if max_lines >= 2 and ident.cell_len + 3 + len(numbers) > width:
            out = Text("\n").join([ident, Text(numbers)])
        else:
            out = Text("   ").join([ident, Text(numbers)])
        out.no_wrap = True
        out.overflow = "ellipsis"
        return out
    lines: list[Text] = []
    shown = runs if len(runs) <= max_lines else runs[: max_lines - 1]
    lab_w = min(28, max(len(lb) for lb in labels))
    for run, label, color in zip(shown, labels, colors):
        t = Text()
        t.append("● ", Style(color=color))
        t.append(label[:lab_w].ljust(lab_w), Style(color=color, bold=True))
        t.append(" ")
        st = _status(run)
        st.truncate(12, pad=True)
        t.append_text(st)
        t.append(" " + "  ".join([_progress(run)] + (_speed(run) if width >= 140 else _speed(run)[1:])))
        if width >= 140:
            t.append(f"  {run.profile} · {run.device}", Style(dim=True))
        lines.append(t)
    if len(shown) < len(runs):
        lines.append(Text(f"  +{len(runs) - len(shown)} more runs (see the legend of each chart)", Style(dim=True)))
    out = Text("\n").join(lines)
    out.no_wrap = True
    out.overflow = "ellipsis"
    return out


#: How serious each alert kind is (0 most): the strip shows the worst first.
ALERT_RANK = {"diverged": 0, "write_failed": 0, "nonfinite": 1, "collapse": 2, "overfitting": 3}


def alerts_text(runs: Sequence[RunLog], labels: Sequence[str]) -> Text:
    """The alert strip: how many alerts, then the most serious first (divergence, NaN/inf, collapse, ...)."""
    items: list[tuple[int, int, Text]] = []
    bad_lines = 0
    for run, label in zip(runs, labels):
        bad_lines += run.bad_lines
        for a in run.alert_list():
            rank = ALERT_RANK.get(a.kind, 4)
            colour = "red" if rank < 2 else "yellow"
            t = Text()
            if len(runs) > 1:
                t.append(f"{label} ", Style(bold=True))
            if a.kind != "nonfinite":  # its message already says "non-finite"
                t.append(f"{a.kind}: ", Style(bold=True, color=colour))
            t.append(a.message)
            if a.count > 1:
                t.append(f" (×{a.count}, last at step {a.last_step})", Style(dim=True))
            items.append((rank, -a.last_step, t))
    if not items:
        out = Text(" ✓ no alerts", Style(color="green", dim=True))
    else:
        items.sort(key=lambda it: (it[0], it[1]))
        worst = "red" if items[0][0] < 2 else "yellow"
        out = Text(f" ⚠ {len(items)} alert{'s' if len(items) > 1 else ''}", Style(bold=True, color=worst))
        out.append(": " if len(items) == 1 else " · worst first: ", Style(dim=True))
        out.append_text(Text(" │ ").join(t for _, _, t in items))
    if bad_lines:
        out.append(f"  · {bad_lines} unreadable line(s) skipped", Style(dim=True))
    out.no_wrap = True
    out.overflow = "ellipsis"
    return out


def _lift(ev: dict[str, float], h: int) -> float | None:
    """Retrieval top-1 minus the copy control's (issue 13): what the predictor adds over copying z_t."""
    top, copy = ev.get(f"retrieval_top1_h{h}"), ev.get(f"retrieval_copy_top1_h{h}")
    if top is None or copy is None or top != top or copy != copy:
        return None
    return top - copy


def _signed(v: float) -> str:
    return ("+" if v >= 0 else "") + fmt_num(v)


def _signed_short(v: float) -> str:
    """The lift in the compact line: two significant digits, always signed (0.418+0.31)."""
    return ("+" if v >= 0 else "") + fmt_num(v, 2)


def _eval_pairs(run: RunLog) -> list[tuple[str, str]]:
    """The compact eval line's (name, value) pairs; val loss only where there is room (no retrieval)."""
    ev = run.latest_eval()
    if not ev:
        return []
    horizons = run.horizons()
    pairs = [("bpb", fmt_num(ev.get("val_bpb"), 4))]
    if not horizons:
        pairs.append(("val", fmt_num(ev.get("val_loss"), 4)))
    for i, h in enumerate(horizons):
        v = ev.get(f"retrieval_top1_h{h}")
        lift = _lift(ev, h)
        # two significant digits: top-1 and its lift for three horizons fit 80 columns
        pairs.append((("top1 " if i == 0 else "") + f"h{h}", fmt_num(v, 2) + (_signed_short(lift) if lift is not None else "")))
    if "eff_rank" in ev:
        pairs.append(("rank", fmt_num(ev.get("eff_rank"))))
    return pairs


def evals_compact(runs: Sequence[RunLog], labels: Sequence[str], colors: Sequence[str]) -> Text:
    """One line per run: the latest eval's BPB, top-1 per horizon with its lift over the copy control, effective rank."""
    lines = []
    for run, label, color in zip(runs, labels, colors):
        t = Text(no_wrap=True, overflow="ellipsis")
        if len(runs) > 1:
            t.append(f"{label[:16]} ", Style(color=color, bold=True))
        pairs = _eval_pairs(run)
        if not pairs:
            t.append("eval: none yet", Style(dim=True))
        else:
            t.append(f"eval@{int(run.evals.last('step') or 0)} ", Style(bold=True))
            for i, (k, v) in enumerate(pairs):
                t.append(f"{k} ", Style(dim=True))
                # the horizons of one top-1 group are one space apart, groups two
                nxt = pairs[i + 1][0] if i + 1 < len(pairs) else ""
                t.append(v + (" " if k.split()[-1].startswith("h") and nxt.startswith("h") else "  "))
            t.rstrip()
        lines.append(t)
    out = Text("\n").join(lines)
    out.no_wrap = True
    out.overflow = "ellipsis"
    return out


def evals_table(runs: Sequence[RunLog], labels: Sequence[str], colors: Sequence[str]) -> RichTable:
    """The latest eval of each run as a table: one column per run."""
    tbl = RichTable(box=None, pad_edge=False, expand=False, show_header=len(runs) > 1, padding=(0, 1))
    tbl.add_column("metric", style="dim", no_wrap=True)
    for label, color in zip(labels, colors):
        tbl.add_column(label[:14], style=color, justify="right", no_wrap=True)
    evs = [run.latest_eval() for run in runs]
    horizons = sorted({h for run in runs for h in run.horizons()})
    rows: list[tuple[str, str, int]] = [("step", "step", 0), ("val_bpb", "val BPB", 4), ("val_loss", "val loss", 4), ("val_ppl", "val ppl", 4)]
    for h in horizons:
        rows.append((f"retrieval_top1_h{h}", f"top-1 h{h}", 3))
        rows.append((f"lift:{h}", f"  lift vs copy h{h}", 3))
        # (top-1 - chance) / (1 - chance): 0 is chance, 1 is perfect; a fraction, not a ratio
        rows.append((f"retrieval_top1_norm_h{h}", f"  chance-norm h{h}", 3))
    rows += [("retrieval_margin", "margin", 3), ("eff_rank", "eff. rank", 3)]
    for key, name, digits in rows:
        if key.startswith("lift:"):
            vals = [_lift(ev, int(key[5:])) for ev in evs]
        else:
            vals = [ev.get(key) for ev in evs]
        if all(v is None for v in vals):
            continue
        if key.startswith("lift:"):
            cells = ["–" if v is None else _signed(v) for v in vals]
        else:
            cells = [("–" if v is None else (str(int(v)) if key == "step" else fmt_num(v, digits))) for v in vals]
        tbl.add_row(name, *cells)
    if not any(evs):
        tbl.add_row("no eval yet", *["" for _ in runs])
    return tbl


def _short(v: Any, n: int = 60) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


def event_line(rec: dict[str, Any], label: str | None = None, color: str | None = None) -> Text:
    """A metrics event as one log line (samples keep their text, newlines shown as ⏎)."""
    ev = str(rec.get("event", "?"))
    step = rec.get("step", "?")
    t = Text()
    if label:
        t.append(f"{label} ", Style(color=color, bold=True))
    t.append(f"{step:>6} " if isinstance(step, int) else f"{step} ", Style(dim=True))
    if ev == "run_start":
        t.append("▶ run_start ", Style(bold=True, color="green"))
        t.append(" ".join(str(rec.get(k)) for k in ("run_name", "device", "precision") if rec.get(k)))
        if rec.get("max_steps"):
            t.append(f" max_steps {rec['max_steps']}")
    elif ev == "checkpoint":
        t.append("✓ checkpoint ", Style(color="cyan"))
        t.append(str(rec.get("path", "")))
    elif ev == "alert":
        t.append(f"⚠ {rec.get('kind', 'alert')}: ", Style(bold=True, color="red"))
        t.append(str(rec.get("message", "")))
    elif ev == "sample":
        t.append("✎ sample: ", Style(color="magenta"))
        t.append(str(rec.get("text", "")).replace("\r", "").replace("\n", "⏎"), Style(italic=True))
    elif ev == "run_end":
        status = str(rec.get("status", "?"))
        t.append(f"■ run_end {status}", Style.parse(badge_style(status)))
        if rec.get("message"):
            t.append(f": {rec['message']}")
    elif ev == "resume":
        t.append(f"↻ resumed from step {rec.get('from_step', '?')}", Style(color="cyan"))
    else:
        extra = {k: v for k, v in rec.items() if k not in ("type", "step", "time", "event")}
        t.append(f"· {ev} ", Style(bold=True))
        t.append(_short(extra))
    return t
