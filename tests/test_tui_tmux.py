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
        for word in ("loss", "variance", "covariance", "EMA", "FINISHED", "step 3000/3000"):
            assert word in screen, screen
        _tmux(sock, "send-keys", "-t", "w", "q")
        end = time.monotonic() + 15
        while time.monotonic() < end and not exit_file.exists():
            time.sleep(0.2)
        assert exit_file.read_text().strip() == "0"
    finally:
        _tmux(sock, "kill-server")
