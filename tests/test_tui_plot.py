"""jepa_cli.tui.plot: M4 bucketing, EMA, braille rasterising, number formats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rich.style import Style

from jepa_cli.tui.plot import Canvas, bucket, ema, finite_xy, fmt_duration, fmt_num, nice_range


def _reference_buckets(x, y, x0, x1, ncols):
    """Brute force in float64 Python: per column, the points in x order (stable)."""
    cols: dict[int, list[float]] = {}
    pts = []
    for i, (xi, yi) in enumerate(zip(x.tolist(), y.tolist())):
        c = 0 if x1 <= x0 else int(math.floor((xi - x0) * (ncols / (x1 - x0))))
        pts.append((min(max(c, 0), ncols - 1), i, yi))
    pts.sort()
    for c, _, yi in pts:
        cols.setdefault(c, []).append(yi)
    return cols


@pytest.mark.parametrize("monotonic", [True, False])
def test_bucket_matches_brute_force(monotonic):
    rng = np.random.default_rng(0)
    n = 5000
    x = np.sort(rng.uniform(0, 1000, n)) if monotonic else rng.uniform(0, 1000, n)
    y = rng.normal(size=n)
    y[::97] = np.nan
    y[5] = np.inf
    xf, yf = finite_xy(x, y)
    assert xf.size == n - len(range(0, n, 97)) - (0 if 5 % 97 == 0 else 1)
    b = bucket(xf, yf, 0.0, 1000.0, 37)
    ref = _reference_buckets(xf, yf, 0.0, 1000.0, 37)
    assert b.cols.tolist() == sorted(ref)
    for i, c in enumerate(b.cols.tolist()):
        vals = ref[c]
        assert b.ymin[i] == min(vals) and b.ymax[i] == max(vals)
        assert b.first[i] == vals[0] and b.last[i] == vals[-1]


def test_bucket_edge_cases():
    b = bucket(np.array([5.0, 5.0]), np.array([1.0, 3.0]), 5.0, 5.0, 10)  # zero-width x range
    assert b.cols.tolist() == [0] and b.ymin.tolist() == [1.0] and b.ymax.tolist() == [3.0]
    assert len(bucket(np.empty(0), np.empty(0), 0, 1, 10)) == 0


def test_finite_xy_log_drops_nonpositive_and_takes_log10():
    x = np.arange(5.0)
    y = np.array([100.0, 0.0, -1.0, np.nan, 0.001])
    xf, yf = finite_xy(x, y, log=True)
    assert xf.tolist() == [0.0, 4.0]
    assert yf.tolist() == pytest.approx([2.0, -3.0])


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.03, 0.002])
def test_ema_matches_the_recurrence_in_float64(alpha):
    rng = np.random.default_rng(1)
    y = rng.normal(3.0, 2.0, 20_000)  # long enough to cross many blocks for every alpha
    ref = [float(y[0])]
    for v in y[1:].tolist():
        ref.append(ref[-1] + alpha * (v - ref[-1]))
    got = ema(y, alpha)
    assert np.max(np.abs(got - np.array(ref))) < 1e-9


def test_ema_rejects_bad_alpha_and_handles_short_input():
    with pytest.raises(ValueError):
        ema(np.ones(3), 0.0)
    assert ema(np.empty(0), 0.5).size == 0
    assert ema(np.array([4.0]), 0.5).tolist() == [4.0]


def _chars(canvas: Canvas) -> list[str]:
    return [t.plain for t in canvas.rows()]


def test_canvas_diagonal_hand_computed():
    # 2 cells = 4x4 pixels; y = x over [0, 3] lights rows 3, 2-3, 1-2, 0-1 of columns 0..3
    # cell 0: left col row 3 -> 0x40, right col rows 2,3 -> 0x20|0x80 => U+28E0
    # cell 1: left col rows 1,2 -> 0x02|0x04, right col rows 0,1 -> 0x08|0x10 => U+281E
    c = Canvas(2, 1)
    x = np.array([0.0, 1.0, 2.0, 3.0])
    c.draw(bucket(x, x, 0.0, 3.0, c.px_w), 0.0, 3.0, Style(color="red"))
    assert _chars(c) == ["\u28e0\u281e"]


def test_canvas_bridges_gaps_by_interpolation():
    # two points at pixel columns 0 and 3 of a 4x4 canvas, y 0 -> 3: the line in between is drawn
    c = Canvas(2, 1)
    c.draw(bucket(np.array([0.0, 3.0]), np.array([0.0, 3.0]), 0.0, 3.0, 4), 0.0, 3.0, Style())
    assert _chars(c) == ["\u28e0\u281e"]
    # a flat series in a degenerate y range sits on one row, every column lit
    c = Canvas(3, 1)
    c.draw(bucket(np.arange(6.0), np.full(6, 2.0), 0.0, 5.0, 6), 2.0, 2.0, Style())
    row = (4 - 1) // 2  # the middle pixel row
    bits = [0x01, 0x02, 0x04, 0x40][row] | [0x08, 0x10, 0x20, 0x80][row]
    assert _chars(c) == [chr(0x2800 + bits) * 3]


def test_canvas_colours_cells_by_the_last_series():
    c = Canvas(2, 1)
    c.draw(bucket(np.array([0.0, 3.0]), np.array([0.0, 0.0]), 0.0, 3.0, 4), 0.0, 3.0, Style(color="red"))
    c.draw(bucket(np.array([2.0, 3.0]), np.array([3.0, 3.0]), 0.0, 3.0, 4), 0.0, 3.0, Style(color="blue"))
    (row,) = c.rows()
    spans = [(row.plain[s.start : s.end], str(s.style)) for s in row.spans]
    assert spans == [("\u28c0", "red"), ("\u28c9", "blue")]  # cell 1: bottom (red) + top (blue) dots


def test_nice_range_and_formats():
    assert nice_range(0.0, 10.0) == (-0.5, 10.5)
    lo, hi = nice_range(2.0, 2.0)
    assert lo < 2.0 < hi
    assert nice_range(float("nan"), 1.0) == (0.0, 1.0)
    assert fmt_num(2.4567) == "2.46" and fmt_num(12345) == "12.3k" and fmt_num(3000) == "3k" and fmt_num(999) == "999" and fmt_num(2_460_000) == "2.46M"
    assert fmt_num(3e-4) == "3e-4" and fmt_num(-1.234e-5) == "-1.23e-5" and fmt_num(None) == "–" and fmt_num(float("nan")) == "nan"
    assert fmt_duration(59.6) == "1:00" and fmt_duration(3725) == "1:02:05" and fmt_duration(None) == "–"
