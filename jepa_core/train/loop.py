"""The training loop behind `jepa train` (no Lightning: every step is visible here).

`train(cfg)` builds a run (build.py), claims its directory (session.py) and
steps it (step.py) until `max_steps` or a stop (stops.py), evaluating
(evaluator.py) and checkpointing (checkpointer.py) at their cadences. It never
prints; the CLI renders progress from the records passed to `TrainCallbacks`.

Exact resume: everything random in a step draws from the global torch RNG
(pair sampling, dropout) or the batcher's own generator, and both are saved in
the state file. Eval and samples use private generators, so when they run
does not change the training stream.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from jepa_core import rundir as rd
from jepa_core.config import Config
from jepa_core.model.flops import model_flops_utilization
from jepa_core.train.build import Run, build_run
from jepa_core.train.checkpointer import Checkpointer
from jepa_core.train.distributed import any_rank, ranks_in_sync, shutdown
from jepa_core.train.evaluator import Evaluator
from jepa_core.train.evalwatch import EvalWatch, Verdict
from jepa_core.train.fsdp import whole_root
from jepa_core.train.gradprobe import FIELDS as GRAD_FIELDS
from jepa_core.train.resume import resolve_resume
from jepa_core.train.session import RunSession
from jepa_core.train.step import StepResult, train_step
from jepa_core.rundir.status import EXIT_CODES
from jepa_core.train.stops import SignalFlag, Stop, StopConditions, last_good, while_building

__all__ = ["train", "TrainCallbacks", "TrainResult", "resolve_resume", "EXIT_CODES"]


class TrainCallbacks:
    """Hooks the CLI uses to render progress; the defaults do nothing."""

    def on_prepare(self, stage: str, done: int, total: int) -> None:  # data preparation progress
        pass

    def on_start(self, info: dict[str, Any]) -> None:
        pass

    def on_step(self, step: int, max_steps: int) -> None:
        pass

    def on_batch(self, index: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Every training micro-batch as drawn (CPU tensors); `index` counts from 0 over the whole run."""

    def on_record(self, record: dict[str, Any]) -> None:  # every train/eval/event record written
        pass


@dataclass
class TrainResult:
    run_dir: Path
    status: str
    step: int
    message: str = ""
    last_eval: dict[str, Any] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    wall_s: float = 0.0
    train_s: float = 0.0
    tokens: int = 0  # since step 0, across resumes
    tokens_here: int = 0  # trained by this process (the throughput's numerator)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    @property
    def tok_per_s(self) -> float:
        return self.tokens_here / self.train_s if self.train_s > 0 else 0.0


class _Clock:
    """Training time (the first compiled step, which includes compiling, is kept out) and throughput."""

    def __init__(self, compiled: bool):
        self.compiled, self.first = compiled, True
        self.train_s = self.compile_s = self.window_s = 0.0
        self.tokens = self.window_tokens = 0

    def add(self, dt: float, tokens: int) -> None:
        if self.first and self.compiled:
            self.compile_s = dt
        else:
            self.train_s += dt
            self.tokens += tokens
            self.window_s += dt
            self.window_tokens += tokens
        self.first = False

    def window_rate(self) -> float:
        rate = self.window_tokens / self.window_s if self.window_s > 0 else 0.0
        self.window_tokens, self.window_s = 0, 0.0
        return rate


