"""The dashboard's charts: which metrics each shows, and the chart widget.

`render_chart` is a pure function (runs + view -> Rich Text) so that the
benchmark and the tests time and check exactly what the widget draws.

One run: a chart shows all its metrics, one colour per metric; metrics on a
different scale (LR next to the gradient norm, the loss weights next to the EMA
momentum, the LM/JEPA gradient cosine next to their norms) get their own axis on the right. Several runs: a chart shows one
metric at a time (`c` on a focused chart cycles it), one colour per run, so an
ablation reads at a glance. Eval metrics are drawn with a marker (●) on every
point, so that a single eval is visible. Any numeric key of the stream can be
put on a chart with the metric picker (`p`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence
from weakref import WeakKeyDictionary

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Leave, MouseMove
from textual.widget import Widget

from .plot import MARKER, Canvas, bucket, ema, finite_xy, fmt_duration, fmt_num, nice_range, smoothing_alpha

if TYPE_CHECKING:
    from jepa_core.rundir.live import RunLog

X_AXES = ("step", "tokens", "time")
_X_COLUMN = {"step": "step", "tokens": "tokens", "time": "elapsed"}

METRIC_COLORS = ("#5fafff", "#ffaf5f", "#87d787", "#d787ff", "#ffd75f", "#5fd7d7")
RUN_COLORS = ("#5fafff", "#ff875f", "#87d787", "#d787ff", "#ffd75f", "#5fd7d7", "#ff87af", "#afafaf")


@dataclass(frozen=True)
class Metric:
    key: str  # a column name; a key ending in "*" stands for every column with that prefix (one per horizon)
    label: str
    table: str = "train"  # "train" or "eval"
    smooth: bool = True  # noisy per-step values; schedules and evals are drawn as they are

    @property
    def markers(self) -> bool:
        return self.table == "eval"


@dataclass(frozen=True)
class ChartSpec:
    id: str
    title: str
    metrics: tuple[Metric, ...]
    loggable: bool = True  # follows the `l` (log scale) toggle
    right: tuple[Metric, ...] = ()  # drawn against their own axis, labelled on the right
    jepa_only: bool = False
    large_only: bool = False  # shown only in the large layout; the picker reaches its metrics at 80x24

    @property
    def all_metrics(self) -> tuple[Metric, ...]:
        return self.metrics + self.right


CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec(
        "loss",
        "loss",
        (Metric("loss", "total"), Metric("lm_loss", "lm"), Metric("jepa_loss", "jepa"), Metric("val_loss", "val", "eval", False)),
    ),
    ChartSpec(
        "jepa",
        "JEPA terms",
        (Metric("info_nce", "info_nce"), Metric("var_loss", "variance"), Metric("cov_loss", "covariance")),
        jepa_only=True,
    ),
    ChartSpec("variance", "latent std", (Metric("std_anchor", "std_anchor"), Metric("std_pred", "std_pred")), jepa_only=True),
    ChartSpec(
        "optim",
        "grad norm · LR",
        (Metric("grad_norm", "grad_norm"),),
        right=(Metric("lr", "LR", smooth=False),),
    ),
    ChartSpec(
        "schedule",
        "EMA · loss weights",
        (Metric("ema_momentum", "EMA", smooth=False),),
        loggable=False,
        right=(Metric("lm_weight", "lm_w", smooth=False), Metric("jepa_weight", "jepa_w", smooth=False)),
        large_only=True,
    ),
    ChartSpec(
        "grads",
        "grads",  # LM vs JEPA on the shared backbone, measured on log steps
        (Metric("grad_norm_lm", "lm"), Metric("grad_norm_jepa", "jepa")),
        right=(Metric("grad_cos", "cos"),),
        jepa_only=True,
        large_only=True,
    ),
    ChartSpec(
        "retrieval",
        "retrieval top-1",
        (Metric("retrieval_top1_h*", "h", "eval", False),),
        loggable=False,
        jepa_only=True,
        large_only=True,
    ),
)


def custom_spec(base: ChartSpec, key: str, table: str) -> ChartSpec:
    """`base`'s slot showing one picked metric instead of its own."""
    smooth = table == "train" and key not in ("lr", "lr_head", "muon_lr", "ema_momentum", "lm_weight", "jepa_weight")
    return replace(base, title=key, metrics=(Metric(key, key, table, smooth),), right=(), jepa_only=False)


