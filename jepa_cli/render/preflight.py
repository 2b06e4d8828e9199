"""Rendering for `jepa preflight`: a live table of checks (or JSON), exit 1 when one failed."""

from __future__ import annotations

import json
import sys
import time

import typer

from jepa_cli.console import console

_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red", "skip": "yellow"}


def run_preflight(profile, overrides, json_out, only=()) -> None:
    from functools import partial

    from jepa_core.tools.preflight import make_context, run_preflight as run_checks, select_checks, summarize_results

    t0 = time.perf_counter()
    # a bad profile, --set or --check is a user error (exit 2) before any check runs
    checks = select_checks(only) if only else None
    make_context(profile, overrides)
    engine = partial(run_checks, checks=checks)
    if json_out:
        results = engine(profile, overrides)
        summary = summarize_results(results)
        summary["wall_s"] = round(time.perf_counter() - t0, 3)
        doc = {"profile": profile or "tiny", "overrides": list(overrides), "checks": [r.to_dict() for r in results], "summary": summary}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        sys.stdout.flush()
    else:
        results = _render_live(profile, overrides, engine)
        summary = summarize_results(results)
        wall = time.perf_counter() - t0
        colour = "green" if summary["ok"] else "red"
        verdict = "all checks passed" if summary["ok"] else f"{summary['failed']} check(s) failed"
        console.print(
            f"[bold {colour}]{verdict}[/]: {summary['passed']} passed, "
            + (f"[yellow]{summary['warned']} with a warning[/], " if summary["warned"] else "")
            + f"{summary['failed']} failed, {summary['skipped']} skipped in {wall:.1f} s (profile [cyan]{profile or 'tiny'}[/])"
        )
    if not summary["ok"]:
        raise typer.Exit(1)


def _table(rows):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="jepa preflight", title_justify="left", expand=False)
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for r in rows:
        if r is None:
            continue
        if isinstance(r, str):  # the check now running
            table.add_row(r, "[dim]running[/]", "", "")
            continue
        table.add_row(r.name, f"[{_STYLE[r.status]}]{r.status}[/]", f"{r.seconds:.2f}s", escape(r.detail))
    return table


def _render_live(profile, overrides, engine):
    results: list = []
    if not console.is_terminal:
        out = engine(profile, overrides)
        console.print(_table(out))
        return out
    from rich.live import Live

    running: list = [None]
    with Live(_table(results), console=console, refresh_per_second=8, transient=False) as live:

        def on_start(check) -> None:
            running[0] = check.name
            live.update(_table(results + running))

        def on_result(r) -> None:
            results.append(r)
            running[0] = None
            live.update(_table(results))

        out = engine(profile, overrides, on_start=on_start, on_result=on_result)
    return out
