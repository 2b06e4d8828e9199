"""`jepa train`: resolve the config, then either the dashboard (a detached
training process watched by Textual) or plain Rich progress in this process."""

from __future__ import annotations

import re
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.markup import escape

from jepa_cli.console import console, err_console, quiet_library_warnings
from jepa_core.errors import ConfigError, JepaError
from jepa_core.rundir.status import COMPLETED, status_style


def _fmt(v: Any, spec: str = ".4f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and v is not None else "-"


def _duration(s: float | None) -> str:
    if s is None or s != s or s == float("inf"):
        return "-"
    s = int(round(max(0.0, s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class _Rate:
    """Steps per second since the first step finished (compile time is not training speed)."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.s0 = 0
        self.t = 0.0
        self.s = 0

    def step(self, step: int) -> None:
        now = time.monotonic()
        if self.t0 is None:
            self.t0, self.s0 = now, step
        self.t, self.s = now, step

    def eta(self, max_steps: int) -> float | None:
        if self.t0 is None or self.s <= self.s0 or self.t <= self.t0:
            return None
        return (max_steps - self.s) / ((self.s - self.s0) / (self.t - self.t0))


class PlainProgress:
    """Progress without the dashboard: a live Rich line on a terminal, log lines otherwise.

    With torch.compile the first step compiles the model (a minute under load): a
    terminal shows "compiling (first step)" with a running clock, a pipe gets a line
    when it starts, one every `compile_note_every` seconds while it lasts, and one
    when it is done, so the output never looks stuck.
    """

    compile_note_every = 30.0

    def __init__(self, live: bool):
        self.live = live
        self.progress = None
        self.task = None
        self.last: dict[str, Any] = {}
        self.start_step = 0
        self.max_steps = 0
        self.rate = _Rate()
        self.compiling_since: float | None = None
        self._compile_done = threading.Event()
        self._ticker: threading.Thread | None = None
        self.stages: set[str] = set()  # data preparation stages seen (what an interrupt before training left)
        self.started = False  # on_start came: the run is open, and a stop from here on ends it with a checkpoint

    # -- TrainCallbacks protocol
    def on_prepare(self, stage: str, done: int, total: int) -> None:
        self.stages.add(stage)
        if total and done == 0:
            err_console.print(f"[dim]preparing data: {stage}...[/]")

    def on_start(self, info: dict[str, Any]) -> None:
        self.started = True
        p = info["params"]
        console.print(
            f"[bold]{info['run_name']}[/]  profile [cyan]{info['profile']}[/]  device {info['device']} ({info['precision']})  "
            f"params {p.get('total_trainable', 0):,}  vocab {info['vocab_size']}  "
            f"{'LM-only baseline' if info['baseline'] else 'JEPA'}"
        )
        console.print(f"[dim]run dir: {info['run_dir']}  (watch it with: jepa watch {info['run_dir']})[/]")
        if info.get("precision_why"):
            console.print(f"[dim]precision {info['precision']}: {info['precision_why']}[/]")
        for note in info.get("notes", []):
            console.print(f"[yellow]note:[/] {note}")
        self.start_step = info["start_step"]
        self.max_steps = info["max_steps"]
        if info.get("compile") and info["start_step"] < info["max_steps"]:
            self.compiling_since = time.monotonic()
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold blue]{task.description}"),
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
            desc = "compiling (first step)..." if self.compiling_since is not None else "train"
            self.task = self.progress.add_task(desc, total=info["max_steps"], completed=info["start_step"], stats="")
        elif self.compiling_since is not None:
            console.print("compiling the model (torch.compile; the first step takes a while)...")
            self._ticker = threading.Thread(target=self._compile_ticker, name="jepa-compile-note", daemon=True)
            self._ticker.start()

    def _compile_ticker(self) -> None:
        while not self._compile_done.wait(self.compile_note_every):
            if self.compiling_since is None:
                return
            console.print(f"still compiling... {time.monotonic() - self.compiling_since:.0f} s")

    def on_step(self, step: int, max_steps: int) -> None:
        self.max_steps = max_steps
        self.rate.step(step)
        if self.compiling_since is not None:
            took = time.monotonic() - self.compiling_since
            self.compiling_since = None
            self._compile_done.set()
            if self.progress is not None:
                self.progress.update(self.task, description="train")
            self._print(f"[dim]compiled; first step done in {took:.1f} s[/]")
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def progress_line(self, r: dict[str, Any]) -> str:
        """`step 120/960 (12%)  loss 5.1234 lm 4.9 jepa 1.2  12,345 tok/s  ETA 1:52` (piped output)."""
        step = r.get("step", 0)
        ms = self.max_steps
        head = f"step {step}/{ms} ({100 * step / ms:.0f}%)" if ms else f"step {step}"
        return f"{head}  {self._stats(r)}  ETA {_duration(self.rate.eta(ms) if ms else None)}"

    @staticmethod
    def _stats(r: dict[str, Any]) -> str:
        stats = f"loss {_fmt(r.get('loss'))} lm {_fmt(r.get('lm_loss'))}"
        if r.get("jepa_loss") is not None:
            stats += f" jepa {_fmt(r.get('jepa_loss'))}"
        return stats + f"  {_fmt(r.get('tok_per_s'), ',.0f')} tok/s"

    def on_record(self, r: dict[str, Any]) -> None:
        kind = r.get("type")
        if kind == "train":
            self.last = r
            if self.progress is not None:
                self.progress.update(self.task, stats=self._stats(r))
            else:
                console.print(self.progress_line(r))
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
        self._compile_done.set()
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _build_child_argv(profile: str | None, overrides: list[str], resume: str | None, run_dir: Path, force: bool = False,
                      init_from: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "jepa_cli", "train", "--no-tui", "--run-dir", str(run_dir)]
    if force:
        argv.append("--force")
    if profile:
        argv += ["--profile", profile]
    if init_from:
        argv += ["--init-from", init_from]
    for o in overrides:
        argv += ["--set", o]
    if resume:
        argv += ["--resume", str(run_dir)]
    return argv


# --------------------------------------------------------------------------- resume: no dead ends


def _out_dir(profile_cfg: Any, overrides: list[str]) -> str:
    """Where runs live: the profile's train.out_dir, or a --set of it, else runs/."""
    from jepa_core.config import parse_override

    out = profile_cfg.train.out_dir if profile_cfg is not None else "runs"
    for o in overrides:
        try:
            parts, value = parse_override(o)
        except JepaError:
            continue
        if parts == ["train", "out_dir"] and isinstance(value, str):
            out = value
    return out


def _cmd(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


def fresh_start_command(run_dir: Path) -> str | None:
    """`jepa train --profile P --set ...`: a new run like `run_dir`'s, from its config.toml, in the same folder."""
    import json
    import os
    import tomllib

    from jepa_core import rundir as rd
    from jepa_core.config import load_config
    from jepa_core.rundir.summary import read_records
    from jepa_core.rundir.listing import overrides_vs_profile, recorded_overrides

    try:
        cfg = tomllib.loads((Path(run_dir) / rd.CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    profile = cfg.get("name")
    if not isinstance(profile, str):
        return None
    sets = recorded_overrides(read_records(run_dir))
    if sets is None:
        sets = overrides_vs_profile(cfg, profile) or []
    # overrides_vs_profile leaves train.out_dir out (where a run lives is not what it is), but a
    # restart that drops it lands under ./runs, away from the run it replaces: beside that one instead
    try:
        base = load_config(profile).train.out_dir
    except JepaError:
        base = "runs"
    here = Path(run_dir).parent
    if os.path.abspath(here) != os.path.abspath(base) and not any(s.startswith("train.out_dir=") for s in sets):
        sets.append(f"train.out_dir={json.dumps(str(here))}")
    words = ["jepa", "train", "--profile", profile]
    for s in sets:
        words += ["--set", s]
    return _cmd(*words)


def _resume_refusal(e: JepaError, resume: str, profile: str | None, overrides: list[str], out_dir: str) -> JepaError:
    """The same error, with a command that works in its hint when it has none."""
    from jepa_core import rundir as rd

    message = e.message if e.message.startswith("Cannot resume") else f"Cannot resume: {e.message[0].lower()}{e.message[1:]}"
    # a hint that already gives a command to run (not just names one, as "`jepa train`" does) is kept
    if e.hint and re.search(r"jepa (train|watch|inspect) \S", e.hint):
        return type(e)(message, hint=e.hint)
    fixes: list[str] = []
    target = Path(resume)
    if resume != "auto" and target.is_dir() and rd.holds_run(target) and not rd.list_checkpoints(target / rd.CKPT_DIR):
        cmd = fresh_start_command(target)
        if cmd:
            fixes.append(f"it stopped before its first checkpoint; start it again with: {cmd}")
    newest = rd.newest_run(out_dir)
    if newest is not None and (resume == "auto" or not target.exists() or newest.resolve() != target.resolve()):
        fixes.append(f"continue the newest run that has a checkpoint: {_cmd('jepa', 'train', '--resume', str(newest))}")
    if not fixes:
        words = ["jepa", "train", "--profile", profile or "tiny"]
        for o in overrides:
            words += ["--set", o]
        fixes.append(f"start a new run: {_cmd(*words)}")
    hint = "; or ".join(fixes)
    # no full stop after a command: it would be copied with the path
    return type(e)(message, hint=hint[0].upper() + hint[1:])


def _with_a_restart(e: JepaError) -> JepaError:
    """`--run-dir RUN` on a run that stopped before its first checkpoint: the command that starts it again, which
    is what `jepa train --resume RUN` would say too (a resume of it is refused)."""
    from jepa_core import rundir as rd
    from jepa_core.train.session import RunTaken

    if not isinstance(e, RunTaken) or e.run_dir is None or rd.list_checkpoints(e.run_dir / rd.CKPT_DIR):
        return e
    cmd = fresh_start_command(e.run_dir)
    return e if cmd is None else RunTaken(e.message, hint=f"Start it again, in a new folder beside it, with: {cmd}", run_dir=e.run_dir)


def _interrupted_before_training(e: KeyboardInterrupt, progress: PlainProgress | None = None, out_guard=None, cfg=None) -> NoReturn:
    """Ctrl-C (or a hang-up, SIGTERM) before the first step: said, from the first second (loading torch) on."""
    import contextlib
    import os

    from jepa_core.train.stops import BuildInterrupted

    with out_guard or contextlib.nullcontext():  # a hung-up terminal loses the line; exit code 130 still tells
        if progress is not None:
            progress.close()
        how = f" ({e.args[0]})" if e.args and isinstance(e.args[0], str) else ""  # SignalsRaise names SIGHUP / SIGTERM
        said = f"[yellow]interrupted{how}[/] before training"
        if isinstance(e, BuildInterrupted):
            said += ", while the run was being built"
        said += ": nothing was trained"
        if progress is not None and "encode" in progress.stages and cfg is not None:
            from jepa_core.data.prepare import kept_when_interrupted

            said += f"; of the data preparation, {kept_when_interrupted(cfg.data)[1]}"
        if os.environ.get("RANK", "0") == "0":
            err_console.print(f"{said}. Run the same command again.")
    raise typer.Exit(130) from None


def _refuse_empty(profile: str | None, resume: str | None, run_dir: str | None) -> None:
    """`--profile ''`, `--resume ''`, `--run-dir ''` (an unset shell variable, usually): named, not guessed at.
    An empty --run-dir would be the current folder, an empty --profile or --resume no option at all."""
    from jepa_core.profiles import list_profiles

    fixes = {
        "--profile": f"Name a profile ({', '.join(list_profiles())}) or a .toml file.",
        "--resume": "Name a run directory (`jepa runs` lists them) or a checkpoint file, or use --resume auto.",
        "--run-dir": "Name a new or empty folder, or drop --run-dir to start the run under train.out_dir.",
    }
    for option, value in (("--profile", profile), ("--resume", resume), ("--run-dir", run_dir)):
        if value is not None and not value.strip():
            what = "empty" if not value else "blank"
            raise ConfigError(f"{option} {value!r} names nothing: it is {what} (an unset shell variable?).", hint=fixes[option])


def _resolve_config(profile: str | None, overrides: list[str], resume: str | None, init_from: str | None, run_dir: str | None):
    """(config, resume checkpoint or None, the --set values to record) for `jepa train`'s options;
    a refused resume names a command that works."""
    from jepa_core.config import load_config

    quiet_library_warnings()
    _refuse_empty(profile, resume, run_dir)
    if init_from is not None and resume is not None:
        raise ConfigError(
            "--init-from and --resume cannot be used together: --init-from starts a new run from a source's weights "
            "(step 0, a fresh optimizer), --resume continues a run where its checkpoint left it.",
            hint=f"To continue a run (one started from a source too), use only --resume {resume}; "
            f"to start a new run from {init_from}, use only --init-from.",
        )
    if profile is None and resume is None and init_from is None:
        from jepa_core.profiles import list_profiles

        raise ConfigError(
            "`jepa train` needs --profile NAME (or --resume RUN_DIR / --resume auto, or --init-from RUN).",
            hint=f"Try `jepa train --profile tiny`. Profiles: {', '.join(list_profiles())}.",
        )
    if init_from is not None:
        import json

        # recorded with the --set values (run_start), so `jepa runs` and a restart command keep it
        overrides = [*overrides, f"train.init_from={json.dumps(init_from)}"]
    if init_from is not None and profile is None:
        from jepa_core.train.init_from import config_from_source

        cfg = config_from_source(init_from, overrides)
    else:
        cfg = load_config(profile, overrides) if profile else None
    ref = None
    if resume:
        from jepa_core import rundir as rd
        from jepa_core.train.loop import resolve_resume

        out_dir = _out_dir(cfg, overrides)
        target = resume
        try:
            if resume == "auto" and profile is None:
                # the newest run of any profile, under the out_dir a --set may name
                newest = rd.newest_run(out_dir)
                if newest is None:
                    from jepa_core.errors import CheckpointError

                    raise CheckpointError(f"--resume auto found no run with a checkpoint under {out_dir}/.")
                target = str(newest)
            cfg, ref = resolve_resume(target, cfg, profile, overrides)
        except JepaError as e:
            raise _resume_refusal(e, resume, profile, overrides, out_dir) from None
        if resume == "auto" or ref.note:
            err_console.print(f"[dim]resuming {escape(str(ref.run_dir))} from step {ref.step}[/]")
        # a checkpoint other than the one latest.json names (or none named): which, and why; one without a digest
        for note in filter(None, (ref.note, rd.unverified_note(ref))):
            err_console.print(f"[yellow]note:[/] {escape(note)}")
    assert cfg is not None  # --profile, --resume or --init-from gave it (empty ones are refused before)
    return cfg, ref, overrides


def run_train(
    profile: str | None, overrides: list[str], resume: str | None, run_dir: str | Path | None, tui: bool | None, force: bool = False,
    init_from: str | None = None,
) -> None:
    import os

    child_overrides = overrides  # the dashboard's trainer gets the options as typed, --init-from included
    # from here to the first step, a Ctrl-C is said (Typer would end the command with 130 and no word); loading the
    # config and, for a resume, torch takes a second or more
    try:
        cfg, ref, overrides = _resolve_config(profile, overrides, resume, init_from, None if run_dir is None else str(run_dir))
    except KeyboardInterrupt as e:
        _interrupted_before_training(e)
    run_dir = None if run_dir is None else Path(run_dir)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if tui is None:
        tui = sys.stdout.isatty() and sys.stdin.isatty() and not distributed
    if tui and not distributed:
        from jepa_core.rundir import new_run_dir

        if ref is None:
            from jepa_core.train.init_from import check_config

            check_config(cfg)  # a source that cannot be used is said here, not in the dashboard
        target_dir = ref.run_dir if ref is not None else (run_dir or new_run_dir(cfg.train.out_dir, cfg.name))
        if ref is None:
            from jepa_core.rundir import holds_run, refuse_foreign_folder, refuse_nested_run

            # here, before the mkdir: the trainer child would refuse too, but only after an empty folder was left in the old run
            refuse_nested_run(target_dir, out_dir=None if run_dir else cfg.train.out_dir)
            if not holds_run(target_dir):  # train.log included: the child trainer's check allows the one made below
                refuse_foreign_folder(target_dir)
        target_dir.mkdir(parents=True, exist_ok=True)
        from jepa_cli.tui.launch import train_with_dashboard

        code = train_with_dashboard(_build_child_argv(profile, child_overrides, resume and str(target_dir), target_dir, force, init_from), target_dir)
        raise typer.Exit(code)

    live = sys.stdout.isatty() and not distributed
    progress = PlainProgress(live=live)
    # a closed or broken stdout/stderr (`| head -1`, `>&-`, a hung-up terminal) costs the display only
    from jepa_cli.streams import GuardedCallbacks, guard

    out_guard = guard(console, err_console)
    t0 = time.time()
    try:
        from jepa_core.train.loop import train  # torch: the first second or two of a new run

        result = train(cfg, run_dir=run_dir, resume=ref, callbacks=GuardedCallbacks(progress, console, err_console), force_memory=force,
                       overrides=overrides)
    except KeyboardInterrupt as e:  # BuildInterrupted, or one before the build began (loading torch)
        if progress.started:  # a second Ctrl-C once the run was open: the run's own end said what it could
            raise
        _interrupted_before_training(e, progress, out_guard, cfg)
    except JepaError as e:
        better = _with_a_restart(e)
        if better is e:
            raise
        raise better from None
    finally:
        with out_guard:
            progress.close()
    if int(os.environ.get("RANK", "0")) != 0:
        raise typer.Exit(result.exit_code)
    with out_guard:  # the summary is lost with the stream; the exit code still says how it ended
        ev = result.last_eval
        colour = status_style(result.status)
        console.print(
            f"[bold {colour}]{result.status}[/] at step {result.step} in {time.time() - t0:.1f} s "
            f"({result.tok_per_s:,.0f} tok/s)"
            + (f"; val_loss {_fmt(ev.get('val_loss'))}, val_bpb {_fmt(ev.get('val_bpb'))}" if ev else "")
        )
        if result.message:
            console.print(f"[dim]{result.message}[/]")
        if result.last_checkpoint:
            run_q = shlex.quote(str(result.run_dir))
            nexts = [f"inspect: jepa inspect {run_q}", f"sample: jepa sample {run_q}"]
            # the trainer's message already says how to resume an interrupted run: say it once
            if result.status in COMPLETED:
                nexts.append(f"train longer: jepa train --resume {run_q} --set train.max_steps={2 * result.step}")
            elif "jepa train --resume" not in (result.message or ""):
                nexts.append(f"resume: jepa train --resume {run_q}")
            console.print("[dim]" + "   ".join(nexts) + "[/]")
    raise typer.Exit(result.exit_code)
