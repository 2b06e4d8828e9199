"""Braille line charts as Rich text: downsampling, smoothing, rasterising.

A terminal cell holds a 2x4 braille dot matrix, so a chart W cells wide has 2W
pixel columns. A series of any length is first reduced to those columns
(M4-style bucketing: min, max, first and last value per column, O(n) in
numpy), which is what keeps a 100k-point redraw fast and still shows every
spike. Columns without data between two with data are bridged by linear
interpolation, so a sparse series (evals) draws as a connected line.

Non-finite points (NaN, inf) are dropped before anything else; in log scale so
are values <= 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.style import Style
from rich.text import Text

MARKER = "●"  # an eval point, drawn over the braille line

# Bit of each dot in a braille cell, indexed [row 0..3][column 0..1] (Unicode order).
_DOT_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.uint16)


@dataclass
class Buckets:
    """Per pixel column with data: column index, min, max, first and last y."""

    cols: np.ndarray
    ymin: np.ndarray
    ymax: np.ndarray
    first: np.ndarray
    last: np.ndarray

    def __len__(self) -> int:
        return int(self.cols.size)


def finite_xy(x: np.ndarray, y: np.ndarray, log: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Drop points whose x or y is NaN/inf (and y <= 0 in log scale, where y becomes log10 y)."""
    m = np.isfinite(x) & np.isfinite(y)
    if log:
        m &= y > 0
    x, y = x[m], y[m]
    if log:
        y = np.log10(y)
    return x, y


def bucket(x: np.ndarray, y: np.ndarray, x0: float, x1: float, ncols: int) -> Buckets:
    """M4 downsampling of finite (x, y) into `ncols` equal-width x buckets over [x0, x1].

    Points are ordered by x within the result (a stable sort if x is not already
    non-decreasing); points outside [x0, x1] land in the edge columns.
    """
    if x.size == 0 or ncols <= 0:
        e = np.empty(0)
        return Buckets(np.empty(0, dtype=np.int64), e, e, e, e)
    if x1 > x0:
        col = np.floor((x - x0) * (ncols / (x1 - x0))).astype(np.int64)
        np.clip(col, 0, ncols - 1, out=col)
    else:
        col = np.zeros(x.size, dtype=np.int64)
    if col.size > 1 and np.any(col[1:] < col[:-1]):
        order = np.argsort(col, kind="stable")
        col, y = col[order], y[order]
    starts = np.flatnonzero(np.concatenate(([True], col[1:] != col[:-1])))
    ends = np.concatenate((starts[1:], [col.size])) - 1
    return Buckets(
        cols=col[starts],
        ymin=np.minimum.reduceat(y, starts),
        ymax=np.maximum.reduceat(y, starts),
        first=y[starts],
        last=y[ends],
    )


