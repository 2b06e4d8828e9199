"""`jepa bench [--profile NAME] [--steps N] [--json]`."""

from __future__ import annotations

from typing import Annotated

import typer

from jepa_cli.completion import complete_profile


def bench(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Model shape to time.", autocompletion=complete_profile)] = "tiny",
    steps: Annotated[int, typer.Option("--steps", "-n", min=1, help="Timed steps per repeat.")] = 10,
    repeats: Annotated[int, typer.Option("--repeats", "-r", min=1, help="Timed repeats per arm (median and spread are over these).")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed warm-up steps per arm.")] = 3,
    set_: Annotated[list[str], typer.Option("--set", "-s", help="Override a key: section.key=value. Repeatable.")] = [],
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Time training steps (baseline vs JEPA, both teachers) and the machine's matmul peak; report MFU and ratios.

    The arms run interleaved in one process, so the JEPA/baseline ratios hold even on a busy machine.

    Examples:

    * `jepa bench --profile tiny`

    * `jepa bench --profile tiny --steps 20 --repeats 7 --json`
    """
    from jepa_cli.render.bench import run_bench

    run_bench(profile=profile, steps=steps, overrides=set_, json_out=json_out, repeats=repeats, warmup=warmup)


def register(app: typer.Typer) -> None:
    app.command("bench", rich_help_panel="Checks")(bench)
