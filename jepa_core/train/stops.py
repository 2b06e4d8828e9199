"""When a run stops early, decided once per step for all ranks together.

Reasons, most severe first: a write failed (a checkpoint, a metrics line, or the
run directory vanished), the loss became non-finite, a stop was asked for
(Ctrl-C, SIGTERM, SIGHUP, the `stop` file, `stop_after`), the time budget ran
out. Each rank contributes what it sees and one all-reduce combines them, so
every rank leaves at the same step with the same status.
"""

from __future__ import annotations

import math
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from jepa_core.config import TrainConfig
from jepa_core.rundir import STOPFILE, RunFolder

_STOP_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


def ignored(sig: int) -> bool:
    """True when `sig` is ignored now: as `nohup` leaves SIGHUP, and a shell leaves SIGINT for a
    background job of a script. Whoever started the process asked for that; every handler here
    leaves such a signal alone (and restores what it replaced), so it stays ignored for the whole run."""
    return signal.getsignal(sig) == signal.SIG_IGN


class SignalFlag:
    """SIGINT, SIGTERM and SIGHUP (an SSH drop without tmux) set a flag the loop polls;
    a second SIGINT raises KeyboardInterrupt at once. A no-op off the main thread, and for a
    signal that is ignored when entered (`ignored`: `nohup` keeps training through a hang-up)."""

    def __init__(self, enabled: bool = True, signals: tuple[int, ...] = _STOP_SIGNALS) -> None:
        self.enabled, self.signals = enabled, signals
        self.requested = False
        self.reason = ""
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "SignalFlag":
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                if not ignored(sig):
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.reason = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP while `train()` was building the run (preparing data, building the
    model, loading a resume point): nothing was trained. Its first argument names the signal, if
    it was not Ctrl-C."""


class SignalsRaise(SignalFlag):
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, around work with no step loop
    to poll a flag: preparing data, building a run.

    Their default action kills the process at once, silently, and loses what was encoded since
    the data cache's last commit. As KeyboardInterrupt they reach the handlers that commit up to
    the last whole chunk and say what happened. `reason` names the signal (empty for Ctrl-C),
    and so does the exception's first argument. A no-op off the main thread or when disabled.
    """

    def __init__(self, enabled: bool = True) -> None:
        super().__init__(enabled, tuple(s for s in _STOP_SIGNALS if s != signal.SIGINT))

    def _handle(self, signum, frame) -> None:
        self.requested, self.reason = True, signal.Signals(signum).name
        raise KeyboardInterrupt(self.reason)


@contextmanager
def while_building(enabled: bool = True) -> Iterator[None]:
    """Around work before training starts (data preparation, building the run): SIGTERM and SIGHUP
    raise as Ctrl-C does (`SignalsRaise`), and whatever stops it leaves as BuildInterrupted."""
    try:
        with SignalsRaise(enabled):
            yield
    except BuildInterrupted:
        raise
    except KeyboardInterrupt as e:
        raise BuildInterrupted(*e.args) from None


@dataclass
class Stop:
    """The collective verdict after a step; `status` None means go on."""

    status: str | None = None
    message: str = ""
    budget: bool = False  # the time budget ran out: evaluate, checkpoint, end as finished
    save: bool = False  # a write failed but the run folder still works: checkpoint, then end with `status`

    @property
    def now(self) -> bool:
        """Leave without evaluating or checkpointing (the state is bad or cannot be written)."""
        return self.status in ("diverged", "write_failed") and not self.save

    @property
    def any(self) -> bool:
        return self.status is not None or self.budget


class StopConditions:
    def __init__(self, tc: TrainConfig, run_dir: Path, signals: SignalFlag, stop_after: int | None = None, folder: RunFolder | None = None):
        """`folder`: the session's RunFolder on the writing rank (None elsewhere), whose identity says whether the run directory is still there."""
        self.tc, self.run_dir, self.signals, self.stop_after = tc, Path(run_dir), signals, stop_after
        self.stop_file = self.run_dir / STOPFILE
        self.folder = folder

    def run_dir_gone(self) -> bool:
        """The run directory was deleted, moved or replaced: writes would go to an unlinked inode or a stranger's folder."""
        return self.folder is not None and self.folder.gone()

    def check(self, dinfo, device, step: int, loss: float | None, train_time: float, write_error: str | None, last_ckpt: Path | None,
              metrics_vanished: bool = False) -> Stop:
        """One collective decision; `loss` is None on steps that did not sync it to the host. `metrics_vanished`:
        the write error is metrics.jsonl removed or replaced, so a final checkpoint is still written."""
        from jepa_core.train.distributed import any_rank

        gone = dinfo.is_main and self.run_dir_gone()
        soft = bool(write_error) and metrics_vanished and not gone
        diverged = loss is not None and not math.isfinite(loss)
        asked = self.signals.requested or self.stop_file.exists() or (self.stop_after is not None and step >= self.stop_after)
        budget = self.tc.time_budget_s > 0 and train_time >= self.tc.time_budget_s
        failed, soft, diverged, asked, budget = any_rank(dinfo, [(bool(write_error) and not soft) or gone, soft, diverged, asked, budget], device)
        where = last_good(last_ckpt)
        if failed:
            why = write_error or f"the run directory {self.run_dir} was deleted or replaced during training"
            return Stop("write_failed", f"{why}; {where}.")
        if soft and not diverged:  # the loop adds where the final checkpoint went
            return Stop("write_failed", f"{write_error or 'metrics.jsonl was removed or replaced on rank 0'}", save=True)
        if diverged:
            what = f"became {loss}" if loss is not None else "became non-finite on another rank"
            return Stop("diverged", f"loss {what} at step {step}; {where}.")
        if asked:
            reason = self.signals.reason or ("stop file" if self.stop_file.exists() else "requested")
            return Stop("interrupted", f"stopped at step {step} ({reason})")
        if budget and step < self.tc.max_steps:
            return Stop(None, f"time budget of {self.tc.time_budget_s:g} s reached at step {step}", budget=True)
        return Stop()


def last_good(last_ckpt: Path | None) -> str:
    """Where a stopped run can be resumed from, for its messages."""
    return f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written before it"
