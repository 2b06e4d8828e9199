"""A run's life on disk: claim the run directory, write its files, record start and end once, let go.

`RunSession` is entered before the first step and left after the last, on any
path out (a finished run, a stop, an exception). Only the main rank touches
files; on other ranks every method is a no-op except the callbacks' guards.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from jepa_core import rundir as rd
from jepa_core.config import config_to_toml
from jepa_core.errors import JepaError
from jepa_core.train.build import Run
from jepa_core.train.metrics import MetricsLogger

_HEARTBEAT_EVERY_S = 0.5


class RunSession:
    def __init__(self, run: Run, callbacks: Any):
        self.run, self.cb = run, callbacks
        self.is_main = run.dist.is_main
        self.config_toml = config_to_toml(run.cfg)
        self.logger: MetricsLogger | None = None
        # the run directory as claimed: every write into it goes through this (never recreated once gone)
        self.folder: rd.RunFolder | None = None
        self._lock = rd.RunLock(run.run_dir)
        self._ended = False
        self._swept: list[str] = []
        self._set_aside: list[str] = []
        self._last_beat = 0.0
        self.pid_left: str | None = None  # why train.pid could not be removed at the end, if it could not
        self.step = run.start_step  # the step the loop is at (run_end names it on any exit)
        self.alerted: set[str] = set()  # alert kinds already raised (each once per run)
        self.t_start = time.time()

    # ---- start

    def __enter__(self) -> "RunSession":
        run = self.run
        if self.is_main:
            claim_run_dir(run.run_dir, run.resume, self._lock)
        try:
            if self.is_main:
                self.folder = rd.RunFolder(run.run_dir)
            self.logger = MetricsLogger(run.cfg.log, run.run_dir, enabled=self.is_main, run_config=run.cfg.to_dict(), folder=self.folder)
            if self.is_main:
                self._write_run_files()
        except OSError as e:
            self._release()
            last = f"the last good checkpoint is {run.resume.weights}" if run.resume else "no checkpoint was written"
            raise JepaError(
                f"Cannot write the run directory {run.run_dir}: {e.filename or run.run_dir}: {e.strerror or e}"
                + (f" (errno {e.errno})" if e.errno else "") + f". Nothing was trained; {last}.",
                hint="Check free space and permissions, or choose another train.out_dir.",
            ) from None
        except BaseException:
            self._release()
            raise
        try:
            info = run.start_info()
            self.emit("event", run.start_step, event="run_start", **info, config=run.cfg.to_dict())
            if self._swept:
                self.emit("event", run.start_step, event="cleanup", removed=self._swept)
            if run.resume is not None:
                extra: dict[str, Any] = {}
                if run.resume.note:
                    extra["fallback"] = run.resume.note
                if self._set_aside:
                    extra["set_aside"] = self._set_aside
                if run.resume.unverified:
                    extra["unverified"] = list(run.resume.unverified)
                self.emit("event", run.start_step, event="resume", from_step=run.start_step, checkpoint=str(run.resume.weights), **extra)
            if self.is_main:
                self.cb.on_start(info)
            self.heartbeat(run.start_step, "compiling" if run.trainee.plan.compile else "starting", force=True)
        except BaseException as e:  # __exit__ is not called when __enter__ raises: end the run here
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def _write_run_files(self) -> None:
        """Set aside checkpoints that failed verification, sweep what killed or failed writes left, then the run's files."""
        run, folder = self.run, self.folder
        assert folder is not None
        # set aside first: a rejected checkpoint may be a half one, and is kept (renamed) for a look
        if run.resume is not None and run.resume.rejected:
            self._set_aside = rd.set_aside(run.resume.rejected)
        if run.resume is not None:  # a new run's folder holds nothing of a run: a `.x.tmp` there is someone else's
            self._swept = sorted(rd.sweep_temp_files(run.run_dir) + rd.sweep_half_checkpoints(run.run_dir))
        if run.resume is not None and run.resume.note:
            # correct latest.json now (it named a checkpoint that failed verification, or was unreadable
            # or missing), so that readers and a resume after a kill before the next checkpoint agree
            # with this run
            folder.write_text(f"{rd.CKPT_DIR}/{rd.LATEST}", rd.pointer_text(run.resume.step))
        # atomic: on resume these replace the run's own copies, which a failed write must not destroy
        folder.write_text(rd.CONFIG, self.config_toml)
        folder.write_bytes(rd.TOKENIZER, Path(run.prepared.tokenizer_path).read_bytes())
        folder.write_text(rd.PIDFILE, rd.pid_text())
        with contextlib.suppress(FileNotFoundError):
            (run.run_dir / rd.STOPFILE).unlink()

    # ---- during

    def emit(self, type_: str, step: int, **fields: Any) -> dict[str, Any]:
        assert self.logger is not None
        rec = self.logger.log(type_, step, **fields)
        if self.is_main:
            self.cb.on_record(rec)
        return rec

    @property
    def write_error(self) -> str | None:
        return self.logger.error if self.logger is not None else None

    @property
    def metrics_vanished(self) -> bool:
        """The write error is metrics.jsonl removed or replaced, the folder intact: a final checkpoint can still be written."""
        return self.logger is not None and self.logger.vanished

    def heartbeat(self, step: int, phase: str, force: bool = False) -> None:
        """A cheap liveness note for the dashboard (the step counter moves between log steps)."""
        now = time.monotonic()
        if self.folder is not None and (force or now - self._last_beat >= _HEARTBEAT_EVERY_S):
            self._last_beat = now
            # a missing heartbeat only makes the dashboard less lively; a vanished folder is the stop check's to report
            with contextlib.suppress(OSError):
                text = rd.heartbeat_text(step=step, max_steps=self.run.cfg.train.max_steps, phase=phase)
                self.folder.write_text(rd.HEARTBEAT, text, durable=False)

    # ---- end

    def end(self, step: int, status: str, **fields: Any) -> None:
        """run_end, exactly once, then let the directory go."""
        if self._ended:
            return
        self._ended = True
        try:
            self.emit("event", step, event="run_end", status=status, **fields)
            self.heartbeat(step, status, force=True)
        finally:
            self._release()

    def _release(self) -> None:
        if self.logger is not None:
            self.logger.close()
        if self.is_main:
            if self.folder is None or not self.folder.gone():  # at a path that is no longer the run's, touch nothing
                self.pid_left = rd.remove_pidfile(self.run.run_dir)
                with contextlib.suppress(OSError):
                    (self.run.run_dir / rd.STOPFILE).unlink()
            self._lock.release()

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._ended:  # an exception on the way out: record it, keep its traceback
            step = self.step
            msg = exc.message if isinstance(exc, JepaError) else f"{exc_type.__name__ if exc_type else 'unknown'}: {exc}"
            self.end(step, "failed", message=msg, step_reached=step)


