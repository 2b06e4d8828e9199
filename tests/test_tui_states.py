"""The dashboard's second-pass states, headless: compiling (first step), a step counter moved by the
heartbeat, the metric picker, eval markers, the alert count, the system strip, labels from what
differs; each checked by behaviour and as a text snapshot at 80x24 and 160x48."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jepa_cli.tui.app import Dashboard, screen_text
from jepa_cli.tui.charts import ChartWidget
from jepa_cli.tui.fakerun import T0, eval_record, train_record, write_fake_run
from jepa_cli.tui.picker import MetricPicker
from jepa_cli.tui.system import GpuInfo, SystemSampler, read_proc
from jepa_core import rundir as rd
from test_tui_app import POLL, async_test, wait_for
from test_tui_snapshot import _check, _mask

NOW = T0 + 3600  # the dashboard's clock in these tests
SIZES = [(80, 24), (160, 48)]


def _write(path: Path, recs, mode: str = "a") -> None:
    with open(path, mode) as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")


@pytest.fixture
def trainer():
    """A live process standing in for the trainer (train.pid names it)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _live_run(run: Path, pid: int, *, device: str = "cpu", max_steps: int = 200) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    start = {"type": "event", "step": 0, "time": NOW - 60, "event": "run_start", "run_name": run.name, "profile": "tiny",
             "device": device, "precision": "fp32", "max_steps": max_steps, "compile": True}
    _write(run / rd.METRICS, [start], "w")
    (run / rd.PIDFILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": time.time()}))
    return run


def _beat(run: Path, step: int, phase: str, t: float) -> None:
    (run / rd.HEARTBEAT).write_text(json.dumps({"step": step, "max_steps": 200, "phase": phase, "time": t}))


class FixedSystem(SystemSampler):
    """Deterministic figures for snapshots: 187% CPU, 412 MB, GPU 0 at 97% with 12.1 of 80 GiB."""

    def __init__(self):
        super().__init__(gpu_query=lambda: [GpuInfo(0, 97.0, 12.1 * 1024, 80 * 1024)], gpu_every=3600)
        self.gpus = [GpuInfo(0, 97.0, 12.1 * 1024, 80 * 1024)]

    def sample(self, pids):
        self.rss = {p: 412_000_000 for p in pids}
        self.cpu = {p: 187.0 for p in pids}

    def want_gpu(self, on):
        pass


async def _settle(pilot, app) -> None:
    for _ in range(200):
        await pilot.pause(0.05)
        if not app.runset.behind:
            break
    await pilot.pause(0.3)


# ---------------------------------------------------------------- compiling, then a moving step counter


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x48"])
@async_test
async def test_compiling_then_the_step_counter_moves(tmp_path, trainer, size):
    run = _live_run(tmp_path / "tiny-20251125-101500", trainer.pid)
    _beat(run, 0, "compiling", NOW - 42)
    app = Dashboard([run], poll_interval=POLL, clock=lambda: NOW, system=FixedSystem())
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: "COMPILING (first step)... 42s" in screen_text(app))
        await _settle(pilot, app)
        # the key footer is drawn last: on a loaded machine the settle pause can end before it
        await wait_for(pilot, lambda: "p pick" in screen_text(app))
        text = screen_text(app)
        assert "compiling (first step)..." in text  # the empty charts say why they are empty
        assert "STALE" not in text and "no data yet" not in text
        _check(f"dashboard_compiling_{size[0]}x{size[1]}.txt", _mask(text))
        # the first step is done: the counter follows the heartbeat, between log lines
        _beat(run, 3, "training", NOW)
        # the counter and the badge are separate widgets: on a loaded machine one redraw can land before the other
        await wait_for(pilot, lambda: "step 3/200" in screen_text(app) and "RUNNING" in screen_text(app))
        assert "COMPILING" not in screen_text(app)
        _beat(run, 7, "training", NOW)
        await wait_for(pilot, lambda: "step 7/200" in screen_text(app))
        _write(run / rd.METRICS, [train_record(10, random.Random(0), 200)])
        await wait_for(pilot, lambda: "step 10/200" in screen_text(app))


# ---------------------------------------------------------------- the metric picker


