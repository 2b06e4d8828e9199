"""`jepa runs [DIR] [--json]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def runs(
    folder: Annotated[
        Optional[Path],
        typer.Argument(metavar="[DIR]", help="Folder of run directories (default: runs/, the default train.out_dir); ablation folders inside are listed too.", show_default=False),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per run (a JSON list).")] = False,
    no_overrides: Annotated[bool, typer.Option("--no-overrides", help="Skip the --set column (for older runs it loads each run's profile to compare).")] = False,
) -> None:
    """List the runs in a folder: one line each with name, profile, status, step/max, val BPB, tok/s, age and --set values.

    Status is read from each run's files: running, stopping, stale (the trainer is gone or
    silent without having ended), or how it ended: finished, early_stopped, interrupted,
    diverged, write_failed, failed. The `--set` column shows the values the run was started
    (and resumed) with, as its run_start recorded them; for a run from before they were
    recorded, where its config differs from its profile as the profile is now.

    Examples:

    * `jepa runs`
    * `jepa runs runs/ablate-tiny-20250101-120000`
    * `jepa runs --json | jq '.[] | select(.status == "finished") | .val_bpb'`
    """
    from jepa_cli.render.runs import run_runs

    run_runs(folder, json_out=json_out, with_overrides=not no_overrides)


def register(app: typer.Typer) -> None:
    app.command("runs", rich_help_panel="Training")(runs)
