"""`jepa ablate --jobs N`: N runs of an ablation at once, each in its own process.

Separate processes, not threads: each run gets its own torch thread pool, its own
compiled graphs and its own signal handling. A child is started with `spawn` (a fresh
interpreter, no inherited torch state) and runs exactly what the in-process path runs:
the parent resolves the run with `_prepare_run` (resume point, what is left of a time
budget) and the child calls `train(...)` under `RecordingCallbacks`, so batch digests,
checkpoints and metrics are written as by `--jobs 1`. Progress comes back over a queue
and is replayed on the parent's callbacks; only the parent writes the manifest.

Sharing the machine: on CPU every run gets cores // N torch threads; on CUDA one run
per visible GPU (N is capped at their number), each child seeing only its GPU.

Stopping: children leave the terminal's process group, so a Ctrl-C reaches the parent
alone, which relays it (once per press) to every running child: a first press ends
each run with a checkpoint, a second aborts them, as for one run. SIGTERM and SIGHUP
are relayed the same way. A run that ends interrupted (its `stop` file) stops the
others too, as it stops the ablation in-process.
"""

from __future__ import annotations

import os
import pickle
import queue as queue_mod
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jepa_core.errors import ConfigError, JepaError

#: Environment variables that size a child's thread pools (read when torch loads its OpenMP/MKL runtime).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

_RELAYED = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


# --------------------------------------------------------------------------- sharing the machine


def cpu_cores() -> int:
    """Cores this process may use (a taskset or container limit counts, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_job(cores: int, jobs: int) -> int:
    """Torch threads for each of `jobs` concurrent runs on `cores` cores: an equal share, at least one."""
    return max(1, cores // jobs)


def check_jobs(jobs: Any) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be a whole number of runs at once, at least 1; got {jobs!r}.", hint="Example: --jobs 2 (on CPU each run then gets half the cores).")
    return jobs


@dataclass(frozen=True)
class Slots:
    """How `jobs` concurrent runs share the machine."""

    jobs: int
    threads: int  # torch threads per run
    gpus: tuple[str, ...] = ()  # CUDA_VISIBLE_DEVICES of each slot; empty off CUDA

    def gpu(self, slot: int) -> str | None:
        return self.gpus[slot] if self.gpus else None


def plan_slots(jobs: int, device: str, cores: int, gpus: list[str] | tuple[str, ...] = ()) -> Slots:
    """On CUDA one run per visible GPU (`jobs` capped at their number); elsewhere `jobs` runs sharing the cores."""
    check_jobs(jobs)
    if str(device).startswith("cuda"):
        n = max(1, min(jobs, len(gpus)))
        return Slots(n, threads_per_job(cores, n), tuple(gpus[:n]))
    return Slots(jobs, threads_per_job(cores, jobs))


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(n)]
    return [d.strip() for d in listed.split(",") if d.strip()][:n]


def machine_slots(jobs: int, device: str) -> Slots:
    return plan_slots(jobs, device, cpu_cores(), visible_gpus() if str(device).startswith("cuda") else ())


# --------------------------------------------------------------------------- the child


class _Forward:
    """Train callbacks in the child: progress to the parent's queue, and a stop asked
    for before the trainer took over signals turned into the run's `stop` file."""

    def __init__(self, events, name: str, early, run_dir: Path):
        self.events, self.name, self.early, self.run_dir = events, name, early, Path(run_dir)
        self._checked = False

    def on_start(self, info: dict[str, Any]) -> None:
        scalars = {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool, type(None)))}
        self.events.put((self.name, "start", scalars))

    def on_step(self, step: int, max_steps: int) -> None:
        if not self._checked:
            self._checked = True
            if self.early.requested:
                from jepa_core.rundir import STOPFILE

                (self.run_dir / STOPFILE).touch()
        self.events.put((self.name, "step", (step, max_steps)))

    def on_record(self, record: dict[str, Any]) -> None:
        self.events.put((self.name, "record", record))


