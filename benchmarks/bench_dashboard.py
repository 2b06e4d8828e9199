"""How long the dashboard takes to redraw a long run (the issue's budget: < 50 ms).

    .venv/bin/python benchmarks/bench_dashboard.py [--points 100000] [--repeat 15]

Writes a synthetic metrics.jsonl with N train lines (every key the trainer
logs) and N/100 eval lines, then times:
  ingest   reading and parsing the whole file once (what attaching to a run costs)
  redraw   render_chart for all four charts (what a data update or a key costs),
           at the large (160x48) and compact (80x24) chart sizes, per view mode
  screen   one full Textual screen render of the 160x48 dashboard after the charts changed
Numbers are wall-clock medians (and the worst of the repeats), single-threaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jepa_cli.tui.charts import CHARTS, View, render_chart  # noqa: E402
from jepa_cli.tui.fakerun import eval_record, train_record  # noqa: E402
from jepa_core.rundir.live import RunLog  # noqa: E402


def write_metrics(run_dir: Path, n: int) -> None:
    rng = random.Random(0)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"type": "event", "step": 0, "time": 0, "event": "run_start", "run_name": "bench", "profile": "tiny", "device": "cpu", "max_steps": n}) + "\n")
        for s in range(1, n + 1):
            f.write(json.dumps(train_record(s, rng, n)) + "\n")
            if s % 100 == 0:
                f.write(json.dumps(eval_record(s, rng, n)) + "\n")


def timed(fn, repeat: int) -> tuple[float, float]:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3, max(ts) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000, help="train lines (points per series)")
    ap.add_argument("--repeat", type=int, default=15)
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "bench"
        write_metrics(run_dir, a.points)
        size_mb = (run_dir / "metrics.jsonl").stat().st_size / 1e6
        run = RunLog(run_dir)
        t = time.perf_counter()
        run.poll()
        ingest = time.perf_counter() - t
        print(f"metrics.jsonl: {run.train.n:,} train lines, {run.evals.n:,} eval lines, {size_mb:.1f} MB")
        print(f"ingest (parse the whole file once): {ingest * 1e3:.0f} ms")
        series = sum(1 for spec in CHARTS for m in spec.metrics if (run.train if m.table == 'train' else run.evals).has(m.key))
        print(f"series drawn: {series} ({a.points:,} points each for train series)")

        sizes = {"large 160x48 (chart 55x22)": (55, 22), "compact 80x24 (chart 39x8)": (39, 8)}
        views = {
            "default": View(),
            "smoothing (m)": View(smooth=True),
            "log scale (l)": View(log=True),
            "x = time (x)": View(x_axis="time"),
            "smooth+log, x = tokens": View(x_axis="tokens", smooth=True, log=True),
        }
        def redraw(view, w, h, cold):
            if cold:
                run.version += 1  # as after a poll that found new lines: derived arrays are rebuilt
            for spec in CHARTS:
                render_chart(spec, [run], ["bench"], view, w, h)

        print(f"\nredraw of all 4 charts, ms, median / worst of {a.repeat}")
        print("  cold = new data arrived (columns copied, finite/log/EMA recomputed); warm = a key or resize only")
        print(f"  {'layout':28s} {'view':24s} {'cold':>17s} {'warm':>17s}")
        worst = 0.0
        for sname, (w, h) in sizes.items():
            for vname, view in views.items():
                cmed, cmx = timed(lambda: redraw(view, w, h, True), a.repeat)
                wmed, wmx = timed(lambda: redraw(view, w, h, False), a.repeat)
                worst = max(worst, cmed)
                print(f"  {sname:28s} {vname:24s} {cmed:7.1f} / {cmx:7.1f} {wmed:7.1f} / {wmx:7.1f}")

        # the whole Textual screen, charts re-rendered because the data changed
        from jepa_cli.tui.app import Dashboard, screen_text

        async def screen() -> tuple[float, float]:
            app = Dashboard([run_dir], poll_interval=3600)
            async with app.run_test(size=(160, 48)) as pilot:
                await pilot.pause(0.2)
                ts = []
                for _ in range(a.repeat):
                    app.runs[0].version += 1  # what a poll that found new lines does
                    t0 = time.perf_counter()
                    app._refresh_charts()
                    screen_text(app)  # composes every widget's render into the screen
                    ts.append(time.perf_counter() - t0)
                return statistics.median(ts) * 1e3, max(ts) * 1e3

        med, mx = asyncio.run(screen())
        print(f"\nfull 160x48 screen render after a data update: {med:.1f} ms median, {mx:.1f} ms worst")
        print(f"\nslowest median cold redraw: {worst:.1f} ms (budget 50 ms) -> {'OK' if worst < 50 else 'OVER BUDGET'}")


if __name__ == "__main__":
    main()
