"""train_with_dashboard: a detached training process under the dashboard (headless here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jepa_cli.tui.app import Dashboard
from jepa_cli.tui.launch import spawn_training, train_with_dashboard

# A stand-in for `jepa train --no-tui`: writes train.pid and metrics like the trainer,
# stops on the stop file or SIGINT with run_end "interrupted".
FAKE_TRAINER = r'''
import json, os, signal, socket, sys, time
from pathlib import Path
run_dir, mode = Path(sys.argv[1]), sys.argv[2]
flag = []
signal.signal(signal.SIGINT, lambda *a: flag.append(1))
print("fake trainer starting", flush=True)
if mode == "fail":
    print("boom: the data cache is corrupt", file=sys.stderr, flush=True)
    sys.exit(3)
(run_dir / "train.pid").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
m = open(run_dir / "metrics.jsonl", "a")
def w(**rec):
    rec.setdefault("time", time.time())
    m.write(json.dumps(rec) + "\n"); m.flush()
def end(status, step):
    w(type="event", step=step, event="run_end", status=status, message=status)
    (run_dir / "train.pid").unlink()
    sys.exit(0)
w(type="event", step=0, event="run_start", run_name=run_dir.name, profile="tiny", device="cpu", precision="fp32", max_steps=20 if mode == "finish" else 100000)
step = 0
while True:
    step += 1
    w(type="train", step=step, loss=3.0 / step, lm_loss=3.0 / step, tokens=step * 100, tok_per_s=2000.0, elapsed=step * 0.05)
    if flag or (run_dir / "stop").exists():
        end("interrupted", step)
    if mode == "finish" and step >= 20:
        end("finished", step)
    time.sleep(0.05)
'''


@pytest.fixture
def trainer(tmp_path):
    p = tmp_path / "fake_trainer.py"
    p.write_text(FAKE_TRAINER)
    yield p
    # a failed test must not leave a fake trainer running
    try:
        pid = json.loads((tmp_path / "run" / "train.pid").read_text())["pid"]
    except (OSError, ValueError):
        return
    if _alive(pid):
        os.kill(pid, 9)


def _headless(monkeypatch, pilot_fn=None):
    """Make Dashboard.run headless, driven by `pilot_fn(app, pilot)`."""
    orig = Dashboard.run

    def run(self, **kw):
        async def auto(pilot):
            if pilot_fn is not None:
                await pilot_fn(self, pilot)

        return orig(self, headless=True, size=(100, 30), auto_pilot=auto)

    monkeypatch.setattr(Dashboard, "run", run)
    monkeypatch.setattr(Dashboard, "__init__", _fast_poll(Dashboard.__init__))


def _fast_poll(init):
    def wrapped(self, *a, **kw):
        kw["poll_interval"] = 0.05
        init(self, *a, **kw)

    return wrapped


async def _until(pilot, cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await pilot.pause(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) still answers kill(0)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return True


def test_spawn_training_detaches_from_the_terminal(tmp_path):
    code = "import os, sys; print('sid', os.getsid(0), 'pid', os.getpid(), 'stdin', repr(sys.stdin.read()), flush=True); print('err', file=sys.stderr)"
    proc = spawn_training([sys.executable, "-c", code], tmp_path / "run")
    assert proc.wait(timeout=30) == 0
    out = (tmp_path / "run" / "train.log").read_text()
    # its own session (a terminal hang-up does not reach it), stdin at EOF, stderr in the log too
    assert f"sid {proc.pid} pid {proc.pid} stdin ''" in out and "err" in out
    assert os.getsid(0) != proc.pid


def test_detach_leaves_training_running(tmp_path, trainer, monkeypatch, capsys):
    run_dir = tmp_path / "run"

    async def press_q(app, pilot):
        await _until(pilot, lambda: app.runs[0].train.n >= 3)
        await pilot.press("q")

    _headless(monkeypatch, press_q)
    rc = train_with_dashboard([sys.executable, str(trainer), str(run_dir), "forever"], run_dir)
    out = capsys.readouterr().out
    pid = json.loads((run_dir / "train.pid").read_text())["pid"]
    try:
        assert rc == 0
        assert f"jepa watch {run_dir}" in out and "Detached" in out
        assert _alive(pid)
        time.sleep(0.3)
        assert _alive(pid)  # still training after the dashboard is gone
    finally:
        (run_dir / "stop").write_text("")
        end = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, 9)
    assert not _alive(pid)
    assert '"status": "interrupted"' in (run_dir / "metrics.jsonl").read_text()


def test_s_then_y_stops_training_gracefully(tmp_path, trainer, monkeypatch, capsys):
    run_dir = tmp_path / "run"

    async def stop(app, pilot):
        await _until(pilot, lambda: (run_dir / "train.pid").exists() and app.runs[0].train.n >= 2)
        await pilot.press("s")
        await pilot.press("y")
        # this fake trainer exits 0 when stopped, so the dashboard lingers until q
        await _until(pilot, lambda: app.child_returncode is not None)
        await pilot.press("q")

    _headless(monkeypatch, stop)
    rc = train_with_dashboard([sys.executable, str(trainer), str(run_dir), "forever"], run_dir)
    out = capsys.readouterr().out
    assert rc == 0
    assert (run_dir / "stop").exists()
    assert "Training interrupted" in out and f"jepa watch {run_dir}" in out


def test_finished_training_returns_zero(tmp_path, trainer, monkeypatch, capsys):
    run_dir = tmp_path / "run"

    async def quit_when_done(app, pilot):
        # a successful run keeps its final charts on screen until the user presses q
        await _until(pilot, lambda: app.child_returncode is not None)
        await pilot.pause(0.2)
        assert app.is_running
        await pilot.press("q")

    _headless(monkeypatch, quit_when_done)
    rc = train_with_dashboard([sys.executable, str(trainer), str(run_dir), "finish"], run_dir)
    out = capsys.readouterr().out
    assert rc == 0 and "Training finished at step 20/20" in out


def test_failed_training_returns_its_code_and_shows_the_log(tmp_path, trainer, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    _headless(monkeypatch)
    rc = train_with_dashboard([sys.executable, str(trainer), str(run_dir), "fail"], run_dir)
    cap = capsys.readouterr()
    assert rc == 3
    assert "exit code 3" in cap.out
    assert "boom: the data cache is corrupt" in cap.err


def test_watch_cli_errors(tmp_path):
    """`jepa watch` on a path that is not a run dir, or without a terminal: one paragraph, exit 2."""
    from jepa_cli.tui.fakerun import write_fake_run

    env = {**os.environ, "JEPA_DEBUG": ""}
    env.pop("TEXTUAL_DRIVER", None)
    plain = tmp_path / "plain"
    plain.mkdir()
    r = subprocess.run([sys.executable, "-m", "jepa_cli", "watch", str(plain)], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "not a run directory" in " ".join(r.stderr.split()) and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "jepa_cli", "watch", str(tmp_path / "missing")], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "does not exist" in " ".join(r.stderr.split())
    run = write_fake_run(tmp_path / "run", steps=50)
    r = subprocess.run([sys.executable, "-m", "jepa_cli", "watch", str(run)], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "interactive terminal" in " ".join(r.stderr.split())