def train(
    cfg: Config,
    *,
    run_dir: Path | None = None,
    resume: rd.CheckpointRef | None = None,
    callbacks: TrainCallbacks | None = None,
    stop_after: int | None = None,
    handle_signals: bool = True,
    force_memory: bool = False,
    overrides: list[str] | tuple[str, ...] | None = None,
) -> TrainResult:
    """Run (or resume) the run described by `cfg`; `resume` comes from `resolve_resume`.

    `stop_after` ends the run after that step as if interrupted (tests and ablations use it to split a run).
    `force_memory` starts a run whose memory estimate says it does not fit (`jepa train --force`).
    `overrides`: the `--set` values `cfg` was made with, recorded in run_start for `jepa runs`.
    """
    cb = callbacks or TrainCallbacks()
    # preparing data can take minutes: a hang-up or SIGTERM then ends it as Ctrl-C does, on rank 0
    # (the others wait in a barrier, where only the default action would reach them at once)
    with while_building(handle_signals and os.environ.get("RANK", "0") == "0"):
        run = build_run(cfg, run_dir=run_dir, resume=resume, on_prepare=cb.on_prepare, force_memory=force_memory, overrides=overrides)
    try:
        # the flag first: a signal while the session opens still ends the run with a checkpoint
        with SignalFlag(handle_signals) as signals, RunSession(run, cb) as session:
            return _loop(run, session, cb, StopConditions(cfg.train, run.run_dir, signals, stop_after, folder=session.folder))
    finally:
        shutdown(run.dist)


def _loop(run: Run, session: RunSession, cb: TrainCallbacks, stops: StopConditions) -> TrainResult:
    cfg, tr, batcher = run.cfg, run.trainee, run.batcher
    # under FSDP every rank joins the eval's forwards (each holds a shard); rank 0 alone records
    evaluate = Evaluator(cfg, run.prepared, run.device, baseline=tr.model.is_baseline) if run.dist.is_main or tr.fsdp else None
    ckpt = Checkpointer(cfg, session.folder or run.run_dir, session.config_toml, run.prepared.tokenizer_sha256, run.dist.is_main,
                        last=run.resume.weights if run.resume else None, init_from=run.init_from)
    clock = _Clock(tr.plan.compile)
    watch = EvalWatch.for_config(cfg.train, run.watch_state)
    on_batch = getattr(cb, "on_batch", None)  # optional: callers need not subclass TrainCallbacks

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batcher.next()
        if on_batch is not None:
            on_batch(batcher.batches_drawn - 1, x, y)
        return x, y

    try:
        step, tokens, last_eval, stop = _steps(run, session, stops, evaluate, watch, ckpt, clock, next_batch)
    except KeyboardInterrupt:  # a second Ctrl-C: leave now, without the final checkpoint
        step = session.step
        tokens = run.tokens_seen + (step - run.start_step) * run.tokens_per_step
        last_eval, stop = {}, Stop("interrupted", f"aborted at step {step} without a final checkpoint; last checkpoint: {ckpt.last}")

    status = stop.status or "finished"
    resume, then = f"jepa train --resume {run.run_dir}", ""  # how to go on: said last (no full stop after a command)
    if status == "interrupted":
        then = f"; resume with: {resume}"
    elif status == "write_failed" and stop.save:  # metrics.jsonl vanished, the folder works: the final checkpoint went there
        then = f"; {last_good(ckpt.last)}. Resume with: {resume} (a new metrics.jsonl starts there)"
    elif status == "write_failed" and ckpt.last is not None and not stops.run_dir_gone():
        then = f" Fix the cause (free space, permissions, a file-size limit), then resume with: {resume}"
    message = stop.message + then
    if stop.now:
        session.emit("event", step, event="alert", kind=status, message=message)
    end = {"message": message, "wall_s": round(time.time() - session.t_start, 3), "train_time": round(clock.train_s, 3),
           "tokens": tokens, "last_checkpoint": str(ckpt.last) if ckpt.last else None}
    if run.dist.enabled:
        end.update(world_size=run.dist.world_size, ranks_in_sync=ranks_in_sync(run.dist, tr.model, run.device))
    session.end(step, status, **end)
    if session.pid_left:  # the folder became read-only: known only after run_end, so said to the caller alone
        said = stop.message.rstrip(".") + ". " if stop.message else ""
        message = (f"{said}{rd.PIDFILE} stays in the run directory ({session.pid_left}); it is harmless: the lock, not that "
                   "file, decides who trains, and readers see that its process has exited."
                   + (f" Resume with: {resume}" if status == "interrupted" else then))
    return TrainResult(run.run_dir, status, step, message, last_eval, ckpt.last, end["wall_s"], clock.train_s, tokens, clock.tokens)


