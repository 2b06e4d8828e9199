"""`jepa watch` in a real terminal (tmux): the words are on screen and `q` exits 0."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jepa_cli.tui.fakerun import write_fake_run

# about 1 s each, so part of the default suite where tmux exists
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _tmux(sock: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_jepa_watch_under_tmux(tmp_path, size):
    run = write_fake_run(tmp_path / "tiny-20251125-101500", steps=3000)
    sock = f"jepa-test-{os.getpid()}-{size[0]}"
    jepa = Path(sys.executable).with_name("jepa")
    exit_file = tmp_path / "exit"
    cmd = f"{jepa} watch {run}; echo $? > {exit_file}"
    _tmux(sock, "new-session", "-d", "-s", "w", "-x", str(size[0]), "-y", str(size[1]), cmd)
    try:
        screen = ""
        end = time.monotonic() + 30
        while time.monotonic() < end and "FINISHED" not in screen:
            time.sleep(0.5)
            screen = _tmux(sock, "capture-pane", "-p", "-t", "w").stdout
        for word in ("loss", "JEPA terms", "latent std", "grad norm", "FINISHED", "step 3000/3000"):
            assert word in screen, screen
        _tmux(sock, "send-keys", "-t", "w", "q")
        end = time.monotonic() + 15
        while time.monotonic() < end and not exit_file.exists():
            time.sleep(0.2)
        assert exit_file.read_text().strip() == "0"
    finally:
        _tmux(sock, "kill-server")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_jepa_train_tiny_dashboard_shows_compiling_then_moving_steps(tmp_path, mirror):
    """`jepa train --profile tiny` (torch.compile on) at 80x24: the header says it compiles its first step,
    then the step counter moves between log lines (log.every 25: a step like 7/30 comes from the heartbeat)."""
    import re

    sock = f"jepa-train-{os.getpid()}"
    jepa = Path(sys.executable).with_name("jepa")
    exit_file = tmp_path / "exit"
    env = f"JEPA_HOME={tmp_path / 'home'} JEPA_DATA_MIRROR={mirror}"
    cmd = (
        f"cd {tmp_path} && {env} {jepa} train --profile tiny --set train.compile=true --set train.max_steps=30 "
        f"--set log.every=25 --set train.eval_every=30 --set train.checkpoint_every=30; echo $? > {exit_file}"
    )
    _tmux(sock, "new-session", "-d", "-s", "t", "-x", "80", "-y", "24", cmd)
    try:
        seen_compiling, steps = False, set()
        end = time.monotonic() + 900  # data preparation and compilation take minutes on a loaded machine
        while time.monotonic() < end and not exit_file.exists():
            screen = _tmux(sock, "capture-pane", "-p", "-t", "t").stdout
            seen_compiling |= "COMPILING (first step)..." in screen
            m = re.search(r"step (\d+)/30", screen)
            if m and "RUNNING" in screen:
                steps.add(int(m.group(1)))
            if "FINISHED" in screen:
                break
            time.sleep(0.5)
        assert seen_compiling, screen
        assert len(steps) >= 2, steps  # it moved
        assert any(s % 25 for s in steps), steps  # between log lines: from the heartbeat
        _tmux(sock, "send-keys", "-t", "t", "q")  # the dashboard stays on a finished run until q
        end = time.monotonic() + 60
        while time.monotonic() < end and not exit_file.exists():
            time.sleep(0.5)
        assert exit_file.read_text().strip() == "0"
    finally:
        _tmux(sock, "kill-server")
        for run in (tmp_path / "runs").glob("*"):
            (run / "stop").touch()  # never leave a detached trainer behind
