"""`jepa ablate --profile NAME [--seeds N] [--arm NAME:k=v,...]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jepa_cli.completion import complete_profile


def ablate(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Base profile for every arm.", autocompletion=complete_profile)] = "tiny",
    seeds: Annotated[int, typer.Option("--seeds", "-n", min=1, help="Seeds per arm: train.seed = base seed + 0..N-1.")] = 2,
    arm: Annotated[
        list[str],
        typer.Option(
            "--arm",
            "-a",
            help="An arm: NAME:section.key=value,section.key=value (NAME alone: the profile as is). Repeatable; replaces the "
            "default arms baseline (jepa.run_baseline=true) and jepa (the profile). The arm named `baseline` (else the first) is the reference.",
        ),
    ] = [],
    set_: Annotated[list[str], typer.Option("--set", "-s", help="Override applied to every arm: section.key=value. Repeatable.")] = [],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Ablation folder (default: runs/ablate-PROFILE-UTCTIME).")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue an interrupted ablation folder with its own arms, seeds and overrides: finished runs are skipped, interrupted ones resume from their last checkpoint.")] = None,
) -> None:
    """Train every arm for every seed and compare them (mean, std, Welch t-test vs the baseline arm).

    Every run is a normal run directory under one ablation folder
    (`runs/ablate-PROFILE-UTC/ARM-sI/`) with manifest.json, report.json and report.md;
    `jepa watch FOLDER` overlays the runs. Ctrl-C stops after a checkpoint; `--resume FOLDER` continues.
    """
    from jepa_cli.render.ablate import run_ablate

    run_ablate(profile=profile, seeds=seeds, arms=arm, overrides=set_, out=out, resume=resume)


def register(app: typer.Typer) -> None:
    app.command("ablate", rich_help_panel="Training")(ablate)
