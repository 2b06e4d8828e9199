"""Readers of metrics.jsonl never crash on a malformed number (issue 17).

A 400-digit integer, NaN, infinities, strings, booleans, lists and null in any
field count as missing: `runlog` keeps reading, the dashboard keeps drawing.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import socket
import time
from pathlib import Path

import pytest

from jepa_cli.tui.fakerun import T0, eval_record, train_record
from jepa_core.rundir import live as runlog

from cli_helpers import cli  # noqa: F401 (fixture)

HUGE = 10**400  # json writes and reads it as an int; float() of it raises OverflowError
BAD_VALUES = [HUGE, -HUGE, math.nan, math.inf, -math.inf, "12", True, None, [1], {"a": 1}]
BAD_IDS = ["huge", "-huge", "nan", "inf", "-inf", "str", "bool", "null", "list", "dict"]


def _line(rec: dict) -> str:
    # Python's json writes NaN/Infinity tokens and arbitrary big ints, like a corrupted trainer would
    return json.dumps(rec) + "\n"


def _poisoned_run(run: Path, bad, steps=range(10, 110, 10), max_steps=200) -> None:
    """A run whose every record has `bad` in turn in each of its fields (one field per record)."""
    rng = random.Random(0)
    start = {"type": "event", "step": 0, "time": T0, "event": "run_start", "run_name": run.name, "profile": "tiny",
             "device": "cpu", "precision": "fp32", "max_steps": max_steps, "epochs": 3}
    recs = [start]
    for s in steps:
        recs.append({**train_record(s, rng, max_steps), "epoch": s / max_steps})
        recs.append(eval_record(s, rng, max_steps))
    events = [
        {"type": "event", "step": 50, "time": T0 + 10, "event": "checkpoint", "path": "checkpoints/step-00000050.safetensors"},
        {"type": "event", "step": 50, "time": T0 + 10, "event": "alert", "kind": "collapse", "message": "std low"},
        {"type": "event", "step": 60, "time": T0 + 11, "event": "sample", "prompt": "a", "text": "b"},
    ]
    poisoned = []
    for rec in recs + events:
        for key in list(rec):
            if key == "type":
                continue
            poisoned.append({**rec, key: bad})
    end = {"type": "event", "step": 100, "time": T0 + 30, "event": "run_end", "status": "finished", "message": ""}
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "metrics.jsonl", "w") as f:
        f.writelines(_line(r) for r in [*recs, *events, *poisoned])
        f.writelines(_line({**end, k: bad}) for k in ("step", "time", "message"))
        f.write(_line(end))


@pytest.mark.parametrize("bad", BAD_VALUES, ids=BAD_IDS)
def test_runlog_reads_malformed_numbers_as_missing(tmp_path, bad):
    run = tmp_path / "r"
    _poisoned_run(run, bad)
    log = runlog.RunLog(run, clock=lambda: T0 + 40)
    log.poll()
    assert log.train.n > 0 and log.evals.n > 0 and log.bad_lines == 0
    # every view of the numbers works and holds only floats within range
    assert log.step == 100
    assert log.max_steps in (200, None)
    for table in (log.train, log.evals):
        for key, col in table.columns.items():
            assert all(isinstance(v, float) for v in col), key
            assert table.last(key) is None or math.isfinite(table.last(key))
    log.elapsed(), log.eta(), log.steps_per_second(), log.latest_eval(), log.horizons(), log.alert_list()
    assert log.status().state == "finished"
    if bad in (HUGE, -HUGE):  # out of float range: missing, not an alert and not a crash
        assert not any(a.kind == "nonfinite" for a in log.alert_list())


def test_runlog_step_fields_that_are_not_steps(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    recs = [
        {"type": "event", "step": 0, "time": T0, "event": "run_start", "max_steps": HUGE},
        {"type": "train", "step": HUGE, "time": T0 + 1, "loss": 1.0},
        {"type": "train", "step": math.nan, "time": T0 + 2, "loss": 1.0},
        {"type": "train", "step": "7", "time": HUGE, "loss": 1.0},
        {"type": "event", "step": math.inf, "time": T0 + 3, "event": "resume", "from_step": HUGE},
        {"type": "event", "step": 2, "time": T0 + 3, "event": "resume", "from_step": math.nan},
        {"type": "train", "step": 3, "time": T0 + 4, "loss": 2.0, "tokens": HUGE},
    ]
    (run / "metrics.jsonl").write_text("".join(_line(r) for r in recs))
    log = runlog.RunLog(run, clock=lambda: T0 + 5)
    log.poll()
    assert log.max_steps is None  # a 400-digit max_steps is no max_steps
    assert log.train.last("loss") == 2.0 and log.step == 3 and log.tokens is None
    assert log.eta() is None and log.status().state in ("running", "stale", "waiting")
    assert runlog.step_number(HUGE) is None and runlog.finite_number(HUGE) is None
    assert runlog.step_number(math.nan) is None and runlog.step_number("3") is None


def _run_dashboard(run: Path) -> str:
    from jepa_cli.tui.app import Dashboard, screen_text

    async def go() -> str:
        app = Dashboard([run], poll_interval=0.05)
        async with app.run_test(size=(110, 34)) as pilot:
            end = time.monotonic() + 10
            while "FINISHED" not in screen_text(app) and time.monotonic() < end:
                await pilot.pause(0.05)
            text = screen_text(app)
            for key in ("x", "x", "m", "l"):  # other x-axes (time, tokens), smoothing, log scale: the same columns again
                await pilot.press(key)
                await pilot.pause(0.1)
            return text

    return asyncio.run(go())


@pytest.mark.parametrize("bad", [HUGE, math.nan, "x"], ids=["huge", "nan", "str"])
def test_dashboard_draws_a_run_with_malformed_numbers(tmp_path, bad):
    """`jepa watch` on such a file: before the fix a 400-digit number raised OverflowError and ended it."""
    run = tmp_path / "r"
    _poisoned_run(run, bad)
    text = _run_dashboard(run)
    assert "FINISHED" in text and "step 100" in text


@pytest.mark.parametrize("bad", [HUGE, math.nan, "x"], ids=["huge", "nan", "str"])
def test_dashboard_live_run_with_a_malformed_heartbeat(tmp_path, bad):
    """A running run (no run_end) whose heartbeat.json and run_start carry malformed numbers."""
    run = tmp_path / "live"
    _poisoned_run(run, bad)
    lines = (run / "metrics.jsonl").read_text().splitlines(True)
    (run / "metrics.jsonl").write_text("".join(l for l in lines if '"run_end"' not in l))
    (run / "heartbeat.json").write_text(json.dumps({"step": bad, "max_steps": bad, "phase": "starting", "time": bad}))
    (run / "train.pid").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": 0}))
    log = runlog.RunLog(run)
    log.poll()
    hb = log.heartbeat()
    assert hb["step"] is None and hb["time"] is None and hb["phase"] == "starting"
    from jepa_cli.tui.app import Dashboard, screen_text

    async def go() -> str:
        app = Dashboard([run], poll_interval=0.05)
        async with app.run_test(size=(110, 34)) as pilot:
            await pilot.pause(0.5)
            return screen_text(app)

    assert "step" in asyncio.run(go())


# --------------------------------------------------------------------------- a metrics.jsonl that cannot be read (issue 33)


def _good_and_bad(tmp_path: Path) -> tuple[Path, Path, Path]:
    """runs/good (a finished fake run) and runs/bad, the same with metrics.jsonl a folder."""
    from jepa_cli.tui.fakerun import write_fake_run

    folder = tmp_path / "runs"
    good = write_fake_run(folder / "good", steps=40)
    bad = write_fake_run(folder / "bad", steps=40)
    (bad / "metrics.jsonl").unlink()
    (bad / "metrics.jsonl").mkdir()
    return folder, good, bad


def _one_error(r, needle: str) -> None:
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    assert r.stderr.count("error:") == 1 and needle in " ".join(r.stderr.split()), r.stderr[-3000:]


def test_runs_skips_an_unreadable_run_with_a_note_and_lists_the_rest(tmp_path, cli):
    folder, good, bad = _good_and_bad(tmp_path)
    r = cli("runs", str(folder))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    notes = [line for line in r.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: skipped {bad}: its metrics.jsonl cannot be read (it is a folder, not a file)"]
    assert "good" in r.stdout and "finished" in r.stdout and "bad" not in r.stdout
    r = cli("runs", "--json", str(folder))
    assert [i["name"] for i in json.loads(r.stdout)] == ["good"]
    # nothing else to list: the reason is the answer, as an error
    _one_error(cli("runs", str(bad)), f"{bad / 'metrics.jsonl'} cannot be read: it is a folder, not a file")


def test_watch_on_an_unreadable_run_is_an_error_and_the_others_are_watched(tmp_path, cli, monkeypatch):
    from jepa_cli.render import watch
    from jepa_cli.tui.app import Dashboard

    folder, good, bad = _good_and_bad(tmp_path)
    _one_error(cli("watch", str(bad)), "metrics.jsonl cannot be read: it is a folder, not a file")
    watched = []
    monkeypatch.setattr(watch, "_interactive", lambda: True)
    monkeypatch.setattr(Dashboard, "run", lambda self, **kw: watched.append([r.run_dir for r in self.runs]))
    r = cli("watch", str(folder))
    assert r.returncode == 0 and watched == [[good]], r.stderr[-3000:]
    assert f"note: skipped {bad}: its metrics.jsonl cannot be read" in r.stderr


def _headless_dashboard(monkeypatch, seconds: float = 3.0):
    """Dashboard.run headless, polling fast, for at most `seconds` (then `q`)."""
    from jepa_cli.render import watch
    from jepa_cli.tui.app import Dashboard

    orig = Dashboard.run

    def run(self, **kw):
        self.poll_interval = 0.05

        async def auto(pilot):
            end = time.monotonic() + seconds
            while time.monotonic() < end and self.is_running:
                await pilot.pause(0.05)
            if self.is_running:
                await pilot.press("q")

        return orig(self, headless=True, size=(100, 30), auto_pilot=auto)

    monkeypatch.setattr(watch, "_interactive", lambda: True)
    monkeypatch.setattr(Dashboard, "run", run)


def test_watch_exits_non_zero_when_a_run_becomes_unreadable_while_watched(tmp_path, cli, monkeypatch):
    """metrics.jsonl replaced by a folder after `jepa watch` checked it: the dashboard leaves, and the
    command ends with the error paragraph, exit 2 (it printed a traceback and exited 0)."""
    from jepa_cli.render import watch

    folder, good, bad = _good_and_bad(tmp_path)
    monkeypatch.setattr(watch, "_readable", lambda dirs: dirs)  # as if it broke after the check
    _headless_dashboard(monkeypatch)
    _one_error(cli("watch", str(good), str(bad)), f"{bad / 'metrics.jsonl'} cannot be read: it is a folder, not a file")


def test_watch_never_exits_0_after_the_dashboard_failed(tmp_path, cli, monkeypatch):
    from jepa_cli.tui.app import Dashboard

    folder, good, bad = _good_and_bad(tmp_path)
    _headless_dashboard(monkeypatch)

    def broken(self):
        raise RuntimeError("a bug in the dashboard")

    monkeypatch.setattr(Dashboard, "_update_system", broken)
    r = cli("watch", str(good))
    assert r.returncode == 1