def claim_run_dir(run_dir: Path, resume: rd.CheckpointRef | None, lock: rd.RunLock | None = None) -> None:
    """Refuse a run directory another trainer holds, or (without a resume) one that holds a run already,
    or a folder that is not a run but holds a file a run would write (`rundir.refuse_foreign_folder`).

    With `lock`, take it and keep it (the trainer's claim, for its whole life);
    without, only check (an early refusal before data and model are built).
    A pid file left by a dead trainer never blocks: the OS lock is the authority.
    """
    run_dir = Path(run_dir)
    existing = resume is None and rd.holds_run(run_dir)
    if resume is None and not existing:
        # before anything is written; train.log is the dashboard's, made after its own check (render/train.py)
        rd.refuse_foreign_folder(run_dir, allow=(rd.LOG_FILE,))
    probe = lock is None
    lock = lock or rd.RunLock(run_dir)
    existed = run_dir.is_dir()  # a read-only run directory fails here too, and it was not being created
    try:
        if probe:
            lock.probe()  # a busy directory is reported as busy, whatever else is true of it
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
    except OSError as e:
        raise JepaError(
            f"Cannot {'write to' if existed else 'create'} the run directory {run_dir}: {e.strerror or e}"
            + (f" (errno {e.errno})" if e.errno else "") + ".",
            hint="Check free space and permissions, or choose another train.out_dir / --run-dir.",
        ) from None
    if existing:
        if not probe:
            lock.release()
        if not rd.list_checkpoints(run_dir / rd.CKPT_DIR):  # a resume would be refused: do not suggest one
            raise RunTaken(
                f"{run_dir} already holds a run, one that stopped before its first checkpoint: there is nothing in it to "
                "resume, and a new run there would mix its records with that run's.",
                hint="Start it again in a new folder: drop --run-dir (or give it a new folder).", run_dir=run_dir)
        raise RunTaken(
            f"{run_dir} already holds a run; a new run there would rotate away its checkpoints.",
            hint=f"Continue it with `jepa train --resume {run_dir}`, or drop --run-dir to start a new run in its own directory.",
            run_dir=run_dir,
        )


class RunTaken(JepaError):
    """A new run was pointed at a directory that holds one (`--run-dir RUN`); `run_dir` names it, so that the CLI
    can give the command that starts such a run again when it has no checkpoint to resume."""

    def __init__(self, message: str, hint: str | None = None, *, run_dir: Path | None = None):
        super().__init__(message, hint=hint)
        self.run_dir = Path(run_dir) if run_dir is not None else None  # None only when unpickled
