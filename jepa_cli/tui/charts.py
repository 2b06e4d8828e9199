"""The dashboard's charts: which metrics each shows, and the chart widget.

`render_chart` is a pure function (runs + view -> Rich Text) so that the
benchmark and the tests time and check exactly what the widget draws.

One run: a chart shows all its metrics, one colour per metric. Several runs:
a chart shows one metric at a time (`c` on a focused chart cycles it), one
colour per run, so an ablation reads at a glance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence
from weakref import WeakKeyDictionary

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Leave, MouseMove
from textual.widget import Widget

from .plot import Canvas, bucket, ema, finite_xy, fmt_duration, fmt_num, nice_range, smoothing_alpha

if TYPE_CHECKING:
    from jepa_core.runlog import RunLog

X_AXES = ("step", "tokens", "time")
_X_COLUMN = {"step": "step", "tokens": "tokens", "time": "elapsed"}

METRIC_COLORS = ("#5fafff", "#ffaf5f", "#87d787", "#d787ff")
RUN_COLORS = ("#5fafff", "#ff875f", "#87d787", "#d787ff", "#ffd75f", "#5fd7d7", "#ff87af", "#afafaf")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    table: str = "train"  # "train" or "eval"
    smooth: bool = True  # noisy per-step values; schedules and evals are drawn as they are


@dataclass(frozen=True)
class ChartSpec:
    id: str
    title: str
    metrics: tuple[Metric, ...]
    loggable: bool = True  # follows the `l` (log scale) toggle
    # Series after the first are rescaled onto the first one's axis (their own min..max):
    # EMA momentum, LR and lm_weight live on unrelated scales but their shapes matter.
    rescale_others: bool = False
    jepa_only: bool = False


CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec(
        "loss",
        "loss",
        (Metric("loss", "total"), Metric("lm_loss", "lm"), Metric("jepa_loss", "jepa"), Metric("val_loss", "val", "eval", False)),
    ),
    ChartSpec(
        "variance",
        "variance",
        (Metric("std_anchor", "std_anchor"), Metric("std_pred", "std_pred"), Metric("var_loss", "var_loss")),
        jepa_only=True,
    ),
    ChartSpec("covariance", "covariance", (Metric("cov_loss", "cov_loss"),), jepa_only=True),
    ChartSpec(
        "schedule",
        "EMA momentum",
        (Metric("ema_momentum", "EMA", smooth=False), Metric("lr", "LR", smooth=False), Metric("lm_weight", "lm_w", smooth=False)),
        loggable=False,
        rescale_others=True,
    ),
)


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


@dataclass
class Series:
    label: str
    color: str
    data: Prepared


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


def metric_choices(spec: ChartSpec, n_runs: int) -> list[str]:
    """Labels of the selections `c` cycles through: 'all' (one run only) then each metric."""
    labels = [m.label for m in spec.metrics]
    return (["all"] + labels) if n_runs == 1 else labels


def collect_series(spec: ChartSpec, runs: Sequence[RunLog], labels: Sequence[str], view: View, selection: int) -> list[Series]:
    log = view.log and spec.loggable
    out: list[Series] = []
    if len(runs) == 1 and selection == 0:
        for i, m in enumerate(spec.metrics):
            d = prepare(runs[0], m, view.x_axis, log, view.smooth)
            if d is not None:
                out.append(Series(m.label, METRIC_COLORS[i % len(METRIC_COLORS)], d))
        return out
    idx = selection - 1 if len(runs) == 1 else selection
    m = spec.metrics[idx % len(spec.metrics)]
    for j, (run, label) in enumerate(zip(runs, labels)):
        d = prepare(run, m, view.x_axis, log, view.smooth)
        if d is not None:
            color = METRIC_COLORS[idx % len(METRIC_COLORS)] if len(runs) == 1 else RUN_COLORS[j % len(RUN_COLORS)]
            out.append(Series(label, color, d))
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
) -> Text:
    """The chart as `height` lines of Rich text, `width` cells wide."""
    width, height = max(1, width), max(1, height)
    log = view.log and spec.loggable
    series = collect_series(spec, runs, labels, view, selection)
    choices = metric_choices(spec, len(runs))
    sel_label = choices[selection % len(choices)]

    # axes
    if series:
        x0 = min(sr.data.x_lo for sr in series)
        x1 = max(sr.data.x_hi for sr in series)
    else:
        x0, x1 = 0.0, 1.0
    rescale = spec.rescale_others and len(series) > 1 and sel_label == "all"
    if series:
        basis = series[:1] if rescale else series
        y_lo, y_hi = nice_range(min(sr.data.y_lo for sr in basis), max(sr.data.y_hi for sr in basis))
    else:
        y_lo, y_hi = 0.0, 1.0

    def ylab(v: float) -> str:
        return fmt_num(10**v if log else v)

    plot_h = max(1, height - 2)
    y_labels = [ylab(y_hi), ylab((y_hi + y_lo) / 2), ylab(y_lo)]
    lab_w = min(9, max(len(s) for s in y_labels) + 1)
    plot_w = max(1, width - lab_w)
    if geometry is not None:
        geometry.plot_left, geometry.plot_width, geometry.x0, geometry.x1 = lab_w, plot_w, x0, x1

    canvas = Canvas(plot_w, plot_h)
    for i, sr in enumerate(series):
        d = sr.data
        yy, smm = d.y, d.smoothed
        if rescale and i > 0:
            band_lo = y_lo + 0.05 * (y_hi - y_lo)
            band_hi = y_hi - 0.05 * (y_hi - y_lo)
            if d.y_hi > d.y_lo:
                yy = band_lo + (d.y - d.y_lo) * ((band_hi - band_lo) / (d.y_hi - d.y_lo))
            else:
                yy = np.full_like(d.y, band_hi)
            smm = None
        if smm is not None:
            canvas.draw(bucket(d.x, yy, x0, x1, canvas.px_w), y_lo, y_hi, Style(color=sr.color, dim=True))
            canvas.draw(bucket(d.x, smm, x0, x1, canvas.px_w), y_lo, y_hi, Style(color=sr.color, bold=True))
        else:
            canvas.draw(bucket(d.x, yy, x0, x1, canvas.px_w), y_lo, y_hi, Style(color=sr.color))

    lines: list[Text] = []
    # title line: title, modes, legend (or the hover readout)
    head = Text(no_wrap=True, overflow="ellipsis")
    title = spec.title + ("" if sel_label == "all" else f": {sel_label}")
    if spec.id == "schedule" and sel_label == "all":
        title = "EMA momentum · LR · lm_weight"
    head.append(f" {title} ", Style(bold=True, reverse=focused))
    modes = [m for m, on in (("log", log), ("ema", view.smooth)) if on]
    if modes:
        head.append("[" + ",".join(modes) + "] ", Style(dim=True))
    if hover_x is not None and series:
        # name the x of the nearest logged point, not the pixel's fractional x
        d0 = series[0].data
        snap = float(d0.x[int(np.argmin(np.abs(d0.x - hover_x)))])
        head.append(f"{view.x_axis} {fmt_x(snap, view.x_axis)}:", Style(bold=True))
        for sr in series:
            j = int(np.argmin(np.abs(sr.data.x - hover_x)))
            v = (10 ** sr.data.y[j]) if log else sr.data.y[j]
            head.append(f" {sr.label} ", Style(color=sr.color))
            head.append(fmt_num(float(v)))
    else:
        for i, sr in enumerate(series):
            head.append(" ━", Style(color=sr.color, bold=True))
            head.append(f"{sr.label} ", Style(color=sr.color))
            head.append(fmt_num(sr.data.latest) + ("↕" if rescale and i > 0 else ""))
    lines.append(head)

    # plot rows with the y labels at top, middle and bottom
    rows = canvas.rows()
    label_at = {0: y_labels[0], plot_h - 1: y_labels[2]}
    if plot_h >= 5:
        label_at[(plot_h - 1) // 2] = y_labels[1]
    if not series:
        msg = "no data yet"
        if spec.jepa_only and runs and all(r.is_baseline for r in runs):
            msg = "baseline run: no JEPA metrics"
        mid = (plot_h - 1) // 2
        rows[mid] = Text(msg.center(plot_w)[:plot_w], Style(dim=True))
    for r in range(plot_h):
        t = Text(no_wrap=True, overflow="crop")
        t.append(label_at.get(r, "").rjust(lab_w - 1)[: lab_w - 1] + "┤" if r in label_at else " " * (lab_w - 1) + "│", Style(dim=True))
        t.append_text(rows[r])
        lines.append(t)

    # x axis: first and last value, the axis name in between
    if height >= 3:
        left, right = fmt_x(x0, view.x_axis), fmt_x(x1, view.x_axis)
        name = view.x_axis
        inner = plot_w - len(left) - len(right)
        if inner >= len(name) + 2:
            pad = inner - len(name)
            axis = left + " " * (pad // 2) + name + " " * (pad - pad // 2) + right
        else:
            axis = (left + " " * max(1, inner) + right)[:plot_w]
        lines.append(Text(" " * lab_w + axis, Style(dim=True), no_wrap=True, overflow="crop"))
    out = Text("\n", no_wrap=True).join(lines[:height])
    out.no_wrap = True
    out.overflow = "crop"
    return out


class ChartWidget(Widget, can_focus=True):
    """One chart; focus it (tab or click) and press `c` to cycle the metric it shows."""

    DEFAULT_CSS = """
    ChartWidget { height: 1fr; width: 1fr; min-height: 4; text-wrap: nowrap; text-overflow: clip; }
    ChartWidget:focus { background: $boost; }
    """
    BINDINGS = [Binding("c", "cycle_metric", "metric")]

    def __init__(self, spec: ChartSpec, model, **kw):
        super().__init__(id=f"chart-{spec.id}", **kw)
        self.spec = spec
        self.model = model  # the dashboard: .runs, .labels, .view
        self.selection = 0
        self.hover_x: float | None = None
        self.geometry = Geometry()
        self._cache_key: tuple | None = None
        self._cache: Text | None = None

    def _key(self) -> tuple:
        v = self.model.view
        return (
            tuple(r.version for r in self.model.runs),
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
            )
            self._cache_key = key
        return self._cache

    def action_cycle_metric(self) -> None:
        n = len(metric_choices(self.spec, len(self.model.runs)))
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
