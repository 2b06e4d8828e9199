"""`jepa runs`: a table of the runs in a folder (or JSON)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from jepa_cli.console import console
from jepa_core.errors import JepaError

STATUS_STYLE = {
    "running": "bold green",
    "stopping": "yellow",
    "waiting": "dim",
    "stale": "bold yellow",
    "finished": "cyan",
    "early_stopped": "cyan",
    "interrupted": "yellow",
    "diverged": "bold red",
    "write_failed": "bold red",
    "failed": "bold red",
}


def _num(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def run_runs(folder: Path | None, *, json_out: bool, with_overrides: bool) -> None:
    from jepa_core.runs import age_of, fmt_age, list_runs

    folder = Path(folder) if folder is not None else Path("runs")
    if not folder.is_dir():
        where = "the default folder runs/" if str(folder) == "runs" else str(folder)
        raise JepaError(
            f"{where} does not exist{' here' if str(folder) == 'runs' else ''}: no runs to list.",
            hint="Run `jepa runs DIR` with the folder your runs are in (train.out_dir), or start one: `jepa train --profile tiny`.",
        )
    infos = list_runs(folder, with_overrides=with_overrides)
    if json_out:
        now = time.time()
        print(json.dumps([{**i.to_dict(), "age_s": round(age_of(i, now), 1)} for i in infos], indent=2, allow_nan=False, default=str))
        return
    if not infos:
        console.print(f"No runs in {folder} (a run directory holds metrics.jsonl or config.toml). Start one with: jepa train --profile tiny", soft_wrap=True)
        return
    from rich.markup import escape
    from rich.table import Table

    now = time.time()
    wide = console.width >= 120
    tbl = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    tbl.add_column("run", no_wrap=True, overflow="fold")
    tbl.add_column("profile", style="cyan", no_wrap=True)
    tbl.add_column("status", no_wrap=True)
    tbl.add_column("step", justify="right", no_wrap=True)
    tbl.add_column("val BPB", justify="right", no_wrap=True)
    tbl.add_column("tok/s", justify="right", no_wrap=True)
    tbl.add_column("age", justify="right", no_wrap=True)
    tbl.add_column("--set", style="dim", overflow="fold")
    for i in infos:
        step = f"{i.step}/{i.max_steps}" if i.max_steps else str(i.step)
        bpb = _num(i.val_bpb, ".4f")
        if i.best_val_bpb is not None and i.val_bpb is not None and i.best_val_bpb < i.val_bpb - 5e-5:
            bpb += f" (best {i.best_val_bpb:.4f})" if wide else "*"
        ov = "?" if i.overrides is None else " ".join(i.overrides)
        status = f"[{STATUS_STYLE.get(i.status, 'bold')}]{escape(i.status)}[/]"
        tbl.add_row(escape(i.name), escape(i.profile), status, step, bpb, _num(i.tok_per_s, ",.0f"), fmt_age(age_of(i, now)), escape(ov))
    console.print(tbl)
    if not wide and any(i.best_val_bpb is not None and i.val_bpb is not None and i.best_val_bpb < i.val_bpb - 5e-5 for i in infos):
        console.print("[dim]* an earlier eval was better (see --json: best_val_bpb)[/]")
