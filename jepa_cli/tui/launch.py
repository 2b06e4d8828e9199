"""`jepa train` on a terminal: training in its own process, the dashboard in front of it.

The trainer runs in a new session (`start_new_session=True`), with stdin from
/dev/null and its output in `run_dir/train.log`, so neither closing the
dashboard, Ctrl+C in it, nor a dropped SSH connection (SIGHUP to the
terminal's session) reaches it. The dashboard only reads the run directory.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from jepa_core.rundir import LOG_FILE, STOPFILE



def spawn_training(child_argv: list[str], run_dir: Path) -> subprocess.Popen:
    """Start the trainer detached from this terminal; its stdout and stderr go to run_dir/train.log."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOG_FILE, "ab") as log:
        return subprocess.Popen(
            child_argv,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
        )


def _tail(path: Path, n: int = 15) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def train_with_dashboard(child_argv: list[str], run_dir: Path) -> int:
    """Run `child_argv` (a `jepa train ... --no-tui` command) under the dashboard.

    Returns 0 when the user detaches (`q`; training goes on) or the training
    finishes, otherwise the training process's exit code.
    """
    from jepa_cli.console import console, err_console
    from jepa_core.rundir.live import RunLog

    from .app import Dashboard

    run_dir = Path(run_dir)
    proc = spawn_training(child_argv, run_dir)
    try:
        app = Dashboard([run_dir], child=proc, linger_on_success=True)
        app.run()
        if app.read_error is not None:  # metrics.jsonl became unreadable: nothing left to show, the trainer may go on
            raise app.read_error
    except BaseException:
        if proc.poll() is None:
            err_console.print(
                f"The dashboard stopped; training goes on (pid {proc.pid}, output in {run_dir / LOG_FILE}). "
                f"Re-attach with: jepa watch {run_dir}",
                soft_wrap=True,
            )
        raise
    rc = proc.poll()
    if rc is None:
        console.print(f"Detached: training goes on in the background (pid {proc.pid}, output in {run_dir / LOG_FILE}).", soft_wrap=True)
        console.print(f"Re-attach with: [bold]jepa watch {run_dir}[/]   Stop it: press s there, or `touch {run_dir / STOPFILE}`.", soft_wrap=True)
        # The child outlives us by design; mark it handled so Popen does not warn at exit.
        proc.returncode = 0
        return 0
    run = RunLog(run_dir)
    run.poll()
    status = run.status().state if run.end is not None else "ended without run_end"
    bpb = run.latest_eval().get("val_bpb")
    tail = f", val BPB {bpb:.4f}" if bpb is not None else ""
    ms = f"/{run.max_steps}" if run.max_steps else ""
    console.print(f"Training {status} at step {run.step}{ms}{tail} (exit code {rc}). Run directory: {run_dir}", soft_wrap=True)
    console.print(f"See the charts again with: jepa watch {run_dir}", soft_wrap=True)
    if rc != 0:
        lines = _tail(run_dir / LOG_FILE)
        if lines:
            err_console.print(f"Last lines of {run_dir / LOG_FILE}:", style="dim")
            for line in lines:
                err_console.print(line, markup=False, highlight=False)
    return rc
