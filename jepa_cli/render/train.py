"""`jepa train`: resolve the config, then either the dashboard (a detached
training process watched by Textual) or plain Rich progress in this process."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from jepa_cli.console import console, err_console
from jepa_core.errors import ConfigError


def _fmt(v: Any, spec: str = ".4f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and v is not None else "-"


class PlainProgress:
    """Progress without the dashboard: a live Rich line on a terminal, log lines otherwise."""

    def __init__(self, live: bool):
        self.live = live
        self.progress = None
        self.task = None
        self.last: dict[str, Any] = {}
        self.start_step = 0

    # -- TrainCallbacks protocol
    def on_prepare(self, stage: str, done: int, total: int) -> None:
        if total and done == 0:
            err_console.print(f"[dim]preparing data: {stage}...[/]")

    def on_start(self, info: dict[str, Any]) -> None:
        p = info["params"]
        console.print(
            f"[bold]{info['run_name']}[/]  profile [cyan]{info['profile']}[/]  device {info['device']} ({info['precision']})  "
            f"params {p.get('total_trainable', 0):,}  vocab {info['vocab_size']}  "
            f"{'LM-only baseline' if info['baseline'] else 'JEPA'}"
        )
        console.print(f"[dim]run dir: {info['run_dir']}  (watch it with: jepa watch {info['run_dir']})[/]")
        for note in info.get("notes", []):
            console.print(f"[yellow]note:[/] {note}")
        self.start_step = info["start_step"]
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold blue]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=info["max_steps"], completed=info["start_step"], stats="")

    def on_step(self, step: int, max_steps: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def on_record(self, r: dict[str, Any]) -> None:
        kind = r.get("type")
        if kind == "train":
            self.last = r
            stats = f"loss {_fmt(r.get('loss'))} lm {_fmt(r.get('lm_loss'))}"
            if r.get("jepa_loss") is not None:
                stats += f" jepa {_fmt(r.get('jepa_loss'))}"
            stats += f" {_fmt(r.get('tok_per_s'), ',.0f')} tok/s"
            if self.progress is not None:
                self.progress.update(self.task, stats=stats)
            else:
                console.print(f"step {r['step']:>6}  {stats}")
        elif kind == "eval":
            line = f"[green]eval[/] step {r['step']}: val_loss {_fmt(r.get('val_loss'))}  val_bpb {_fmt(r.get('val_bpb'))}  ppl {_fmt(r.get('val_ppl'), '.1f')}"
            if "eff_rank" in r:
                line += f"  eff_rank {_fmt(r.get('eff_rank'), '.1f')}"
            self._print(line)
        elif kind == "event":
            ev = r.get("event")
            if ev == "alert":
                self._print(f"[bold red]alert[/] ({r.get('kind')}): {r.get('message')}")
            elif ev == "checkpoint":
                self._print(f"[dim]checkpoint {r.get('path')}[/]")

    def _print(self, line: str) -> None:
        (self.progress.console if self.progress is not None else console).print(line)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _build_child_argv(profile: str | None, overrides: list[str], resume: str | None, run_dir: Path, force: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "jepa_cli", "train", "--no-tui", "--run-dir", str(run_dir)]
    if force:
        argv.append("--force")
    if profile:
        argv += ["--profile", profile]
    for o in overrides:
        argv += ["--set", o]
    if resume:
        argv += ["--resume", str(run_dir)]
    return argv


def run_train(
    profile: str | None, overrides: list[str], resume: str | None, run_dir: Path | None, tui: bool | None, force: bool = False
) -> None:
    import os

    from jepa_core.config import load_config

    if profile is None and resume is None:
        from jepa_core.profiles import list_profiles

        raise ConfigError(
            "`jepa train` needs --profile NAME (or --resume RUN_DIR).",
            hint=f"Try `jepa train --profile tiny`. Profiles: {', '.join(list_profiles())}.",
        )
    cfg = load_config(profile, overrides) if profile else None
    ref = None
    if resume:
        from jepa_core.train.loop import resolve_resume

        cfg, ref = resolve_resume(resume, cfg, profile, overrides)
    assert cfg is not None

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if tui is None:
        tui = sys.stdout.isatty() and sys.stdin.isatty() and not distributed
    if tui and not distributed:
        from jepa_core.rundir import new_run_dir

        target = ref.run_dir if ref is not None else (run_dir or new_run_dir(cfg.train.out_dir, cfg.name))
        target.mkdir(parents=True, exist_ok=True)
        from jepa_cli.tui.launch import train_with_dashboard

        code = train_with_dashboard(_build_child_argv(profile, overrides, resume and str(target), target, force), target)
        raise typer.Exit(code)

    from jepa_core.train.loop import train

    live = sys.stdout.isatty() and not distributed
    progress = PlainProgress(live=live)
    # a closed or broken stdout/stderr (`| head -1`, `>&-`, a hung-up terminal) costs the display only
    from jepa_cli.streams import GuardedCallbacks, guard

    out_guard = guard(console, err_console)
    t0 = time.time()
    try:
        result = train(cfg, run_dir=run_dir, resume=ref, callbacks=GuardedCallbacks(progress, console, err_console), force_memory=force)
    finally:
        with out_guard:
            progress.close()
    if int(os.environ.get("RANK", "0")) != 0:
        raise typer.Exit(result.exit_code)
    with out_guard:  # the summary is lost with the stream; the exit code still says how it ended
        ev = result.last_eval
        colour = {"finished": "green", "interrupted": "yellow"}.get(result.status, "red")
        console.print(
            f"[bold {colour}]{result.status}[/] at step {result.step} in {time.time() - t0:.1f} s "
            f"({result.tok_per_s:,.0f} tok/s)"
            + (f"; val_loss {_fmt(ev.get('val_loss'))}, val_bpb {_fmt(ev.get('val_bpb'))}" if ev else "")
        )
        if result.message:
            console.print(f"[dim]{result.message}[/]")
        if result.last_checkpoint:
            console.print(f"[dim]inspect: jepa inspect {result.run_dir}   resume: jepa train --resume {result.run_dir}[/]")
    raise typer.Exit(result.exit_code)
