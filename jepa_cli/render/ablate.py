"""Rendering for `jepa ablate`: the plan, Rich progress across runs, the report and a val BPB chart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from jepa_cli.console import console, quiet_library_warnings
from jepa_core.rundir.status import status_style

ARM_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta")


def _command(profile, seeds, arms, grids, overrides, budget_s, out, resume, jobs: int = 1, init_from: str | None = None) -> str:
    """The command line, rebuilt from the options (recorded in the manifest and the report)."""
    import shlex

    parts = ["jepa", "ablate"]
    if resume is not None:
        parts += ["--resume", str(resume)]
    else:
        parts += ["--profile", profile]
    if seeds is not None:
        parts += ["--seeds", str(seeds)]
    for flag, values in (("--grid", grids), ("--arm", arms), ("--set", overrides)):
        for v in values:
            parts += [flag, v]
    if init_from is not None:
        parts += ["--init-from", init_from]
    if budget_s is not None:
        parts += ["--budget-s", f"{budget_s:g}"]
    if out is not None:
        parts += ["--out", str(out)]
    if jobs != 1:
        parts += ["--jobs", str(jobs)]
    return shlex.join(parts)


def run_ablate(profile, seeds, arms, grids, overrides, budget_s, out, resume, default_seeds: int = 3, jobs: int = 1,
               reference: str | None = None, init_from: str | None = None) -> None:
    from jepa_core.tools.ablate import extend_plan, load_plan, plan_ablation, run_ablation
    from jepa_core.train.stops import BuildInterrupted
    from jepa_core.errors import ConfigError

    quiet_library_warnings()  # as `jepa train`: torch's chatter (inductor FutureWarnings) per run would bury the progress
    command = _command(profile, seeds, arms, grids, overrides, budget_s, out, resume, jobs, init_from)
    if resume is not None:
        plan = load_plan(Path(resume))
        fixed = [
            name
            for name, given in (
                ("--profile", profile is not None and profile != plan.profile),
                ("--set", bool(overrides)),
                ("--budget-s", budget_s is not None),
                ("--init-from", init_from is not None),
                ("--out", out is not None),
            )
            if given
        ]
        if fixed:
            raise ConfigError(
                f"--resume continues an ablation with its own profile, overrides, budget and folder; {', '.join(fixed)} cannot change them.",
                hint="Leave those options out (--arm, --grid and --seeds may add arms and seeds), or start a new ablation.",
            )
        plan = extend_plan(plan, seeds, arms, grids, command=command)
    else:
        plan = plan_ablation(profile or "tiny", seeds or default_seeds, arms, overrides, out, grids=grids, budget_s=budget_s, command=command,
                             init_from=init_from)
    if reference == plan.reference:
        reference = None  # the folder's own report is that comparison
    plan.against(reference)  # an unknown arm is refused before anything trains
    _print_plan(plan, resumed=resume is not None)
    progress = AblateProgress(live=console.is_terminal)
    try:
        outcome = run_ablation(plan, callbacks=progress, jobs=jobs)
    except BuildInterrupted as e:  # the runs handle their own: this came while the data was prepared up front
        progress.stop()
        from jepa_core.data.prepare import kept_when_interrupted

        kept = kept_when_interrupted(plan.config_for(plan.arms[0].name, 0).data)[1]
        console.print(f"[yellow]interrupted{f' ({e.args[0]})' if e.args else ''}[/] while preparing the data, before any run: "
                      f"{kept}; continue with: [bold]jepa ablate --resume {plan.dir}[/]")
        raise typer.Exit(130) from None
    finally:
        progress.stop()
    render_report(outcome.report)
    paths = [plan.dir / "report.md", plan.dir / "report.json"]
    if reference is not None:
        from jepa_core.tools.ablate import report_paths, write_report

        console.print(f"\n[bold]every arm against {escape(reference)}[/]")
        render_report(write_report(plan.dir, reference))
        paths += [*report_paths(plan.dir, reference)][::-1]
    console.print(f"[dim]report: {'  '.join(map(str, paths))}   overlay the runs: jepa watch {plan.dir}[/]")
    if outcome.stopped:
        console.print(f"[yellow]ablation stopped[/]; continue it with: [bold]jepa ablate --resume {plan.dir}[/]")
        raise typer.Exit(130)
    if outcome.data_order_ok is False:
        console.print("[bold red]the arms did not receive the same batches: the comparison is not fair[/]")
        raise typer.Exit(1)
    if outcome.failed:
        console.print(f"[bold red]{len(outcome.failed)} run(s) failed:[/] {', '.join(outcome.failed)}; rerun them with --resume {plan.dir}")
        raise typer.Exit(1)


def _print_plan(plan, resumed: bool) -> None:
    s = plan.settings
    verb = "resuming" if resumed else "ablation"
    console.print(f"[bold]{verb}[/] {plan.dir}  profile [cyan]{escape(plan.profile)}[/]  seeds {plan.seeds}  reference arm [bold]{escape(plan.reference)}[/]")
    for i, a in enumerate(plan.arms):
        colour = ARM_COLOURS[i % len(ARM_COLOURS)]
        console.print(f"  arm [{colour}]{escape(a.name)}[/]: {escape(', '.join(a.overrides)) or '(the profile as is)'}")
    if plan.overrides:
        console.print(f"  every arm: {escape(', '.join(plan.overrides))}")
    if plan.budget_s > 0:
        console.print(f"  comparison: [bold]equal training time[/], {plan.budget_s:g} s of step time per run (at most {s.get('train.max_steps')} steps)")
    else:
        console.print(f"  comparison: [bold]equal steps[/], {s.get('train.max_steps')} per run")
    from jepa_core.tools.ablate import precision_if_shared, setting_text

    if s:
        console.print(
            f"  [dim]checked equal across arms: dataset {escape(str(s.get('data.dataset')))}, block {s.get('data.block_size')}, batch {s.get('train.batch_size')}"
            f" x {s.get('train.grad_accum_steps')}, eval every {s.get('train.eval_every')}, "
            f"{s.get('device')}{precision_if_shared(s)}, compile {s.get('train.compile')}[/]"
        )
        if isinstance(s.get("precision"), dict):
            console.print(f"  precision per arm (the treatment): {setting_text(s, 'precision')}")


# --------------------------------------------------------------------------- progress


class AblateProgress:
    """AblationCallbacks: one line per run (arm, seed, step/max, ETA), updated in place on a
    terminal; otherwise (a pipe, a log file) one line per run when it ends."""

    def __init__(self, live: bool):
        self.live = live
        self.progress = None
        self.total = 0
        self.done = 0
        self.runs: dict[str, dict[str, Any]] = {}  # run name -> task id, step, max steps, start time

    # AblationCallbacks protocol (duck-typed: no jepa_core import at module level)
    def on_begin(self, plan, todo) -> None:
        self.total = len(plan.runs())
        self.done = self.total - len(todo)
        if not todo:
            console.print("[dim]every run is already done; rebuilding the report[/]")
            return
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[steps]}"),
                TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=console,
            )
            self.progress.start()

    def on_jobs(self, jobs, threads, gpus) -> None:
        where = f"one per GPU ({', '.join(gpus)})" if gpus else f"{threads} torch thread(s) each"
        self._log(f"[dim]{jobs} runs at once, {where}[/]")

    def on_prepare(self, stage, done, total) -> None:
        if done == 0:
            self._log(f"[dim]preparing data: {stage}...[/]")

    def on_skip(self, spec, status) -> None:
        self._log(f"[dim]skip {spec.name}: already {status}[/]")

    def on_run_start(self, spec, position, total, action) -> None:
        import time

        run = self.runs[spec.name] = {"step": 0, "max": 0, "t0": time.monotonic(), "action": action, "task": None}
        if self.progress is not None:
            run["task"] = self.progress.add_task(_run_label(spec), total=None, info="" if action == "start" else action, steps=_steps(run))

    def train_callbacks(self, spec):
        from jepa_core.train.loop import TrainCallbacks

        outer, run = self, self.runs[spec.name]

        class _Run(TrainCallbacks):
            def on_start(self, info: dict[str, Any]) -> None:
                run["step"], run["max"] = info["start_step"], info["max_steps"]
                outer._update(run, total=info["max_steps"], completed=info["start_step"])

            def on_step(self, step: int, max_steps: int) -> None:
                run["step"], run["max"] = step, max_steps
                outer._update(run, total=max_steps, completed=step)

            def on_record(self, r: dict[str, Any]) -> None:
                bpb = r.get("val_bpb")
                if r.get("type") == "eval" and isinstance(bpb, (int, float)):
                    outer._update(run, info=f"val BPB {bpb:.4f}")

        return _Run()

    def _update(self, run: dict[str, Any], **fields: Any) -> None:
        if self.progress is not None and run["task"] is not None:
            self.progress.update(run["task"], steps=_steps(run), **fields)

    def on_run_end(self, spec, status, message) -> None:
        import time

        self.done += 1
        run = self.runs.pop(spec.name, {"step": 0, "max": 0, "t0": time.monotonic(), "action": "", "task": None})
        if self.progress is not None and run["task"] is not None:
            self.progress.remove_task(run["task"])
        colour = status_style(status)
        action = f" ({escape(run['action'])})" if run["action"] and run["action"] != "start" else ""
        line = (f"[{self.done}/{self.total}] {_run_label(spec)}  {_steps(run)}  {time.monotonic() - run['t0']:.1f} s  [{colour}]{status}[/]{action}"
                + (f" [dim]{escape(message)}[/]" if message and status != "finished" else ""))
        self._log(line)

    def _log(self, line: str) -> None:
        (self.progress.console if self.progress is not None else console).print(line)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _steps(run: dict[str, Any]) -> str:
    return f"step {run['step']}/{run['max'] or '?'}"


def _run_label(spec) -> str:
    return f"{escape(spec.arm)}  seed {spec.seed_index}"


# --------------------------------------------------------------------------- report


def render_report(rep: dict[str, Any]) -> None:
    from jepa_core.tools.ablate import best_lines, comparison_text, fmt_diff, fmt_mean_sd, fmt_metric, fmt_p, mde_lines

    colours = {a["name"]: ARM_COLOURS[i % len(ARM_COLOURS)] for i, a in enumerate(rep["arms"])}
    ref = rep["reference"]
    alpha = rep["alpha"]
    pct = int(round(rep["ci_level"] * 100))

    def arm_cell(name: str) -> str:
        return f"[{colours[name]}]{escape(name)}[/]"

    console.print(f"[bold]comparison[/]: {escape(comparison_text(rep))}")
    t = Table(title=f"final val BPB per arm: mean ± sd over finished seeds; diff = arm - {ref} ({pct}% CI) and p of the test named "
              "(paired where the pairing holds), Holm p; Welch p (Holm) alongside", title_justify="left")
    for col, just in (("arm", "left"), ("n", "right"), ("val BPB", "right"), ("test", "left"), ("diff (CI)", "right"), ("p", "right"),
                      ("Holm p", "right"), ("Welch p (Holm)", "right"), ("eff rank", "right"), ("tok/s", "right"), ("steps", "right")):
        t.add_column(col, justify=just)
    for a in rep["arms"]:
        c = a["comparison"]
        holm_p = fmt_p(c["p_holm"]) if c else ""
        if c and c["p_holm"] is not None and c["p_holm"] < alpha:
            holm_p = f"[bold]{holm_p}[/]"
        w = c["welch"] if c else None
        welch = f"{fmt_p(w['p'])} ({fmt_p(w['p_holm'])})" if w else ("NA" if c else "")
        t.add_row(
            arm_cell(a["name"]), str(a["n"]), fmt_mean_sd("val_bpb", a["val_bpb"]), (c["test"] or "none") if c else "",
            fmt_diff(c) if c else "[dim]reference[/]", fmt_p(c["p"]) if c else "", holm_p, welch,
            fmt_mean_sd("eff_rank", a["eff_rank"]), fmt_mean_sd("tok_per_s", a["tok_per_s"]), fmt_mean_sd("steps", a["steps"]),
        )
    console.print(t)
    for line in mde_lines(rep):
        console.print(f"[dim]{escape(line)}[/]" if line else "")
    if best_lines(rep):
        console.print("[dim]Some runs got worse before their end: report.md also compares each run's best val BPB (what train.keep_best keeps).[/]")

    _print_retrieval(rep, arm_cell)

    console.print(Text(f"verdicts (val BPB vs {ref}, Holm over {rep['comparison']['family']} comparisons, alpha = {alpha})", style="bold"))
    for a in rep["arms"]:
        if a["name"] != ref:
            v = a["verdict"]
            style = "red" if v.startswith("worse") else "green" if v.startswith("better") else "default"
            console.print(f"  {arm_cell(a['name'])}: [{style}]{escape(v)}[/]")

    if rep["excluded"]:
        e = Table(title="excluded runs (not averaged)", title_justify="left", title_style="bold red")
        for col in ("run", "status", "step", "reason"):
            e.add_column(col, justify="right" if col == "step" else "left")
        for x in rep["excluded"]:
            e.add_row(f"[{colours[x['arm']]}]{escape(x['name'])}[/]", f"[red]{escape(x['status'])}[/]", str(x["step"]), escape(x["reason"]))
        console.print(e)

    runs = Table(title="runs", title_justify="left")
    for col in ("run", "seed", "status", "step", "val BPB", "tok/s", "train s", "code"):
        runs.add_column(col, justify="left" if col in ("run", "status", "code") else "right")
    for a in rep["arms"]:
        for run in a["runs"]:
            st = run["status"]
            colour = status_style(st)
            runs.add_row(
                f"[{colours[a['name']]}]{escape(run['name'])}[/]", str(run["train_seed"]), f"[{colour}]{st}[/]", str(run["step"]),
                fmt_metric("val_bpb", run["val_bpb"]), fmt_metric("tok_per_s", run["tok_per_s"]), fmt_metric("train_time", run["train_time"]),
                escape(" + ".join(run["code"]) or "unknown"),
            )
    console.print(runs)
    if rep["code"]["warning"]:
        console.print(f"[bold yellow]warning[/]: {escape(rep['code']['warning'])}")

    series = {name: list(zip(c["steps"], c["mean"])) for name, c in rep["curves"].items() if c["steps"]}
    if series:
        console.print(Text("val BPB (mean over finished seeds) by step", style="bold"))
        for line in line_chart(series, colours, width=min(72, max(30, console.width - 12)), height=12):
            console.print(line)
        n_points = max(len(v) for v in series.values())
        if n_points < 3:
            every = rep["settings"].get("train.eval_every")
            console.print(f"[dim]only {n_points} eval point(s) per run (train.eval_every = {every}); "
                          "lower it with --set train.eval_every=N for a curve[/]")

    _print_pairing(rep)


def _print_retrieval(rep: dict[str, Any], arm_cell) -> None:
    from jepa_core.tools.ablate import fmt_retrieval

    horizons = sorted({h["horizon"] for a in rep["arms"] for h in a["retrieval"]})
    if horizons:
        any_copy = any(a["has_copy_control"] for a in rep["arms"])
        r = Table(title="retrieval top-1 per horizon" + (" (lift over the copy control)" if any_copy else ""), title_justify="left")
        r.add_column("arm")
        for h in horizons:
            r.add_column(f"h{h}", justify="right")
        for a in rep["arms"]:
            if a["retrieval"]:
                by_h = {h["horizon"]: h for h in a["retrieval"]}
                r.add_row(arm_cell(a["name"]), *[fmt_retrieval(by_h[h], a["has_copy_control"]) if h in by_h else "NA" for h in horizons])
        console.print(r)
        if not any_copy:
            console.print("[dim]no copy control in these runs' eval lines (retrieval_copy_top1_h*): no lift to show[/]")


def _print_pairing(rep: dict[str, Any]) -> None:
    """Whether the arms drew the same batches and started from the same weights, then the caveats."""
    from jepa_core.tools.ablate import data_order_text, init_text

    d = rep["data_order"]
    if d["ok"] is True and not d.get("expected"):
        n = {s["seed_index"]: max(s["batches"].values()) for s in d["per_seed"]}
        scope = "every arm drew identical batches per seed" if rep["complete"] else "the arms run so far drew identical batches"
        console.print(f"[green]data order verified[/]: {scope} ({', '.join(f's{i}: {k}' for i, k in n.items())} batches)")
    elif d["ok"] is not False:
        console.print(f"[green]data order verified[/]: {escape(data_order_text(d))}")
    elif d["ok"] is False:
        console.print(f"[bold red]data order MISMATCH[/]: {escape('; '.join(d['mismatches']))}")
    init = rep["init"]
    style = {True: "green", False: "bold red", None: "dim"}[init["ok"]]
    console.print(f"[{style}]initial weights[/]: {escape(init_text(init))}")
    console.print(Text("what this does not show", style="bold"))
    for c in rep["caveats"]:
        console.print(f"[dim]  - {escape(c)}[/]")


def line_chart(series: dict[str, list[tuple[float, float]]], colours: dict[str, str], width: int = 60, height: int = 12) -> list[Text]:
    """A small unicode line chart: one coloured trace per series, shared axes, a legend."""
    pts = [(x, y) for s in series.values() for x, y in s if math.isfinite(y)]
    if not pts:
        return []
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    grid: list[list[tuple[str, str] | None]] = [[None] * width for _ in range(height)]

    def col(x: float) -> int:
        return 0 if x1 == x0 else round((x - x0) / (x1 - x0) * (width - 1))

    def row(y: float) -> int:
        return min(height - 1, max(0, round((y1 - y) / (y1 - y0) * (height - 1))))

    for name, s in series.items():
        s = sorted((x, y) for x, y in s if math.isfinite(y))
        colour = colours.get(name, "white")
        # interpolate between eval points so the trace is continuous across columns
        for (xa, ya), (xb, yb) in zip(s, s[1:]):
            ca, cb = col(xa), col(xb)
            for c in range(ca, cb + 1):
                f = 0.0 if cb == ca else (c - ca) / (cb - ca)
                grid[row(ya + f * (yb - ya))][c] = ("·", colour)
        for x, y in s:
            grid[row(y)][col(x)] = ("●", colour)
    lines = []
    for r in range(height):
        label = y1 - r * (y1 - y0) / (height - 1)
        t = Text(f"{label:8.3f} │" if r in (0, height // 2, height - 1) else " " * 9 + "│", style="dim")
        for cell in grid[r]:
            t.append(cell[0] if cell else " ", style=cell[1] if cell else None)
        lines.append(t)
    axis = Text(" " * 9 + "└" + "─" * width, style="dim")
    lines.append(axis)
    left, right = f"step {x0:g}", f"{x1:g}"
    lines.append(Text(" " * 10 + left + " " * max(1, width - len(left) - len(right)) + right, style="dim"))
    legend = Text(" " * 10)
    for name in series:
        legend.append("● ", style=colours.get(name, "white"))
        legend.append(f"{name}   ")
    lines.append(legend)
    return lines
