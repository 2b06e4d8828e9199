"""`jepa watch RUN_DIR [RUN_DIR ...]`: the live dashboard on existing run directories."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jepa_core.errors import JepaError


def _interactive() -> bool:
    # `textual serve "jepa watch RUN"` drives the app through its own driver, without a tty
    if os.environ.get("TEXTUAL_DRIVER"):
        return True
    return sys.stdin.isatty() and sys.stdout.isatty()


def run_watch(run_dirs: list[Path]) -> None:
    from jepa_core.runlog import discover_runs

    dirs = discover_runs(run_dirs or [])
    if not _interactive():
        raise JepaError(
            "`jepa watch` draws a live dashboard and needs an interactive terminal.",
            hint="Run it in a terminal or tmux; over SSH use `ssh -t`. For a browser view: textual serve \"jepa watch RUN_DIR\" (pip install textual-dev).",
        )
    from jepa_cli.console import console
    from jepa_cli.tui.app import Dashboard

    app = Dashboard(dirs)
    app.run()
    live = [r for r in app.runs if r.status().state in ("running", "stopping", "waiting")]
    if live:
        names = " ".join(str(r.run_dir) for r in live)
        console.print(f"Detached; training goes on. Re-attach with: [bold]jepa watch {names}[/]", soft_wrap=True)
