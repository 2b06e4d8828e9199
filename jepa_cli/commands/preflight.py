"""`jepa preflight [--profile NAME] [--json] [--check NAME ...]`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from jepa_cli.completion import complete_profile


def preflight(
    profile: Annotated[
        Optional[str], typer.Option("--profile", "-p", help="Check this profile's model, data and memory (default: tiny).", autocompletion=complete_profile)
    ] = None,
    set_: Annotated[list[str], typer.Option("--set", "-s", help="Override a key: section.key=value. Repeatable.")] = [],
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    check: Annotated[
        list[str],
        typer.Option("--check", "-c", help="Run only this check (repeatable): profiles, runtime, horizon_sampling, ema, rope_causality, "
                     "grad_barrier, optimizer_coverage, forward_backward, checkpoint_roundtrip, data, memory, bf16."),
    ] = [],
) -> None:
    """Run fast correctness checks before a commit or an expensive run; exit 0 only if none failed (1 if one did).

    Examples:

    * `jepa preflight` (every check on the tiny profile)
    * `jepa preflight --profile gpt2-small --check memory --check bf16`
    * `jepa preflight --json` (for CI)
    """
    from jepa_cli.render.preflight import run_preflight

    run_preflight(profile=profile, overrides=set_, json_out=json_out, only=check)


def register(app: typer.Typer) -> None:
    app.command("preflight", rich_help_panel="Checks")(preflight)
