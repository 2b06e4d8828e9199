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


def newest_or_explain(folder: Path = Path("runs")) -> Path:
    """The run `jepa watch` opens without an argument: the one under runs/ that wrote last."""
    from jepa_core.rundir.listing import newest_run_dir

    newest = newest_run_dir(folder) if folder.is_dir() else None
    if newest is None:
        raise JepaError(
            f"`jepa watch` without a run opens the newest run under {folder}/, and there is none here.",
            hint="Pass a run directory (jepa watch PATH/TO/RUN), run it where runs/ is, or start a run: jepa train --profile tiny.",
        )
    return newest


def _readable(dirs: list[Path]) -> list[Path]:
    """The runs whose metrics.jsonl can be read; the others left out with a note each (all of them out: an error)."""
    from jepa_cli.console import err_console
    from jepa_core.rundir.live import unreadable

    bad = {d: e for d in dirs if (e := unreadable(d)) is not None}
    if bad and len(bad) == len(dirs):
        raise next(iter(bad.values()))
    for e in bad.values():
        err_console.print(f"note: {e.note()}", soft_wrap=True, markup=False)
    return [d for d in dirs if d not in bad]


def run_watch(run_dirs: list[Path]) -> None:
    from jepa_core.rundir.listing import discover_runs

    if not run_dirs:
        run_dirs = [newest_or_explain()]
    dirs = _readable(discover_runs(run_dirs))
    if not _interactive():
        raise JepaError(
            "`jepa watch` draws a live dashboard and needs an interactive terminal.",
            hint="Run it in a terminal or tmux; over SSH use `ssh -t`. For a browser view: textual serve \"jepa watch RUN_DIR\" (pip install textual-dev).",
        )
    from jepa_cli.console import console
    from jepa_cli.tui.app import Dashboard

    app = Dashboard(dirs)
    app.run()
    if app.read_error is not None:  # a run became unreadable while watched: the dashboard left, and says why here
        raise app.read_error
    if app.return_code:  # the dashboard failed (Textual printed why): never exit 0 after an error
        raise SystemExit(app.return_code)
    live = [r for r in app.runs if r.status().state in ("running", "stopping", "waiting")]
    if live:
        names = " ".join(str(r.run_dir) for r in live)
        console.print(f"Detached; training goes on. Re-attach with: [bold]jepa watch {names}[/]", soft_wrap=True)