def _steps(run: Run, session: RunSession, stops: StopConditions, evaluate, watch: EvalWatch, ckpt: Checkpointer, clock: _Clock, next_batch):
    """The step loop; returns (step, tokens seen, last eval, stop verdict)."""
    cfg, tc, tr = run.cfg, run.cfg.train, run.trainee
    step, tokens = run.start_step, run.tokens_seen
    last_eval: dict[str, Any] = {}
    stop = Stop()
    session.step = step
    while step < tc.max_steps:
        step += 1
        session.step = step
        log_due = step % cfg.log.every == 0 or step == tc.max_steps
        eval_due = step % tc.eval_every == 0 or step == tc.max_steps
        t0 = time.perf_counter()
        res = train_step(tr, next_batch, step, tc.max_steps, want_grad_norm=log_due, probe_grads=log_due)
        synced = tr.plan.sync_every_step or log_due or eval_due or ckpt.due(step)
        loss = res.loss.item() if synced else None  # a host sync; on CUDA only when needed
        if run.device.type == "cuda" and (log_due or clock.first):
            torch.cuda.synchronize(run.device)
        clock.add(time.perf_counter() - t0, run.tokens_per_step)
        tokens += run.tokens_per_step
        session.cb.on_step(step, tc.max_steps)
        session.heartbeat(step, "training")
        if log_due and loss is not None:
            _log_train(session, run, step, loss, res, tokens, clock)

        stop = stops.check(run.dist, run.device, step, loss, clock.train_s, session.write_error, ckpt.last, session.metrics_vanished)
        if stop.now:
            break
        best = False
        if eval_due or stop.budget:
            session.heartbeat(step, "eval", force=True)
            last_eval, verdict = _evaluate(session, evaluate, watch, tr.model, step, tokens, clock)
            # rank 0 evaluated; every rank must agree to save the best checkpoint or to stop
            best, early = any_rank(run.dist, [verdict.improved and tc.keep_best, verdict.early_stop is not None], run.device)
            if early and not stop.any:
                stop = Stop("early_stopped", f"stopped at step {step}: {verdict.early_stop or 'no better val loss'}")
        if tc.sample_tokens > 0 and (step % tc.sample_every == 0 if tc.sample_every else eval_due or stop.budget):
            _sample(session, run, step)
        if ckpt.due(step) or stop.any or best:
            session.heartbeat(step, "checkpoint", force=True)
            error = ckpt.save(step, tr, run.batcher.state_dict(), tokens, last_eval, watch.state(), best=best)
            if any_rank(run.dist, [error is not None], run.device)[0]:
                stop = Stop("write_failed", f"{error or 'the checkpoint write failed on rank 0'}; {last_good(ckpt.last)}.")
                break
            if ckpt.last is not None and run.dist.is_main:
                session.emit("event", step, event="checkpoint", path=str(ckpt.last.relative_to(run.run_dir)))
        if stop.any:
            break
    return step, tokens, last_eval, stop