# each key typed into the picker redraws the dashboard: about 16 s of keys at 80x24 and 20 s at
# 160x48 on 2 cores, so both sizes run in the slow suite (the fast one stays under 5 minutes)
@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x48"])
@async_test
async def test_metric_picker_filters_and_puts_any_key_on_the_focused_chart(tmp_path, size):
    run = write_fake_run(tmp_path / "tiny-20251125-101500", steps=300)
    app = Dashboard([run], poll_interval=POLL, clock=lambda: NOW)
    async with app.run_test(size=size) as pilot:
        await _settle(pilot, app)
        loss = app.query_one("#chart-loss", ChartWidget)
        app.set_focus(loss)
        await pilot.press("p")
        assert isinstance(app.screen, MetricPicker)
        await pilot.pause(0.1)
        offered = {(c.key, c.table) for c in app.screen.choices}  # every numeric key of the stream
        assert {("grad_norm", "train"), ("info_nce", "train"), ("tok_per_s", "train"), ("val_bpb", "eval")} <= offered
        assert ("step", "train") not in offered and ("time", "train") not in offered
        assert "grad_norm" in screen_text(app) and "info_nce" in screen_text(app)
        await pilot.press(*"ret h8")
        await pilot.pause(0.1)
        text = screen_text(app)
        assert "retrieval_top1_h8" in text and "retrieval_copy_top1_h8" in text and "grad_norm" not in text
        _check(f"dashboard_picker_{size[0]}x{size[1]}.txt", _mask(text))
        await pilot.press("enter")  # the first match
        await pilot.pause(0.1)
        assert not isinstance(app.screen, MetricPicker)
        head = loss.render().plain.splitlines()[0]
        assert head.startswith(" retrieval_copy_top1_h8") and "●" in loss.render().plain  # eval points, marked
        # c gives the chart its own metrics back; p + escape changes nothing
        await pilot.press("c")
        assert loss.render().plain.startswith(" loss ")
        await pilot.press("p")
        await pilot.press("escape")
        assert loss.render().plain.startswith(" loss ")


@pytest.mark.slow  # about 20 s of typed keys on 2 cores
@async_test
async def test_picker_on_an_unfocused_dashboard_and_with_no_match(tmp_path):
    run = write_fake_run(tmp_path / "r", steps=100)
    app = Dashboard([run], poll_interval=POLL)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, app)
        await pilot.press("p")
        await pilot.press(*"zzz")
        await pilot.pause(0.1)
        assert "no key matches 'zzz'" in screen_text(app)
        await pilot.press("enter")  # nothing to choose: the picker stays
        assert isinstance(app.screen, MetricPicker)
        for _ in range(3):
            await pilot.press("backspace")
        await pilot.press(*"grad_norm")
        await pilot.press("enter")
        await pilot.pause(0.1)
        # no chart had focus: the first chart takes the metric
        assert app.query_one("#chart-loss", ChartWidget).render().plain.startswith(" grad_norm ")


# ---------------------------------------------------------------- markers, alert count, labels


@async_test
async def test_a_single_eval_point_is_visible(tmp_path):
    run = tmp_path / "one-eval"
    run.mkdir()
    rng = random.Random(0)
    start = {"type": "event", "step": 0, "time": T0, "event": "run_start", "run_name": "one-eval", "profile": "tiny", "max_steps": 100}
    _write(run / rd.METRICS, [start] + [train_record(s, rng, 100) for s in (10, 20, 30)] + [eval_record(30, rng, 100)], "w")
    app = Dashboard([run], poll_interval=POLL)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, app)
        chart = app.query_one("#chart-loss", ChartWidget).render().plain
        # the plot rows (they carry the y axis), not the legend, which may take two lines
        body = "\n".join(line for line in chart.splitlines()[1:-1] if "┤" in line or "│" in line)
        assert body.count("●") == 1  # one eval, one marker (a line of one point draws nothing)


@async_test
async def test_alert_count_puts_the_worst_first(tmp_path):
    run = write_fake_run(tmp_path / "r", steps=100, finished=False)
    _write(run / rd.METRICS, [
        {"type": "event", "step": 50, "time": T0 + 10, "event": "alert", "kind": "collapse", "message": "std_anchor 0.004 < floor 0.01"},
        {"type": "event", "step": 60, "time": T0 + 11, "event": "alert", "kind": "overfitting", "message": "val loss up 3 evals running"},
        {"type": "train", "step": 70, "time": T0 + 12, "loss": float("nan"), "lm_loss": 2.0, "tokens": 1},
        {"type": "event", "step": 70, "time": T0 + 13, "event": "run_end", "status": "diverged", "message": "loss is nan at step 70"},
    ])
    app = Dashboard([run], poll_interval=POLL)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, app)
        strip = app.alerts.render().plain if hasattr(app.alerts.render(), "plain") else str(app.alerts.render())
        assert strip.startswith(" ⚠ 4 alerts")
        order = [strip.index(w) for w in ("diverged:", "non-finite loss", "collapse:", "overfitting:")]
        assert order == sorted(order)  # divergence, NaN, collapse, then the rest
        assert "⚠ 4 alerts · worst first: diverged: loss is nan" in screen_text(app)