def ema(y: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average `e_i = e_{i-1} + alpha (y_i - e_{i-1})`, `e_0 = y_0`, vectorised.

    Within a block, e_k = w^k (e_0 + alpha * sum_{j<=k} y_j w^-j) with w = 1 - alpha;
    blocks are kept short enough that w^-k stays far from overflow. The error is
    of the order of float64 eps * max|y| / alpha.
    """
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    out = np.empty(n)
    if n == 0:
        return out
    if not 0 < alpha <= 1:
        raise ValueError("alpha must be in (0, 1]")
    if alpha == 1:
        out[:] = y
        return out
    w = 1.0 - alpha
    block = max(1, int(40.0 / -math.log(w)))  # w^-block <= e^40
    out[0] = prev = y[0]
    i = 1
    pw_full = w ** -np.arange(1, block + 1, dtype=np.float64)
    wk_full = w ** np.arange(1, block + 1, dtype=np.float64)
    while i < n:
        m = min(block, n - i)
        seg = y[i : i + m]
        acc = np.cumsum(seg * pw_full[:m])
        out[i : i + m] = wk_full[:m] * (prev + alpha * acc)
        prev = out[i + m - 1]
        i += m
    return out


def smoothing_alpha(n: int) -> float:
    """EMA weight for a series of n points: a span of about 1/60 of the series, at least 8 points."""
    span = max(8.0, n / 60.0)
    return 2.0 / (span + 1.0)


class Canvas:
    """A width x height cell grid of braille dots, each cell coloured by the last series that touched it."""

    def __init__(self, width: int, height: int):
        self.width = max(0, width)
        self.height = max(0, height)
        self.px_w = 2 * self.width
        self.px_h = 4 * self.height
        self.bits = np.zeros((self.height, self.width), dtype=np.uint16)
        self.owner = np.full((self.height, self.width), -1, dtype=np.int32)
        self.styles: list[Style] = []
        self.marks: dict[tuple[int, int], Style] = {}  # (cell row, cell col) -> style of a point marker

    def mark(self, x: np.ndarray, y: np.ndarray, x0: float, x1: float, y_lo: float, y_hi: float, style: Style) -> None:
        """A marker (●) on the cell of each point: sparse series (evals) stay visible, a single point too."""
        if self.px_w == 0 or self.px_h == 0 or x.size == 0:
            return
        if x1 > x0:
            col = np.clip(np.floor((x - x0) * (self.px_w / (x1 - x0))), 0, self.px_w - 1).astype(np.int64)
        else:
            col = np.full(x.shape, self.px_w // 2, dtype=np.int64)
        row = self.y_to_row(y, y_lo, y_hi)
        for r, c in zip((row // 4).tolist(), (col // 2).tolist()):
            self.marks[(r, c)] = style

    def y_to_row(self, y: np.ndarray, y_lo: float, y_hi: float) -> np.ndarray:
        """Pixel row of each y (row 0 at the top), clipped to the canvas."""
        if self.px_h == 0:
            return np.zeros(y.shape, dtype=np.int64)
        if y_hi > y_lo:
            r = np.rint((y_hi - y) * ((self.px_h - 1) / (y_hi - y_lo)))
        else:
            r = np.full(y.shape, (self.px_h - 1) // 2, dtype=np.float64)
        return np.clip(r, 0, self.px_h - 1).astype(np.int64)

    def spans(self, b: Buckets, y_lo: float, y_hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(columns, top row, bottom row) to light so that the series reads as one connected line."""
        if len(b) == 0:
            z = np.empty(0, dtype=np.int64)
            return z, z, z
        c0, c1 = int(b.cols[0]), int(b.cols[-1])
        cols = np.arange(c0, c1 + 1)
        # own value range of every column (occupied: its bucket; gap: the interpolated line)
        pos = np.searchsorted(b.cols, cols)  # index of the bucket at or after each column
        occupied = (pos < len(b)) & (b.cols[np.minimum(pos, len(b) - 1)] == cols)
        lo = np.empty(cols.size)
        hi = np.empty(cols.size)
        exit_v = np.empty(cols.size)
        oi = pos[occupied]
        lo[occupied], hi[occupied], exit_v[occupied] = b.ymin[oi], b.ymax[oi], b.last[oi]
        gap = ~occupied
        if gap.any():
            nxt = pos[gap]
            prv = nxt - 1
            t = (cols[gap] - b.cols[prv]) / (b.cols[nxt] - b.cols[prv])
            v = b.last[prv] + t * (b.first[nxt] - b.last[prv])
            lo[gap] = hi[gap] = exit_v[gap] = v
        # each column also reaches back to where the previous column left the line
        entry = np.concatenate(([exit_v[0]], exit_v[:-1]))
        lo = np.minimum(lo, entry)
        hi = np.maximum(hi, entry)
        top = self.y_to_row(hi, y_lo, y_hi)
        bottom = self.y_to_row(lo, y_lo, y_hi)
        return cols, top, bottom

    def draw(self, b: Buckets, y_lo: float, y_hi: float, style: Style) -> None:
        if self.px_w == 0 or self.px_h == 0 or len(b) == 0:
            return
        cols, top, bottom = self.spans(b, y_lo, y_hi)
        rows = np.arange(self.px_h)[:, None]
        pix = np.zeros((self.px_h, self.px_w), dtype=bool)
        pix[:, cols] = (rows >= top[None, :]) & (rows <= bottom[None, :])
        cells = pix.reshape(self.height, 4, self.width, 2)
        bits = np.einsum("hrwc,rc->hw", cells.astype(np.uint16), _DOT_BITS)
        touched = bits > 0
        self.bits |= bits.astype(np.uint16)
        self.styles.append(style)
        self.owner[touched] = len(self.styles) - 1

    def rows(self) -> list[Text]:
        """One Rich Text per cell row; consecutive cells of one colour share a span."""
        out: list[Text] = []
        for cy in range(self.height):
            t = Text(no_wrap=True, overflow="crop")
            bits_row = self.bits[cy]
            own_row = self.owner[cy]
            chars = [chr(0x2800 + int(v)) if v else " " for v in bits_row]
            marked = {cx: st for (ry, cx), st in self.marks.items() if ry == cy}
            start = 0
            for cx in range(1, self.width + 1):
                if cx == self.width or own_row[cx] != own_row[start] or cx in marked or (cx - 1) in marked:
                    if (cx - 1) in marked and cx - 1 == start:
                        t.append(MARKER, marked[cx - 1])
                    else:
                        o = int(own_row[start])
                        seg = "".join(chars[start:cx])
                        t.append(seg, self.styles[o] if o >= 0 else None)
                    start = cx
            out.append(t)
        return out


def nice_range(lo: float, hi: float, pad: float = 0.05) -> tuple[float, float]:
    """A y range around [lo, hi] with a little headroom; a flat series gets a band around it."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi < lo:
        lo, hi = hi, lo
    span = hi - lo
    if span <= 1e-12 * max(1.0, abs(hi), abs(lo)):
        d = abs(hi) * 0.05 or 0.5
        return lo - d, hi + d
    return lo - pad * span, hi + pad * span


def fmt_num(v: float | None, digits: int = 3) -> str:
    """Compact number for axes and legends: 3 significant digits, SI suffixes for large values."""
    if v is None:
        return "–"
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    a = abs(v)
    if a >= 1e3:  # 3e+03 reads badly on an axis: 3k
        for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if a >= div:
                return f"{v / div:.{digits}g}{suf}"
    if a != 0 and a < 1e-3:
        mant, exp = f"{v:.{max(1, digits - 1)}e}".split("e")
        return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{v:.{digits}g}"


def fmt_duration(s: float | None) -> str:
    """h:mm:ss (or m:ss under an hour); '–' when unknown."""
    if s is None or not math.isfinite(s):
        return "–"
    s = int(round(max(0.0, s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}:{m:02d}:{sec:02d}"
    return f"{m}:{sec:02d}"