def _child(name: str, threads: int, gpu: str | None, payload: bytes, events) -> None:
    """One run in a spawned process; `payload` (config, resume ref, run dir, warning filters)
    is unpickled only after the thread count is set, since unpickling imports torch."""
    os.setsid()  # out of the terminal's process group: the parent relays Ctrl-C exactly once
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    from jepa_core.train.stops import SignalFlag

    with SignalFlag() as early:  # a stop asked for while the run is being built
        # in-memory hand-over to a child this process spawned, never a file: multiprocessing
        # pickles a Process's arguments anyway; this only delays the unpickling (see above)
        cfg, ref, run_dir, overrides, filters = pickle.loads(payload)
        warnings.filters[:] = filters  # as quiet (or as loud) as the parent
        import torch

        torch.set_num_threads(threads)
        from .run import RecordingCallbacks, aborted_message
        from jepa_core.train.loop import train

        recorder = RecordingCallbacks(run_dir, _Forward(events, name, early, run_dir))
        try:
            result = train(cfg, run_dir=run_dir, resume=ref, callbacks=recorder, handle_signals=True, overrides=overrides)
            events.put((name, "end", (result.status, result.step, result.message)))
        except JepaError as e:
            events.put((name, "error", (type(e).__name__, e.message, e.hint)))
        except KeyboardInterrupt as e:
            events.put((name, "end", ("interrupted", None, aborted_message(e))))
        except Exception as e:  # a bug in this run: the parent records it and goes on
            events.put((name, "end", ("failed", 0, f"{type(e).__name__}: {e}")))
        finally:
            recorder.close()


def _picklable_filters() -> list:
    out = []
    for f in warnings.filters:
        try:
            pickle.dumps(f)
        except Exception:  # a filter on a class defined in a function: the child does without it
            continue
        out.append(f)
    return out


# --------------------------------------------------------------------------- the parent


class _Relay:
    """The parent's handler for SIGINT, SIGTERM and SIGHUP: count it and pass it on to every running child.
    A signal ignored when it starts stays ignored (the children inherit that, and leave it so too)."""

    def __init__(self):
        self.pids: dict[str, int] = {}
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Relay":
        import threading

        from jepa_core.train.stops import ignored

        if threading.current_thread() is threading.main_thread():
            for sig in _RELAYED:
                if not ignored(sig):  # `nohup jepa ablate`: a hang-up stays ignored, here and in the children
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.send(signum)

    def send(self, signum: int = signal.SIGINT) -> None:
        for pid in list(self.pids.values()):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class _Running:
    spec: Any  # RunSpec
    process: Any
    slot: int
    action: str
    hooks: Any  # the CLI's train callbacks for this run
    ended: bool = False