@async_test
async def test_overlaid_runs_are_labelled_by_what_differs(tmp_path):
    a = write_fake_run(tmp_path / "tiny-20251125-101500", steps=100, overrides=("optim.lr=0.001", "train.seed=1"))
    b = write_fake_run(tmp_path / "tiny-20251125-101501", steps=100, overrides=("optim.lr=0.003", "train.seed=2"))
    app = Dashboard([a, b], poll_interval=POLL)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, app)
        assert app.labels == ["lr=0.001 seed=1", "lr=0.003 seed=2"]
        text = screen_text(app)
        assert "● lr=0.001 seed=1" in text and "● lr=0.003 seed=2" in text


# ---------------------------------------------------------------- the system strip


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "160x48"])
@async_test
async def test_system_strip_on_cuda(tmp_path, trainer, size):
    run = _live_run(tmp_path / "gpt-20251125-101500", trainer.pid, device="cuda:0")
    _write(run / rd.METRICS, [train_record(s, random.Random(1), 200) for s in (10, 20, 30)])
    _beat(run, 31, "training", NOW)
    app = Dashboard([run], poll_interval=POLL, clock=lambda: NOW, system=FixedSystem())
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: "cpu 187% rss 412MB  gpu 97% 12.1/80G" in screen_text(app))
        await _settle(pilot, app)
        text = screen_text(app)
        assert "step 31/200" in text and "✓ no alerts" in text  # the strip shares the line with the alerts
        _check(f"dashboard_system_{size[0]}x{size[1]}.txt", _mask(text))


@async_test
async def test_system_strip_measures_the_trainer(tmp_path):
    """The real sampler: a busy trainer shows a CPU figure and a resident size from /proc."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc")
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    try:
        run = _live_run(tmp_path / "busy", busy.pid)
        app = Dashboard([run], poll_interval=0.2, system=SystemSampler(gpu_query=lambda: []))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: "cpu " in screen_text(app) and "rss " in screen_text(app) and "cpu –" not in screen_text(app), timeout=10)
            cpu = app.system.cpu[busy.pid]
            assert 5 < cpu < 400, cpu  # a spinning process, measured over real intervals
            assert app.system.rss[busy.pid] == read_proc(busy.pid)[1] or app.system.rss[busy.pid] > 1_000_000
    finally:
        busy.kill()
        busy.wait()


def test_read_proc_of_self_and_of_nothing():
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc")
    cpu, rss = read_proc(os.getpid())
    assert cpu > 0 and rss > 10_000_000
    assert read_proc(2**22 + 12345) is None


@async_test
async def test_a_run_stopped_between_log_lines_shows_where_it_stopped(tmp_path):
    run = tmp_path / "stopped"
    run.mkdir()
    rng = random.Random(0)
    start = {"type": "event", "step": 0, "time": T0, "event": "run_start", "run_name": "stopped", "profile": "tiny", "max_steps": 200}
    end = {"type": "event", "step": 27, "time": T0 + 9, "event": "run_end", "status": "interrupted", "message": "stop file"}
    _write(run / rd.METRICS, [start, train_record(10, rng, 200), train_record(20, rng, 200), end], "w")
    app = Dashboard([run], poll_interval=POLL)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "INTERRUPTED" in screen_text(app))
        assert "step 27/200" in screen_text(app)


@async_test
async def test_header_shows_the_epoch_when_the_trainer_logs_one(tmp_path):
    run = tmp_path / "epochs"
    run.mkdir()
    rng = random.Random(0)
    start = {"type": "event", "step": 0, "time": T0, "event": "run_start", "run_name": "epochs", "profile": "tiny",
             "max_steps": 200, "epochs_planned": 3.2}
    lines = [start] + [{**train_record(s, rng, 200), "epoch": s * 0.016} for s in (10, 20, 90)]
    _write(run / rd.METRICS, lines, "w")
    app = Dashboard([run], poll_interval=POLL)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "step 90/200" in screen_text(app))
        assert "epoch 1.44/3.2" in screen_text(app)
