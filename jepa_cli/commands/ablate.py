"""`jepa ablate --profile NAME [--seeds N] [--grid k=v1,v2] [--arm NAME:k=v,...] [--budget-s S] [--jobs N]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jepa_cli.completion import complete_profile

DEFAULT_SEEDS = 3


def ablate(
    profile: Annotated[
        Optional[str], typer.Option("--profile", "-p", help="Base profile for every arm (default tiny).", autocompletion=complete_profile)
    ] = None,
    seeds: Annotated[
        Optional[int],
        typer.Option("--seeds", "-n", min=1, help=f"Seeds per arm: train.seed = base seed + 0..N-1 (default {DEFAULT_SEEDS}; with --resume: add seeds)."),
    ] = None,
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid",
            "-g",
            help="section.key=V1,V2,... (values read as TOML, as --set reads them). Repeatable: the arms are the cross "
            "product of the grids, named from their values (`jepa_weight-0.1+teacher-encoder`), plus an LM-only `baseline` arm.",
        ),
    ] = [],
    arm: Annotated[
        list[str],
        typer.Option(
            "--arm",
            "-a",
            help="A hand-named arm: NAME:section.key=value,section.key=value (NAME alone: the profile as is). Repeatable; "
            "adds to the grid arms. Without --grid, the arms given replace the defaults (baseline and jepa). "
            "The arm named `baseline` (else the first) is the reference.",
        ),
    ] = [],
    set_: Annotated[list[str], typer.Option("--set", "-s", help="Override applied to every arm: section.key=value. Repeatable.")] = [],
    budget_s: Annotated[
        Optional[float],
        typer.Option(
            "--budget-s",
            help="Compare at equal training time: every run stops after S seconds of step time (train.time_budget_s) "
            "or at train.max_steps, whichever comes first. Default: equal steps.",
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Runs at once, each in its own process. On CPU each run gets an equal share of the cores "
            "(torch threads = cores // N), so N > 1 pays off when one run cannot keep every core busy (small models); "
            "on CUDA one run per visible GPU (N is capped at their number). Results are the same as with 1 "
            "(the default: one run after another in this process).",
        ),
    ] = 1,
    init_from: Annotated[Optional[str], typer.Option("--init-from", help="Start every arm from these weights: RUN, RUN:best, RUN:step-N, a weights file or hf:DIR; `{i}` in it is the seed index, for one base model per seed (docs/finetune.md).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Ablation folder (default: runs/ablate-PROFILE-UTCTIME).")] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option(
            "--resume",
            help="Continue an ablation folder with its own settings: finished runs are skipped, interrupted ones resume "
            "from their last checkpoint. With --arm/--grid/--seeds, new arms or seeds are added first.",
        ),
    ] = None,
    reference: Annotated[
        Optional[str],
        typer.Option(
            "--reference",
            help="Also compare every arm with this arm (an annealed weight with the constant one, say), paired and "
            "Holm-adjusted the same way: report-vs-ARM.md/.json beside the folder's own report, which keeps "
            "comparing with the folder's reference arm. With --resume on a finished folder nothing trains: the reports are written.",
        ),
    ] = None,
) -> None:
    """Train every arm for every seed on the same batches and compare each arm with the baseline.

    Per arm: final val BPB (mean ± sd), the difference to the baseline with a 95% confidence
    interval and p from the paired t-test over seeds (Welch's where the pairing of initial weights
    and batches does not hold, and alongside), Holm-adjusted p over the arms, the minimum
    detectable effect, a one-line verdict; retrieval top-1
    per horizon (and its lift over the copy control), effective rank, tok/s. Killed or diverged
    runs are listed, never averaged. Each run is a normal run directory under one folder
    (`runs/ablate-PROFILE-UTC/ARM-sI/`) with manifest.json, report.json and report.md;
    `jepa watch FOLDER` overlays the runs. Ctrl-C stops every running run after a checkpoint;
    one progress line per run shows arm, seed, step/max and ETA.

    Examples:

    * `jepa ablate --profile tiny --seeds 3` (baseline vs the profile)

    * `jepa ablate -p tiny --grid jepa.jepa_weight=0.1,0.5 --grid jepa.teacher=projector,encoder`

    * `jepa ablate -p tiny --arm barrier:model.grad_barrier=true --arm 'neg-all:jepa.negatives="all"' --arm baseline:jepa.run_baseline=true`

    * `jepa ablate -p tiny --grid jepa.jepa_weight=0.1,0.5 --budget-s 120` (equal training time)

    * `jepa ablate -p tiny --seeds 3 --jobs 2` (two runs at once, each on half the cores)

    * `jepa ablate --resume runs/ablate-tiny-20250101-120000` (continue), add `--arm ...` or `--seeds 5` to extend it

    * `jepa ablate --resume runs/ablate-tiny-20250101-120000 --reference jepa_weight-0.1` (every arm against that one)
    """
    from jepa_cli.render.ablate import run_ablate

    run_ablate(profile=profile, seeds=seeds, arms=arm, grids=grid, overrides=set_, budget_s=budget_s, out=out, resume=resume, default_seeds=DEFAULT_SEEDS, jobs=jobs,
               reference=reference, init_from=init_from)


def register(app: typer.Typer) -> None:
    app.command("ablate", rich_help_panel="Training")(ablate)