class ParallelRunner:
    """Runs `todo` with up to `slots.jobs` children at once, replaying their progress on `cb`."""

    def __init__(self, plan, todo, cb, slots: Slots):
        import multiprocessing

        self.plan, self.todo, self.cb, self.slots = plan, list(todo), cb, slots
        self.ctx = multiprocessing.get_context("spawn")
        self.events = self.ctx.Queue()
        self.running: dict[str, _Running] = {}
        self.stopped, self.failed = False, []
        self.error: JepaError | None = None

    def run(self) -> tuple[bool, list[str]]:
        waiting = list(enumerate(self.todo))
        free = list(range(self.slots.jobs))
        with _Relay() as relay:
            self.relay = relay
            try:
                while self.running or (waiting and not self._stopping):
                    while waiting and free and not self._stopping:
                        pos, spec = waiting.pop(0)
                        self._launch(pos, spec, free.pop(0))
                    self._pump(timeout=0.2)
                    for name in [n for n, r in self.running.items() if not r.process.is_alive()]:
                        self._pump(timeout=0)  # its last messages are in the pipe before it exits
                        free.append(self._reap(name))
            finally:
                for r in self.running.values():  # only after an error in the parent itself
                    r.process.terminate()
                self.events.close()
                self.events.join_thread()
        self.stopped = self.stopped or relay.requested
        if self.error is not None:
            raise self.error
        return self.stopped, self.failed

    @property
    def _stopping(self) -> bool:
        return self.stopped or self.relay.requested or self.error is not None

    def _stop_all(self) -> None:
        if not self._stopping:
            self.stopped = True
            self.relay.send(signal.SIGINT)
        self.stopped = True

    def _launch(self, pos: int, spec, slot: int) -> None:
        from .run import _prepare_run

        try:
            cfg, ref, action = _prepare_run(self.plan, spec)
        except JepaError as e:
            self._stop_all()
            self.error = e
            return
        run_dir = self.plan.run_dir(spec)
        self.plan.state[spec.name] = {"status": "running", "step": ref.step if ref else 0, "message": "", "action": action}
        self.plan.save()
        self.cb.on_run_start(spec, pos, len(self.todo), action)
        payload = pickle.dumps((cfg, ref, run_dir, self.plan.overrides_for(spec), _picklable_filters()))
        p = self.ctx.Process(target=_child, args=(spec.name, self.slots.threads, self.slots.gpu(slot), payload, self.events), name=f"jepa-ablate-{spec.name}")
        p.start()
        self.running[spec.name] = _Running(spec, p, slot, action, self.cb.train_callbacks(spec))
        self.relay.pids[spec.name] = p.pid

    def _pump(self, timeout: float) -> None:
        block = timeout > 0
        while True:
            try:
                name, kind, data = self.events.get(block, timeout) if block else self.events.get_nowait()
            except queue_mod.Empty:
                return
            block = False  # after the first message, take only what is there
            r = self.running.get(name)
            if r is not None:
                self._handle(r, kind, data)

    def _handle(self, r: _Running, kind: str, data) -> None:
        if r.ended:  # a second Ctrl-C can land after the child reported its end
            return
        hooks = r.hooks
        if kind == "start" and hooks is not None:
            hooks.on_start(data)
        elif kind == "step" and hooks is not None:
            hooks.on_step(*data)
        elif kind == "record" and hooks is not None:
            hooks.on_record(data)
        elif kind == "end":
            status, step, message = data
            self._end(r, status, self.plan.state[r.spec.name]["step"] if step is None else step, message)
        elif kind == "error":
            cls_name, message, hint = data
            from jepa_core import errors

            cls = getattr(errors, cls_name, JepaError)
            self._record(r, "failed", 0, message)
            self._stop_all()
            self.error = self.error or (cls(message, hint=hint) if isinstance(cls, type) and issubclass(cls, JepaError) else JepaError(message, hint=hint))

    def _end(self, r: _Running, status: str, step: int, message: str) -> None:
        self._record(r, status, step, message)
        self.cb.on_run_end(r.spec, status, message)
        if status == "failed":
            self.failed.append(r.spec.name)
        if status == "interrupted":
            self._stop_all()

    def _record(self, r: _Running, status: str, step: int, message: str) -> None:
        r.ended = True
        self.plan.state[r.spec.name] = {"status": status, "step": step, "message": message, "action": r.action}
        self.plan.save()

    def _reap(self, name: str) -> int:
        r = self.running.pop(name)
        self.relay.pids.pop(name, None)
        r.process.join()
        if not r.ended:  # killed (out of memory, SIGKILL) or stopped before it could report
            status = "interrupted" if self._stopping else "failed"
            self._end(r, status, self.plan.state[name]["step"], f"its process ended with exit code {r.process.exitcode} before reporting")
        return r.slot


def run_parallel(plan, todo, cb, jobs: int) -> tuple[bool, list[str]] | None:
    """Run `todo` `jobs` at a time; None when the machine allows only one at a time (run them in-process)."""
    slots = machine_slots(jobs, plan.settings.get("device", "cpu"))
    if slots.jobs < 2:
        return None
    on_jobs = getattr(cb, "on_jobs", None)
    if on_jobs is not None:
        on_jobs(slots.jobs, slots.threads, slots.gpus)
    return ParallelRunner(plan, todo, cb, slots).run()
