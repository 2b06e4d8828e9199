"""`jepa watch [RUN_DIR ...]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def watch(
    run_dirs: Annotated[
        Optional[list[Path]],
        typer.Argument(
            metavar="[RUN_DIR]...",
            help="Run directories (or an ablation folder) to attach to; several overlay on the same charts. Default: the newest run under runs/.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Open the live dashboard on one or more runs, live or finished (no argument: the newest run under runs/).

    Keys: `?` help, `q` detach, `s` stop training, `x` x-axis, `m` smoothing, `l` log scale,
    `tab` focus a chart, `c` cycle its metric, `p` pick any metric for it.

    Examples:

    * `jepa watch` (the run that wrote last under runs/)
    * `jepa watch runs/tiny-20250101-120000`
    * `jepa watch runs/tiny-20250101-120000 runs/tiny-baseline-20250101-130000` (overlaid)
    * `jepa watch runs/ablate-tiny-20250101-120000` (every run of an ablation)
    """
    from jepa_cli.render.watch import run_watch

    run_watch(run_dirs or [])


def register(app: typer.Typer) -> None:
    app.command("watch", rich_help_panel="Training")(watch)