def _log_train(session: RunSession, run: Run, step: int, loss: float, res: StepResult, tokens: int, clock: _Clock) -> None:
    model, jc = run.trainee.model, run.cfg.jepa
    rec: dict[str, Any] = {"loss": loss, "lm_loss": res.out.lm_loss.item()}
    if not model.is_baseline:
        rec["jepa_loss"] = res.out.jepa_loss.item() if res.out.jepa_loss is not None else None
        rec.update({k: v.item() for k, v in res.out.stats.items()})
        rec["ema_momentum"] = res.ema_momentum
        rec["jepa_weight"] = res.jepa_weight
        rec.update(res.grads or dict.fromkeys(GRAD_FIELDS))  # null where not probed (DDP)
    rec["lm_weight"] = res.lm_weight
    rec.update(_learning_rates(run.trainee.optimizer))
    rec["grad_norm"] = res.grad_norm.item() if res.grad_norm is not None else None
    rec["tokens"] = tokens
    rec["epoch"] = round(tokens / max(run.train_tokens, 1), 4)  # passes over the training split so far
    rec["tok_per_s"] = clock.window_rate()
    if run.peak_flops:
        rec["mfu"] = model_flops_utilization(rec["tok_per_s"], run.flops_per_token, run.peak_flops, run.dist.world_size)
    if clock.compile_s:
        rec["compile_s"] = clock.compile_s
    rec["elapsed"] = round(time.time() - session.t_start, 3)
    rec["train_time"] = round(clock.train_s, 3)
    session.emit("train", step, **rec)
    std = rec.get("std_anchor")
    if std is not None and std < jc.alert_std_floor:
        _alert_once(session, step, "collapse", f"std_anchor {std:.4f} < floor {jc.alert_std_floor}")


def _learning_rates(optimizer) -> dict[str, float]:
    """`lr`: the backbone's rate; `lr_head`: the heads'; `muon_lr` when Muon drives the hidden matrices."""
    by_name = {g.get("name"): g["lr"] for g in optimizer.param_groups}
    out = {"lr": by_name.get("backbone_decay", optimizer.param_groups[0]["lr"]), "lr_head": by_name.get("heads")}
    if "muon" in by_name:
        out["muon_lr"] = by_name["muon"]
    return {k: v for k, v in out.items() if v is not None}


def _alert_once(session: RunSession, step: int, kind: str, message: str) -> None:
    if kind not in session.alerted:
        session.alerted.add(kind)
        session.emit("event", step, event="alert", kind=kind, message=message)


def _evaluate(session: RunSession, evaluate: Evaluator | None, watch: EvalWatch, model, step: int, tokens: int, clock: _Clock) -> tuple[dict[str, Any], Verdict]:
    if evaluate is None:  # not the main rank
        return {}, Verdict()
    with whole_root(model):
        metrics = evaluate(model)
    if not session.is_main:  # an FSDP rank that only lent its shards
        return {}, Verdict()
    rec = session.emit("eval", step, **metrics, tokens=tokens, elapsed=round(time.time() - session.t_start, 3), train_time=round(clock.train_s, 3))
    rank, floor = metrics.get("eff_rank"), session.run.cfg.jepa.alert_rank_floor
    if rank is not None and rank < floor:
        _alert_once(session, step, "collapse", f"effective rank {rank:.2f} < floor {floor}")
    verdict = watch.update(step, metrics["val_loss"], metrics.get("val_bpb"))
    if verdict.alert:
        kept = ", kept as checkpoints/best.json" if session.run.cfg.train.keep_best else ""
        session.emit("event", step, event="alert", kind="overfitting", message=verdict.alert + kept,
                     best_step=watch.best_step, best_val_bpb=watch.best_bpb)
    return rec, verdict


def _sample(session: RunSession, run: Run, step: int) -> None:
    if not run.dist.is_main and not run.trainee.fsdp:  # under FSDP every rank generates (same tokens); rank 0 records
        return
    tc, model = run.cfg.train, run.trainee.model
    tokenizer = run.prepared.tokenizer()
    ids = tokenizer.encode(tc.sample_prompt) or [0]
    gen = torch.Generator(device=run.device).manual_seed(tc.seed)
    prompt = torch.tensor([ids], dtype=torch.long, device=run.device)
    with run.trainee.plan.autocast():
        out = model.generate(prompt, tc.sample_tokens, temperature=0.8, top_k=50, generator=gen)
    if run.dist.is_main:
        session.emit("event", step, event="sample", prompt=tc.sample_prompt, text=tokenizer.decode(out[0, len(ids):].tolist()))
