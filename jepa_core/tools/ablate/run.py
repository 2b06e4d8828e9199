"""Running an ablation: every planned run trained in turn through `train(...)` (or `jobs.run_parallel`
with --jobs N), its batches hashed as they are drawn, then the report written."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jepa_core.errors import JepaError
from jepa_core.rundir.status import SETTLED
from jepa_core.rundir.summary import read_records, summarize_run

from .plan import BATCH_LOG, AblationPlan, RunSpec
from .report import write_report

# --------------------------------------------------------------------------- running


def batch_digest(x, y) -> str:
    h = hashlib.sha256()
    for t in (x, y):
        a = t.detach().cpu().contiguous().numpy()
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


class RecordingCallbacks:
    """Train callbacks that log a digest of every training batch to run_dir/batches.txt
    (one line "index digest"), then pass every hook on to `inner`."""

    def __init__(self, run_dir: Path, inner=None):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self._log = open(Path(run_dir) / BATCH_LOG, "a", encoding="utf-8", buffering=1)
        self._inner = inner

    def on_batch(self, index: int, x, y) -> None:
        self._log.write(f"{index} {batch_digest(x, y)}\n")
        if self._inner is not None and hasattr(self._inner, "on_batch"):
            self._inner.on_batch(index, x, y)

    def __getattr__(self, name: str):
        # on_prepare / on_start / on_step / on_record: the inner callbacks, or no-ops
        inner = self.__dict__.get("_inner")
        if inner is not None and hasattr(inner, name):
            return getattr(inner, name)
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def close(self) -> None:
        self._log.close()


class AblationCallbacks:
    """Progress hooks for the CLI; the defaults do nothing."""

    def on_begin(self, plan: AblationPlan, todo: list[RunSpec]) -> None:
        pass

    def on_prepare(self, stage: str, done: int, total: int) -> None:  # data preparation, before the first run
        pass

    def on_skip(self, spec: RunSpec, status: str) -> None:
        pass

    def on_jobs(self, jobs: int, threads: int, gpus: tuple[str, ...]) -> None:  # runs at once, only when more than one
        pass

    def on_run_start(self, spec: RunSpec, position: int, total: int, action: str) -> None:
        pass

    def train_callbacks(self, spec: RunSpec):  # -> TrainCallbacks | None
        return None

    def on_run_end(self, spec: RunSpec, status: str, message: str) -> None:
        pass


@dataclass
class AblationOutcome:
    plan: AblationPlan
    report: dict[str, Any]
    stopped: bool  # Ctrl-C / stop file: the ablation did not run every run
    failed: list[str]  # run names that ended "failed"

    @property
    def data_order_ok(self) -> bool | None:
        return self.report["data_order"]["ok"]


def _stop_flag():
    """Ctrl-C between runs stops the ablation before the next run (inside a run, the trainer's own
    handler ends the run with a checkpoint and restores this one afterwards); a second Ctrl-C aborts."""
    import signal

    from jepa_core.train.stops import SignalFlag

    return SignalFlag(signals=(signal.SIGINT,))


def aborted_message(e: KeyboardInterrupt) -> str:
    """Why a run ended with a KeyboardInterrupt out of train(): a stop while it was being built, or a second Ctrl-C."""
    from jepa_core.train.stops import BuildInterrupted

    if isinstance(e, BuildInterrupted):
        return f"stopped by {e.args[0] if e.args else 'Ctrl-C'} while the run was being built, before training"
    return "aborted (second Ctrl-C)"


def remaining_budget(run_dir: Path, step: int, budget_s: float) -> float:
    """Seconds of the time budget a run resumed at `step` has left.

    The trainer counts its budget from zero in every process, so a resumed run would get
    the whole budget again; this is the budget minus the step time spent up to `step`
    (steps replayed after the checkpoint are not counted, they are trained again).
    """
    recs = read_records(run_dir)
    # a resume marker cuts the record of time at the checkpoint, as the next segment will
    spent = summarize_run(run_dir, recs + [{"type": "event", "event": "resume", "step": step, "from_step": step}]).train_time_to_step or 0.0
    # at least a millisecond: 0 would mean "no budget" to the trainer
    return max(1e-3, budget_s - spent)


def _prepare_run(plan: AblationPlan, spec: RunSpec):
    """(config, resume ref or None, action) for a run that is not done yet."""
    from jepa_core.rundir import read_latest
    from jepa_core.train.loop import resolve_resume

    cfg = plan.config_for(spec.arm, spec.seed_index)
    run_dir = plan.run_dir(spec)
    ref = read_latest(run_dir) if run_dir.is_dir() else None
    if ref is not None:
        action = f"resume from step {ref.step}"
        if plan.budget_s > 0:
            left = remaining_budget(run_dir, ref.step, plan.budget_s)
            cfg = plan.config_for(spec.arm, spec.seed_index, [f"train.time_budget_s={left!r}"])
            action += f" ({left:.1f} s of the budget left)"
        cfg, ref = resolve_resume(str(run_dir), cfg, None)
        return cfg, ref, action
    if run_dir.exists():
        # it died before its first checkpoint: nothing to resume, start it over
        shutil.rmtree(run_dir)
        return cfg, None, "restart (no checkpoint)"
    return cfg, None, "start"


def run_ablation(plan: AblationPlan, callbacks: AblationCallbacks | None = None, jobs: int = 1) -> AblationOutcome:
    """Run (or continue) every run of the plan, `jobs` at a time (1: in order, in this process),
    then write report.json and report.md."""
    from .jobs import check_jobs

    check_jobs(jobs)
    cb = callbacks or AblationCallbacks()
    plan.save()
    todo = []
    for spec in plan.runs():
        s = summarize_run(plan.run_dir(spec))
        plan.state[spec.name] = {"status": s.status, "step": s.step, "message": s.message}
        if s.status not in SETTLED:
            todo.append(spec)
    plan.save()
    cb.on_begin(plan, todo)
    for spec in plan.runs():
        if spec not in todo:
            cb.on_skip(spec, plan.state[spec.name]["status"])
    if todo:
        from jepa_core.data import ensure_prepared
        from jepa_core.rundir import read_latest
        from jepa_core.train.init_from import data_config
        from jepa_core.train.stops import while_building

        # prepared once up front, so no run's wall time includes tokenizing the data (with the
        # tokenizer of the weights the arms start from, when they start from some)
        first = plan.run_dir(todo[0])
        cfg = plan.config_for(todo[0].arm, todo[0].seed_index)
        with while_building():
            ensure_prepared(data_config(cfg, None, read_latest(first) if first.is_dir() else None), progress=cb.on_prepare)
    ran = None
    if jobs > 1 and len(todo) > 1:
        from .jobs import run_parallel

        ran = run_parallel(plan, todo, cb, jobs)
    stopped, failed = ran if ran is not None else _run_in_process(plan, todo, cb)
    report = write_report(plan.dir)
    return AblationOutcome(plan=plan, report=report, stopped=stopped, failed=failed)


def _run_in_process(plan: AblationPlan, todo: list[RunSpec], cb: AblationCallbacks) -> tuple[bool, list[str]]:
    """The runs one after another through `train(...)` in this process: (stopped, failed run names)."""
    from jepa_core.train.loop import train

    stopped, failed = False, []
    with _stop_flag() as flag:
        for pos, spec in enumerate(todo):
            if flag.requested:
                stopped = True
                break
            cfg, ref, action = _prepare_run(plan, spec)
            run_dir = plan.run_dir(spec)
            plan.state[spec.name] = {"status": "running", "step": ref.step if ref else 0, "message": "", "action": action}
            plan.save()
            cb.on_run_start(spec, pos, len(todo), action)
            try:
                recorder = RecordingCallbacks(run_dir, cb.train_callbacks(spec))
                try:
                    result = train(cfg, run_dir=run_dir, resume=ref, callbacks=recorder, handle_signals=True, overrides=plan.overrides_for(spec))
                finally:
                    recorder.close()
                status, step, message = result.status, result.step, result.message
            except JepaError as e:
                plan.state[spec.name] = {"status": "failed", "step": 0, "message": e.message, "action": action}
                plan.save()
                raise
            except KeyboardInterrupt as e:
                status, step, message = "interrupted", plan.state[spec.name]["step"], aborted_message(e)
            except Exception as e:  # a bug in one arm's run; record it and go on with the others
                status, step, message = "failed", 0, f"{type(e).__name__}: {e}"
            plan.state[spec.name] = {"status": status, "step": step, "message": message, "action": action}
            plan.save()
            cb.on_run_end(spec, status, message)
            if status == "failed":
                failed.append(spec.name)
            if status == "interrupted":
                stopped = True
                break
    return stopped, failed