@dataclass
class View:
    """Display settings shared by all charts (the app's keys change them)."""

    x_axis: str = "step"
    smooth: bool = False
    log: bool = False


@dataclass
class Prepared:
    """A series ready to draw: finite points (log10 in log scale), optional EMA, extents."""

    x: np.ndarray
    y: np.ndarray
    smoothed: np.ndarray | None
    latest: float  # last finite raw value, for the legend
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float


# Per run, arrays derived from its columns, valid for one `RunLog.version`: a key press
# or a second chart on the same x column reuses them; new data invalidates them.
_DERIVED: WeakKeyDictionary = WeakKeyDictionary()


def _memo(run: RunLog) -> dict:
    entry = _DERIVED.get(run)
    if entry is None or entry[0] != run.version:
        entry = (run.version, {})
        _DERIVED[run] = entry
    return entry[1]


def _column(run: RunLog, table: str, key: str) -> np.ndarray | None:
    memo = _memo(run)
    k = ("col", table, key)
    if k not in memo:
        t = run.train if table == "train" else run.evals
        col = t.column(key)
        # copy at once: a numpy view would pin the array('d') buffer and block the reader's appends
        memo[k] = None if col is None or len(col) == 0 else np.frombuffer(col, dtype=np.float64).copy()
    return memo[k]


def prepare(run: RunLog, m: Metric, x_axis: str, log: bool, smooth: bool) -> Prepared | None:
    """The finite, transformed (and smoothed) points of one metric of one run; None if nothing to draw."""
    smooth = smooth and m.smooth
    memo = _memo(run)
    k = ("prep", m.table, m.key, x_axis, log, smooth)
    if k in memo:
        return memo[k]
    out = None
    y = _column(run, m.table, m.key)
    x = _column(run, m.table, _X_COLUMN[x_axis])
    if y is not None and x is not None:
        fin = np.flatnonzero(np.isfinite(y))
        if fin.size:
            latest = float(y[fin[-1]])
            xf, yf = finite_xy(x, y, log)
            if xf.size:
                sm = ema(yf, smoothing_alpha(yf.size)) if (smooth and yf.size > 2) else None
                out = Prepared(xf, yf, sm, latest, float(xf.min()), float(xf.max()), float(yf.min()), float(yf.max()))
    memo[k] = out
    return out


def expand(m: Metric, runs: Sequence[RunLog]) -> list[Metric]:
    """A prefix metric (`retrieval_top1_h*`) as one Metric per matching column, in numeric order."""
    if not m.key.endswith("*"):
        return [m]
    prefix = m.key[:-1]
    found: set[str] = set()
    for run in runs:
        t = run.train if m.table == "train" else run.evals
        found |= {k for k in t.columns if k.startswith(prefix) and k[len(prefix) :].isdigit()}
    return [replace(m, key=k, label=m.label + k[len(prefix) :]) for k in sorted(found, key=lambda k: int(k[len(prefix) :]))]


def chart_metrics(spec: ChartSpec, runs: Sequence[RunLog]) -> tuple[list[Metric], list[Metric]]:
    """(left-axis metrics, right-axis metrics) of a chart, prefixes expanded."""
    left = [x for m in spec.metrics for x in expand(m, runs)]
    right = [x for m in spec.right for x in expand(m, runs)]
    return left, right


def metric_choices(spec: ChartSpec, runs_or_n) -> list[str]:
    """Labels of the selections `c` cycles through: 'all' (one run only) then each metric."""
    runs = runs_or_n if not isinstance(runs_or_n, int) else []
    n_runs = runs_or_n if isinstance(runs_or_n, int) else len(runs)
    left, right = chart_metrics(spec, runs)
    labels = [m.label for m in left + right] or [m.label for m in spec.all_metrics]
    return (["all"] + labels) if n_runs == 1 else labels


@dataclass
class Series:
    label: str
    color: str
    data: Prepared
    right: bool = False  # against the right-hand axis
    markers: bool = False


