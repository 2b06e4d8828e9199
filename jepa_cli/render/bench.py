"""Rendering for `jepa bench`: a Rich table of the arms, or the report as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

from jepa_cli.console import console, err_console


def run_bench(profile: str, steps: int, overrides, json_out: bool, repeats: int = 5, warmup: int = 3) -> None:
    from jepa_core.tools.bench import run_bench as engine
    from jepa_core.config import load_config

    cfg = load_config(profile, list(overrides or ()))
    if json_out:
        report = engine(cfg, steps=steps, repeats=repeats, warmup=warmup)
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        sys.stdout.flush()
        return
    with err_console.status("benchmarking...") as status:
        report = engine(cfg, steps=steps, repeats=repeats, warmup=warmup, progress=lambda msg: status.update(f"bench: {msg}"))
    render_report(report.to_dict())


# --------------------------------------------------------------------------- formatting


def _si(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _mem(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def render_report(d: dict[str, Any]) -> None:
    """Print a report dict (BenchReport.to_dict()) as a header and one table row per arm."""
    from rich import box
    from rich.table import Table

    s = d["shape"]
    mm = d["matmul_peak"]
    console.print(
        f"[bold]jepa bench[/]  profile [cyan]{d['profile']}[/]  {d['device']} ({d['device_name']}, {d['threads']} threads)  "
        f"{d['precision']}  torch {d['torch_version']}"
    )
    console.print(
        f"[dim]shape: batch {s['batch_size']} x block {s['block_size']}, d_model {s['d_model']}, {s['n_layers']} layers, "
        f"{s['n_heads']} heads, SwiGLU {s['ff_hidden']}, vocab {s['vocab_size']}; "
        f"{d['repeats']} repeats x {d['steps']} steps after {d['warmup']} warm-up, arms interleaved[/]"
    )
    sizes = ", ".join(f"{n}: {_si(v, 'FLOP/s')}" for n, v in mm["by_size"].items())
    line = f"matmul peak ({mm['dtype']}): [bold]{_si(mm['flops_per_s'], 'FLOP/s')}[/]  [dim](n x n, best of repeats: {sizes})[/]"
    if d.get("datasheet_peak_flops_per_s"):
        line += f"  datasheet bf16 peak {_si(d['datasheet_peak_flops_per_s'], 'FLOP/s')}"
    console.print(line)
    if d.get("precision_why"):
        console.print(f"[dim]precision {d['precision']}: {d['precision_why']}[/]")
    if d["plan"].get("muon_ns_dtype"):
        console.print(f"[dim]Muon Newton-Schulz in {d['plan']['muon_ns_dtype']}[/]")

    has_ds = any(a["mfu_datasheet"] is not None for a in d["arms"])
    has_compile = any(a["compile_s"] is not None for a in d["arms"])
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("arm", no_wrap=True)
    table.add_column("ms/step", justify="right")
    table.add_column("spread", justify="right")
    table.add_column("tok/s", justify="right")
    table.add_column("MFLOP/tok", justify="right")
    table.add_column("GFLOP/s", justify="right")
    table.add_column("MFU", justify="right")
    if has_ds:
        table.add_column("MFU sheet", justify="right")
    table.add_column("MiB", justify="right")
    table.add_column("/base", justify="right")
    if has_compile:
        table.add_column("compile", justify="right")
    ratios = d.get("ratios_vs_baseline", {})
    short = {"baseline": "baseline", "projector": "JEPA proj", "encoder": "JEPA enc"}
    for a in d["arms"]:
        ms = a["ms_per_step"]
        ratio = ratios.get(a["name"])
        row = [
            short.get(a["name"], a["name"]),
            f"{ms['median']:.1f}",
            f"{100 * ms['spread']:.0f}%",
            f"{a['tok_per_s']:,.0f}",
            f"{a['flops_per_token'] / 1e6:.3g}",
            f"{a['achieved_flops_per_s'] / 1e9:.3g}",
            _pct(a["mfu_measured"]),
        ]
        if has_ds:
            row.append(_pct(a["mfu_datasheet"]))
        row.append(_mem(a["peak_mem_bytes"]))
        row.append("1.00" if a["name"] == "baseline" else (f"{ratio:.2f}" if ratio is not None else "-"))
        if has_compile:
            row.append(f"{a['compile_s']:.1f} s" if a["compile_s"] is not None else "-")
        table.add_row(*row)
    console.print(table)
    console.print(
        "[dim]ms/step: median of the repeats; spread: (max - min) / median; MFU: achieved model FLOP/s over the "
        "measured matmul peak; MiB: peak memory; /base: median step time over the baseline's[/]"
    )
    _render_phases(d)
    kinds = {a["peak_mem_kind"] for a in d["arms"]}
    notes = []
    if "cpu_rss_hwm" in kinds or "cpu_ru_maxrss" in kinds:
        notes.append("peak mem: process RSS high-water mark while the arm warmed up (all arms' models are resident)")
    load = d.get("load_avg") or {}
    if load.get("start"):
        notes.append(f"1-min load average {load['start'][0]:.2f} at start, {load['end'][0]:.2f} at end (>= cores: timings are noisy)")
    notes.extend(d.get("notes") or [])
    for n in notes:
        console.print(f"[dim]{n}[/]")


def _render_phases(d: dict[str, Any]) -> None:
    """Where a step's time goes, per arm: ms and share of each phase; then a note per unusual share."""
    from rich import box
    from rich.table import Table

    arms = [a for a in d["arms"] if a.get("phase_ms")]
    if not arms:
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", pad_edge=False, title_justify="left")
    table.add_column("where a step goes", no_wrap=True)
    phases = list(arms[0]["phase_ms"])  # forward, backward, optimizer, teacher: the engine's order
    for phase in phases:
        table.add_column(f"{phase} ms", justify="right")
    short = {"baseline": "baseline", "projector": "JEPA proj", "encoder": "JEPA enc"}
    for a in arms:
        share = a.get("phase_share") or {}
        table.add_row(
            short.get(a["name"], a["name"]),
            *(f"{a['phase_ms'].get(k, 0.0):.1f} [dim]{100 * share.get(k, 0.0):.0f}%[/]" for k in phases),
        )
    console.print(table)
    for a in arms:
        for note in a.get("phase_notes") or []:
            console.print(f"[yellow]note[/] ({short.get(a['name'], a['name'])}): {note}")
