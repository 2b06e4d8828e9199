"""`jepa watch RUN_DIR [RUN_DIR ...]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def watch(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="Run directories (or an ablation folder) to attach to; several overlay on the same charts."),
    ],
) -> None:
    """Open the live dashboard on one or more runs, live or finished.

    Keys: `?` help, `q` detach, `s` stop training, `x` x-axis, `m` smoothing, `l` log scale, `tab` focus.
    """
    from jepa_cli.render.watch import run_watch

    run_watch(run_dirs)


def register(app: typer.Typer) -> None:
    app.command("watch", rich_help_panel="Training")(watch)