def collect_series(spec: ChartSpec, runs: Sequence[RunLog], labels: Sequence[str], view: View, selection: int) -> list[Series]:
    log = view.log and spec.loggable
    out: list[Series] = []
    left, right = chart_metrics(spec, runs)
    every = left + right
    if len(runs) == 1 and selection == 0:
        for i, m in enumerate(every):
            d = prepare(runs[0], m, view.x_axis, log and m in left, view.smooth)
            if d is not None:
                out.append(Series(m.label, METRIC_COLORS[i % len(METRIC_COLORS)], d, right=m in right and bool(left), markers=m.markers))
        # a right axis only when there is something on the left to keep apart from
        if out and all(sr.right for sr in out):
            for sr in out:
                sr.right = False
        return out
    if not every:
        return out
    idx = selection - 1 if len(runs) == 1 else selection
    m = every[idx % len(every)]
    for j, (run, label) in enumerate(zip(runs, labels)):
        d = prepare(run, m, view.x_axis, log and m in left, view.smooth)
        if d is not None:
            color = METRIC_COLORS[idx % len(METRIC_COLORS)] if len(runs) == 1 else RUN_COLORS[j % len(RUN_COLORS)]
            out.append(Series(label if len(runs) > 1 else m.label, color, d, markers=m.markers))
    return out


def fmt_x(v: float, axis: str) -> str:
    if axis == "time":
        return fmt_duration(v)
    return fmt_num(v)


@dataclass
class Geometry:
    """Where the last render put things, for mapping a mouse column back to data."""

    plot_left: int = 0
    plot_width: int = 0
    x0: float = 0.0
    x1: float = 1.0


def _axis_labels(lo: float, hi: float, log: bool) -> list[str]:
    def lab(v: float) -> str:
        return fmt_num(10**v if log else v)

    return [lab(hi), lab((hi + lo) / 2), lab(lo)]


def _flow(prefix: Text, items: Sequence[Text], width: int, max_lines: int) -> list[Text]:
    """`prefix` then `items` on lines of `width` cells, an item never split across two
    (the last line is cut with an ellipsis when `max_lines` run out)."""
    lines = [prefix.copy()]
    for item in items:
        if lines[-1].cell_len + item.cell_len > width and lines[-1].cell_len > 0 and len(lines) < max_lines:
            lines.append(Text())
        lines[-1].append_text(item)
    for line in lines:
        line.no_wrap, line.overflow = True, "ellipsis"
    return lines


def _head_lines(spec, series, view, log: bool, sel_label: str, focused: bool, width: int, height: int, hover_x: float | None) -> list[Text]:
    """The chart's title line(s): title, modes and legend, or the hover readout in the legend's place."""
    # title line: title, modes, legend (or the hover readout); a legend too wide for the chart
    # goes on to a second line rather than losing its last names (at 80x24 every chart is 40 wide)
    prefix = Text()
    title = spec.title + ("" if sel_label == "all" else f": {sel_label}")
    prefix.append(f" {title} ", Style(bold=True, reverse=focused))
    modes = [m for m, on in (("log", log), ("ema", view.smooth)) if on]
    if modes:
        prefix.append("[" + ",".join(modes) + "] ", Style(dim=True))
    legend: list[Text] = []
    for sr in series:
        item = Text()
        item.append(f" {MARKER if sr.markers else '━'}", Style(color=sr.color, bold=True))
        item.append(f"{sr.label}{'→' if sr.right else ''} ", Style(color=sr.color))
        item.append(fmt_num(sr.data.latest))
        legend.append(item)
    # a second line only where the plot keeps at least 3 rows
    n_head = len(_flow(prefix, legend, width, 2 if height >= 6 else 1))
    if hover_x is not None and series:
        # name the x of the nearest logged point, not the pixel's fractional x
        d0 = series[0].data
        snap = float(d0.x[int(np.argmin(np.abs(d0.x - hover_x)))])
        readout = [Text(f"{view.x_axis} {fmt_x(snap, view.x_axis)}:", Style(bold=True))]
        for sr in series:
            j = int(np.argmin(np.abs(sr.data.x - hover_x)))
            v = (10 ** sr.data.y[j]) if (log and not sr.right) else sr.data.y[j]
            item = Text(f" {sr.label} ", Style(color=sr.color))
            item.append(fmt_num(float(v)))
            readout.append(item)
        # the readout fills the legend's lines and no more: hovering never moves the plot
        head_lines = _flow(prefix, readout, width, n_head)
    else:
        head_lines = _flow(prefix, legend, width, n_head)
    head_lines += [Text() for _ in range(n_head - len(head_lines))]
    return head_lines


