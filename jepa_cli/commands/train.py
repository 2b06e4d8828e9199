"""`jepa train --profile NAME`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jepa_cli.completion import complete_profile


def train(
    profile: Annotated[
        Optional[str],
        typer.Option("--profile", "-p", help="Profile name or path to a .toml file (`jepa profiles list`).", autocompletion=complete_profile, rich_help_panel="Run"),
    ] = None,
    set_: Annotated[
        list[str],
        typer.Option("--set", "-s", help="Override a key: section.key=value, value read as TOML (`optim.lr=3e-4`, `jepa.horizons=[2,8]`). Repeatable.", rich_help_panel="Run"),
    ] = [],
    resume: Annotated[
        Optional[str],
        typer.Option(
            "--resume",
            "-r",
            help="`auto`: the newest run with a checkpoint under train.out_dir (of --profile if given, else of any profile), "
            "continued with its own config; or a run directory / checkpoint path.",
            rich_help_panel="Run",
        ),
    ] = None,
    init_from: Annotated[
        Optional[str],
        typer.Option(
            "--init-from",
            help="Start from trained weights (weights only: step 0, a fresh optimizer and schedule): a run directory "
            "(RUN, RUN:best, RUN:step-N), a weights file, or hf:DIR (a Hugging Face model directory). The run uses the "
            "source's tokenizer; without --profile, a run's own config. See docs/finetune.md.",
            rich_help_panel="Run",
        ),
    ] = None,
    run_dir: Annotated[
        # a str, not a Path: Path('') is '.', and an empty --run-dir must be refused, not trained into the current folder
        Optional[str],
        typer.Option("--run-dir", help="Use this run directory instead of runs/PROFILE-UTCTIME: a new or empty folder "
                     "(one holding a run, or a file a run writes, is refused; --resume continues a run).", rich_help_panel="Run"),
    ] = None,
    tui: Annotated[
        Optional[bool],
        typer.Option("--tui/--no-tui", help="Open the live dashboard (default: on when stdout is a terminal).", rich_help_panel="Display"),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Start even when the memory estimate (as in `jepa preflight`) says the run does not fit.", rich_help_panel="Run"),
    ] = False,
) -> None:
    """Train a model from a profile; writes config, metrics and checkpoints to a run directory.

    Examples:

    * `jepa train --profile tiny`

    * `jepa train --profile tiny --set train.max_steps=200 --no-tui`

    * `jepa train --resume auto` (continue the newest run, whatever its profile and --set values)

    * `jepa train --resume runs/tiny-20250101-120000 --set train.max_steps=2000` (train it longer)

    * `jepa train --init-from runs/tiny-20250101-120000:best --set data.dataset=text:notes.txt` (fine-tune it on other text)
    """
    from jepa_cli.render.train import run_train

    run_train(profile=profile, overrides=set_, resume=resume, run_dir=run_dir, tui=tui, force=force, init_from=init_from)


def register(app: typer.Typer) -> None:
    app.command("train", rich_help_panel="Training")(train)
