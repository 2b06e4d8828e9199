"""`jepa inspect FILE [--json]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def inspect(
    path: Annotated[Path, typer.Argument(help="A .safetensors checkpoint (weights or state) or a run directory (its latest checkpoint).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
    config: Annotated[bool, typer.Option("--config", help="Show the resolved config stored in the checkpoint.")] = False,
    stats: Annotated[bool, typer.Option("--stats", help="Load tensors and show their norms (slower).")] = False,
    expand: Annotated[bool, typer.Option("--all", help="List every tensor (repeated blocks and optimizer moments are folded by default).")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Read every tensor and check it against the digest recorded when the checkpoint was written (exit 2 if it does not match).")] = False,
) -> None:
    """Read a checkpoint without building the model: metadata, eval metrics, tensors, parameter counts.

    Only the safetensors header is read (and the tensors with --stats or --verify); a file that is
    not a jepa checkpoint is a one-line error. --verify checks the file, and the state file of a
    weights checkpoint, as resume, sample and export do before loading them.

    Examples:

    * `jepa inspect runs/tiny-20250101-120000` (its latest checkpoint)
    * `jepa inspect runs/tiny-20250101-120000/checkpoints/step-00000960.safetensors --stats`
    * `jepa inspect runs/tiny-20250101-120000 --config` (the resolved profile it was trained with)
    * `jepa inspect runs/tiny-20250101-120000 --json | jq .metrics.val_bpb`
    * `jepa inspect runs/tiny-20250101-120000 --verify` (are its tensors the bytes that were written?)
    """
    from jepa_cli.render.inspect import run_inspect

    run_inspect(path, json_out=json_out, show_config=config, stats=stats, expand=expand, verify=verify)


def register(app: typer.Typer) -> None:
    app.command("inspect", rich_help_panel="Checks")(inspect)