def _x_axis_line(x0: float, x1: float, x_axis: str, plot_w: int, lab_w: int) -> Text:
    """The x axis: first and last value, the axis name in between."""
    left, right = fmt_x(x0, x_axis), fmt_x(x1, x_axis)
    name = x_axis
    inner = plot_w - len(left) - len(right)
    if inner >= len(name) + 2:
        pad = inner - len(name)
        axis = left + " " * (pad // 2) + name + " " * (pad - pad // 2) + right
    else:
        axis = (left + " " * max(1, inner) + right)[:plot_w]
    return Text(" " * lab_w + axis, Style(dim=True), no_wrap=True, overflow="crop")


def render_chart(
    spec: ChartSpec,
    runs: Sequence[RunLog],
    labels: Sequence[str],
    view: View,
    width: int,
    height: int,
    selection: int = 0,
    focused: bool = False,
    hover_x: float | None = None,
    geometry: Geometry | None = None,
    empty_note: str | None = None,
) -> Text:
    """The chart as `height` lines of Rich text, `width` cells wide."""
    width, height = max(1, width), max(1, height)
    log = view.log and spec.loggable
    series = collect_series(spec, runs, labels, view, selection)
    choices = metric_choices(spec, runs if len(runs) == 1 else len(runs))
    sel_label = choices[selection % len(choices)] if choices else "all"

    # axes: x shared; y per side (left, and right when some series sit on the right axis)
    if series:
        x0 = min(sr.data.x_lo for sr in series)
        x1 = max(sr.data.x_hi for sr in series)
    else:
        x0, x1 = 0.0, 1.0
    lefts = [sr for sr in series if not sr.right]
    rights = [sr for sr in series if sr.right]
    if lefts:
        y_lo, y_hi = nice_range(min(sr.data.y_lo for sr in lefts), max(sr.data.y_hi for sr in lefts))
    else:
        y_lo, y_hi = 0.0, 1.0
    r_lo, r_hi = (nice_range(min(sr.data.y_lo for sr in rights), max(sr.data.y_hi for sr in rights)) if rights else (0.0, 1.0))

    head_lines = _head_lines(spec, series, view, log, sel_label, focused, width, height, hover_x)
    n_head = len(head_lines)
    plot_h = max(1, height - 1 - n_head)
    y_labels = _axis_labels(y_lo, y_hi, log)
    lab_w = min(9, max(len(s) for s in y_labels) + 1)
    r_labels = _axis_labels(r_lo, r_hi, False) if rights else []
    r_w = min(8, max(len(s) for s in r_labels) + 1) if rights else 0
    plot_w = max(1, width - lab_w - r_w)
    if geometry is not None:
        geometry.plot_left, geometry.plot_width, geometry.x0, geometry.x1 = lab_w, plot_w, x0, x1

    canvas = Canvas(plot_w, plot_h)
    for sr in series:
        d = sr.data
        lo, hi = (r_lo, r_hi) if sr.right else (y_lo, y_hi)
        if d.smoothed is not None:
            canvas.draw(bucket(d.x, d.y, x0, x1, canvas.px_w), lo, hi, Style(color=sr.color, dim=True))
            canvas.draw(bucket(d.x, d.smoothed, x0, x1, canvas.px_w), lo, hi, Style(color=sr.color, bold=True))
        else:
            canvas.draw(bucket(d.x, d.y, x0, x1, canvas.px_w), lo, hi, Style(color=sr.color))
        if sr.markers:
            canvas.mark(d.x, d.y, x0, x1, lo, hi, Style(color=sr.color, bold=True))

    lines: list[Text] = list(head_lines)

    # plot rows with the y labels at top, middle and bottom (right-axis labels in their series' colour)
    rows = canvas.rows()
    picks = {0: 0, plot_h - 1: 2}
    if plot_h >= 5:
        picks[(plot_h - 1) // 2] = 1
    if not series:
        msg = empty_note or "no data yet"
        if spec.jepa_only and runs and all(r.is_baseline for r in runs):
            msg = "baseline run: no JEPA metrics"
        mid = (plot_h - 1) // 2
        rows[mid] = Text(msg.center(plot_w)[:plot_w], Style(dim=True))
    r_style = Style(color=rights[0].color, dim=True) if len(rights) == 1 else Style(dim=True)
    for r in range(plot_h):
        t = Text(no_wrap=True, overflow="crop")
        if r in picks:
            t.append(y_labels[picks[r]].rjust(lab_w - 1)[: lab_w - 1] + "┤", Style(dim=True))
        else:
            t.append(" " * (lab_w - 1) + "│", Style(dim=True))
        t.append_text(rows[r])
        if rights:
            t.append(("├" + r_labels[picks[r]])[:r_w] if r in picks else "│", r_style)
        lines.append(t)

    if height >= 3:
        lines.append(_x_axis_line(x0, x1, view.x_axis, plot_w, lab_w))
    out = Text("\n", no_wrap=True).join(lines[:height])
    out.no_wrap = True
    out.overflow = "crop"
    return out


class ChartWidget(Widget, can_focus=True):
    """One chart; focus it (tab or click) and press `c` to cycle the metric it shows, `p` to pick any."""

    DEFAULT_CSS = """
    ChartWidget { height: 1fr; width: 1fr; min-height: 4; text-wrap: nowrap; text-overflow: clip; }
    ChartWidget:focus { background: $boost; }
    """
    BINDINGS = [Binding("c", "cycle_metric", "metric")]

    def __init__(self, spec: ChartSpec, model, **kw):
        super().__init__(id=f"chart-{spec.id}", **kw)
        self.base_spec = spec
        self.custom: tuple[str, str] | None = None  # (key, table) picked with `p`
        self.model = model  # the dashboard: .runs, .labels, .view, .chart_note
        self.selection = 0
        self.hover_x: float | None = None
        self.geometry = Geometry()
        self._cache_key: tuple | None = None
        self._cache: Text | None = None

    @property
    def spec(self) -> ChartSpec:
        return self.base_spec if self.custom is None else custom_spec(self.base_spec, *self.custom)

    def pick(self, key: str | None, table: str = "train") -> None:
        """Show one metric of the stream here (None: the chart's own metrics again)."""
        self.custom = None if key is None else (key, table)
        self.selection = 0
        self.refresh()

    def _key(self) -> tuple:
        v = self.model.view
        return (
            tuple(r.version for r in self.model.runs),
            tuple(self.model.labels),
            self.custom,
            getattr(self.model, "chart_note", None),
            v.x_axis,
            v.smooth,
            v.log,
            self.size.width,
            self.size.height,
            self.selection,
            self.has_focus,
            self.hover_x,
        )

    def render(self) -> Text:
        key = self._key()
        if key != self._cache_key or self._cache is None:
            self._cache = render_chart(
                self.spec,
                self.model.runs,
                self.model.labels,
                self.model.view,
                self.size.width,
                self.size.height,
                selection=self.selection,
                focused=self.has_focus,
                hover_x=self.hover_x,
                geometry=self.geometry,
                empty_note=getattr(self.model, "chart_note", None),
            )
            self._cache_key = key
        return self._cache

    def action_cycle_metric(self) -> None:
        if self.custom is not None:  # back from a picked metric to the chart's own
            self.pick(None)
            return
        runs = self.model.runs
        n = max(1, len(metric_choices(self.spec, runs if len(runs) == 1 else len(runs))))
        self.selection = (self.selection + 1) % n
        self.refresh()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def on_mouse_move(self, event: MouseMove) -> None:
        g = self.geometry
        col = event.x - g.plot_left
        if g.plot_width <= 0 or col < 0 or col >= g.plot_width or not math.isfinite(g.x1 - g.x0):
            hx = None
        else:
            hx = g.x0 + (col + 0.5) / g.plot_width * (g.x1 - g.x0)
        if hx != self.hover_x:
            self.hover_x = hx
            self.refresh()

    def on_leave(self, event: Leave) -> None:
        if self.hover_x is not None:
            self.hover_x = None
            self.refresh()
