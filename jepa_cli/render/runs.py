"""`jepa runs`: a table of the runs in a folder (or JSON)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.markup import escape

from jepa_cli.console import console, err_console
from jepa_core.errors import JepaError
from jepa_core.rundir.status import status_style


def _num(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def run_runs(folder: Path | None, *, json_out: bool, with_overrides: bool) -> None:
    from jepa_core.rundir.listing import age_of, fmt_age, list_runs

    folder = Path(folder) if folder is not None else Path("runs")
    if folder.exists() and not folder.is_dir():
        import shlex

        raise JepaError(
            f"{folder} is a file, not a folder of runs.",
            hint=f"List the folder that holds it: jepa runs {shlex.quote(str(folder.parent))}"
            + ("; `jepa inspect FILE` shows what a checkpoint holds" if folder.suffix == ".safetensors" else ""),
        )
    if not folder.is_dir():
        where = "the default folder runs/" if str(folder) == "runs" else str(folder)
        raise JepaError(
            f"{where} does not exist{' here' if str(folder) == 'runs' else ''}: no runs to list.",
            hint="Run `jepa runs DIR` with the folder your runs are in (train.out_dir), or start one: `jepa train --profile tiny`.",
        )
    skipped: list = []
    infos = list_runs(folder, with_overrides=with_overrides, skipped=skipped)
    if skipped and not infos:  # nothing else to show: the one unreadable run is the answer
        raise skipped[0]
    for e in skipped:  # one line each, on stderr: the listing (or its JSON) stays whole on stdout
        err_console.print(f"[yellow]note:[/] {escape(e.note())}", soft_wrap=True)
    if json_out:
        now = time.time()
        print(json.dumps([{**i.to_dict(), "age_s": round(age_of(i, now), 1)} for i in infos], indent=2, allow_nan=False, default=str))
        return
    if not infos:
        console.print(f"No runs in {folder} (a run directory holds metrics.jsonl or config.toml). Start one with: jepa train --profile tiny", soft_wrap=True)
        return
    from rich.table import Table

    now = time.time()
    wide = console.width >= 120
    rows = []
    for i in infos:
        step = f"{i.step}/{i.max_steps}" if i.max_steps else str(i.step)
        if i.max_steps and i.step > i.max_steps:
            step += "!"  # `15/10` alone reads as a display bug; the footnote says what it means
        bpb = _num(i.val_bpb, ".4f")
        if i.best_val_bpb is not None and i.val_bpb is not None and i.best_val_bpb < i.val_bpb - 5e-5:
            bpb += f" (best {i.best_val_bpb:.4f})" if wide else "*"
        ov = "?" if i.overrides is None else " ".join(o for o in i.overrides if not (i.init_from and o.startswith("train.init_from=")))
        if i.init_from:  # where its weights came from first: the --set values change a model that was not random
            ov = f"{i.init_from} {ov}".rstrip()
        profile = f"{i.profile} ({i.parallel})" if i.parallel else i.profile  # mode and world size of a torchrun run
        rows.append((i.name, profile, i.status, step, bpb, _num(i.tok_per_s, ",.0f"), fmt_age(age_of(i, now)), ov))
    heads = ("run", "profile", "status", "step", "val BPB", "tok/s", "age", "--set")
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(heads)]
    # every column but --set keeps its full width; --set gets what is left of the line (cut, one line per run)
    left = console.width - sum(widths[:-1]) - len(heads[:-1])
    tbl = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    for c, h in enumerate(heads[:-1]):
        tbl.add_column(h, no_wrap=True, min_width=widths[c], justify="right" if h in ("step", "val BPB", "tok/s", "age") else "left",
                       style={"profile": "cyan"}.get(h))
    with_set = left >= 8
    if with_set:
        tbl.add_column("--set", style="dim", no_wrap=True, overflow="ellipsis", max_width=left)
    for r in rows:
        status = f"[{status_style(r[2])}]{escape(r[2])}[/]"
        cells = [escape(r[0]), escape(r[1]), status, *r[3:7]]
        tbl.add_row(*cells, *([escape(r[7])] if with_set else []))
    console.print(tbl)
    if not wide and any(i.best_val_bpb is not None and i.val_bpb is not None and i.best_val_bpb < i.val_bpb - 5e-5 for i in infos):
        console.print("[dim]* an earlier eval was better (see --json: best_val_bpb)[/]")
    if any(i.max_steps and i.step > i.max_steps for i in infos):
        console.print(
            "[dim]! a record is past max_steps: the run was resumed with a lower train.max_steps, "
            "or its metrics.jsonl holds a step the run never reached[/]"
        )
