"""The training loop behind `jepa train` (no Lightning: every step is visible here).

One call, `train(cfg, ...)`, runs a whole run: distributed set-up, data,
model, optimizer, resume, the step loop with its schedules, eval, samples,
checkpoints, signals, and the metrics stream. It never prints; the CLI
renders progress from the records passed to `TrainCallbacks.on_record`.

Exact resume: everything random in a step draws from the global torch RNG
(pair sampling, dropout) or the batcher's own generator, and both are saved in
the state file. Eval and samples use private generators, so when they run
does not change the training stream.
"""

from __future__ import annotations

import contextlib
import math
import signal
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa_core.config import RESUME_SAFE_KEYS, Config, config_from_toml, config_to_toml, diff_configs
from jepa_core.errors import ConfigError
from jepa_core.train import rundir as rd
from jepa_core.train.checkpoint import (
    CheckpointMeta,
    load_state_into,
    load_weights_into,
    read_metadata,
    save_checkpoint,
)
from jepa_core.train.device import Runtime, compile_unavailable_reason, gpu_peak_flops, resolve_runtime
from jepa_core.train.distributed import DistInfo, barrier, broadcast_flag, init_distributed, ranks_in_sync, shutdown
from jepa_core.train.metrics import MetricsLogger
from jepa_core.train.optimizer import build_optimizer
from jepa_core.train.schedule import lr_factor

EXIT_CODES = {"finished": 0, "interrupted": 130, "diverged": 3, "failed": 1}


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
    tokens: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.train_s if self.train_s > 0 else 0.0


# --------------------------------------------------------------------------- resume


def resolve_resume(resume: str, cfg: Config | None, profile: str | None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Config, rd.CheckpointRef]:
    """The config to resume with and the checkpoint to resume from.

    Without a profile the checkpoint's own config is used (plus overrides);
    with one, it must match the checkpoint except for RESUME_SAFE_KEYS.
    """
    from jepa_core.config import apply_overrides, validate

    out_dir = cfg.train.out_dir if cfg is not None else "runs"
    name = cfg.name if cfg is not None else (profile or "")
    if resume == "auto" and not name:
        raise ConfigError("--resume auto needs --profile to know which runs to look at.", hint="Or pass a run directory: --resume runs/<run>.")
    ref = rd.find_resume_point(resume, out_dir, name)
    meta = read_metadata(ref.weights)
    saved = config_from_toml(meta.get("config", ""), source=str(ref.weights))
    if cfg is None:
        import tomllib

        raw = tomllib.loads(meta["config"])
        cfg = validate(apply_overrides(raw, overrides), source=str(ref.weights))
    unsafe = {k: v for k, v in diff_configs(saved, cfg).items() if k not in RESUME_SAFE_KEYS}
    if unsafe:
        lines = ", ".join(f"{k} ({a!r} in the checkpoint, {b!r} now)" for k, (a, b) in sorted(unsafe.items()))
        raise ConfigError(
            f"Cannot resume {ref.run_dir}: the config differs from the checkpoint's in {lines}.",
            hint="Only max_steps, eval/log/checkpoint cadence and sinks may change on resume. "
            "Resume without --profile to reuse the checkpoint's config, or start a new run.",
        )
    return cfg, ref


# --------------------------------------------------------------------------- helpers


class _StopRun(Exception):
    """Ends the run early with a status (a failed checkpoint write, for one)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _StopFlag:
    """Set by SIGINT/SIGTERM or a `stop` file; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.reason = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def _broadcast_run_dir(dinfo: DistInfo, path: Path | None) -> Path:
    if not dinfo.enabled:
        assert path is not None
        return path
    import torch.distributed as dist

    buf = torch.zeros(1024, dtype=torch.uint8)
    if dinfo.is_main:
        raw = str(path).encode()
        buf[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    dist.broadcast(buf, src=0)
    return Path(bytes(buf[buf != 0].tolist()).decode())


def _val_bytes(prepared, batches) -> int:
    lengths = torch.as_tensor(np.array(prepared.tokenizer().token_byte_lengths(), dtype=np.int64))
    return int(sum(lengths[y].sum().item() for _, y in batches))


# --------------------------------------------------------------------------- the run


def train(
    cfg: Config,
    *,
    run_dir: Path | None = None,
    resume: rd.CheckpointRef | None = None,
    callbacks: TrainCallbacks | None = None,
    stop_after: int | None = None,
    handle_signals: bool = True,
) -> TrainResult:
    """Run (or resume) a training run described by `cfg`; see the module docstring.

    `stop_after` ends the run after that step as if interrupted (tests and
    ablations use it to split a run); `resume` comes from `resolve_resume`.
    """
    from jepa_core.data import ensure_prepared, load_prepared
    from jepa_core.data import TrainBatcher, val_batches
    from jepa_core.model import (
        JepaLM,
        bits_per_byte,
        build_param_groups,
        check_param_groups,
        ema_momentum_at,
        estimate_flops_per_token,
        fixed_eval_pairs,
        jepa_eval_metrics,
        lm_weight_at,
    )

    cb = callbacks or TrainCallbacks()
    on_batch = getattr(cb, "on_batch", None)  # optional hook: callers need not subclass TrainCallbacks
    t_start = time.time()
    dinfo = init_distributed(cfg.train.device)
    rt: Runtime = resolve_runtime(cfg.train.device, cfg.train.precision, dinfo.local_rank)
    device = rt.device
    tc, jc = cfg.train, cfg.jepa
    max_steps = tc.max_steps

    if resume is not None:
        run_dir = resume.run_dir
    if dinfo.is_main and run_dir is None:
        run_dir = rd.new_run_dir(tc.out_dir, cfg.name)
    run_dir = _broadcast_run_dir(dinfo, run_dir)

    # ---- data: rank 0 prepares (if needed) while the others wait, then everyone memory-maps it
    if dinfo.is_main:
        prepared = ensure_prepared(cfg.data, progress=cb.on_prepare)
    barrier(dinfo)
    if not dinfo.is_main:
        prepared = load_prepared(cfg.data)
    if len(prepared.train_tokens) < cfg.data.block_size + 1:
        raise ConfigError(
            f"The train split of `{cfg.data.dataset}` has {len(prepared.train_tokens)} tokens, too few for one block of {cfg.data.block_size}.",
            hint="Lower data.block_size or raise data.train_fraction.",
        )

    # ---- model and optimizer; identical init on every rank, then per-rank sampling streams
    torch.manual_seed(tc.seed)
    model = JepaLM(cfg, prepared.vocab_size).to(device)
    torch.manual_seed(tc.seed * 1_000_003 + dinfo.rank + 1)
    groups = build_param_groups(model, cfg.optim)
    check_param_groups(model, groups)
    base_lrs = [g["lr"] for g in groups]
    optimizer = build_optimizer(groups, cfg.optim, device)

    batcher = TrainBatcher(
        prepared.train_tokens, cfg.data.block_size, tc.batch_size, seed=tc.seed, rank=dinfo.rank, world_size=dinfo.world_size
    )
    step, tokens_seen = 0, 0
    if resume is not None:
        load_weights_into(model, resume.weights)
        st = load_state_into(model, optimizer, resume.state)
        step, tokens_seen = st["step"], st["tokens_seen"]
        batcher.load_state_dict(st["data"])

    fwd: torch.nn.Module = model
    compile_s = 0.0
    # a profile that asks for compile still trains on a machine without a C++ compiler
    compile_note = compile_unavailable_reason(device) if tc.compile else None
    use_compile = tc.compile and compile_note is None
    if use_compile:
        fwd = torch.compile(model)
    if dinfo.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(fwd, device_ids=[device.index] if device.type == "cuda" else None)

    val_set = val_batches(prepared.val_tokens, cfg.data.block_size, tc.batch_size, tc.eval_batches) if dinfo.is_main else []
    if dinfo.is_main and not val_set:
        raise ConfigError(
            f"The validation split of `{cfg.data.dataset}` has {len(prepared.val_tokens)} tokens, too few for one block of {cfg.data.block_size}.",
            hint="Lower data.block_size or raise data.val_fraction.",
        )
    val_bytes = _val_bytes(prepared, val_set) if dinfo.is_main else 0
    eval_pairs = fixed_eval_pairs(val_set[0][0].shape[0], cfg.data.block_size, jc, jc.eval_pairs, seed=tc.seed) if (dinfo.is_main and not model.is_baseline and val_set) else None
    tokenizer = prepared.tokenizer() if dinfo.is_main else None

    tokens_per_step = tc.batch_size * cfg.data.block_size * tc.grad_accum_steps * dinfo.world_size
    flops_per_token = estimate_flops_per_token(cfg, prepared.vocab_size)
    peak = gpu_peak_flops(device)

    logger = MetricsLogger(cfg, run_dir, enabled=dinfo.is_main)
    config_toml = config_to_toml(cfg)
    if dinfo.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / rd.CONFIG).write_text(config_toml, encoding="utf-8")
        shutil.copyfile(prepared.tokenizer_path, run_dir / rd.TOKENIZER)
        rd.write_pidfile(run_dir)
        with contextlib.suppress(FileNotFoundError):
            (run_dir / rd.STOPFILE).unlink()

    def emit(type_: str, step_: int, **fields: Any) -> dict[str, Any]:
        rec = logger.log(type_, step_, **fields)
        if dinfo.is_main:
            cb.on_record(rec)
        return rec

    start_info = {
        "run_name": run_dir.name,
        "run_dir": str(run_dir),
        "profile": cfg.name,
        "device": str(device),
        "precision": rt.precision,
        "compile": use_compile,
        "world_size": dinfo.world_size,
        "max_steps": max_steps,
        "start_step": step,
        "params": model.param_counts(),
        "vocab_size": prepared.vocab_size,
        "tokens_per_step": tokens_per_step,
        "flops_per_token": flops_per_token,
        "baseline": model.is_baseline,
    }
    if compile_note:
        start_info["notes"] = [compile_note]
    emit("event", step, event="run_start", **start_info, config=cfg.to_dict())
    if resume is not None:
        emit("event", step, event="resume", from_step=step, checkpoint=str(resume.weights))
    if dinfo.is_main:
        cb.on_start(start_info)

    stop = _StopFlag()
    if handle_signals:
        stop.install()

    last_eval: dict[str, Any] = {}
    last_ckpt: Path | None = resume.weights if resume is not None else None
    status, message = "finished", ""
    train_time = 0.0
    window_tokens, window_time = 0, 0.0
    collapse_alerted = False
    stop_file = run_dir / rd.STOPFILE
    params = [p for p in model.parameters() if p.requires_grad]
    accum = tc.grad_accum_steps
    check_every_step = device.type == "cpu"

    def checkpoint(at: int) -> None:
        nonlocal last_ckpt
        if dinfo.is_main:
            try:
                ref = _save(at)
            except OSError as e:
                # a full disk or a vanished directory: the previous checkpoint and
                # latest.json are untouched because every write is atomic
                msg = f"writing the checkpoint at step {at} failed ({e}); the last good checkpoint is {last_ckpt}"
                emit("event", at, event="alert", kind="checkpoint_failed", message=msg)
                raise _StopRun("failed", msg) from None
            last_ckpt = ref.weights
            emit("event", at, event="checkpoint", path=str(ref.weights.relative_to(run_dir)))
        barrier(dinfo)

    def _save(at: int) -> rd.CheckpointRef:
        meta = CheckpointMeta(
            config_toml=config_toml,
            profile=cfg.name,
            step=at,
            tokens_seen=tokens_seen,
            tokenizer_sha256=prepared.tokenizer_sha256,
            metrics=last_eval,
            weight_tying=cfg.model.weight_tying,
        )
        return save_checkpoint(run_dir, model, optimizer, meta, batcher.state_dict(), tc.keep_last)

    def evaluate(at: int) -> dict[str, Any]:
        nonlocal collapse_alerted
        if not dinfo.is_main:
            return {}
        model.eval()
        nats, count = 0.0, 0
        with torch.no_grad(), rt.autocast():
            for x, y in val_set:
                x, y = x.to(device), y.to(device)
                logits = model.lm_logits(x).float()
                nats += torch.nn.functional.cross_entropy(
                    logits.view(-1, logits.size(-1)), y.view(-1), reduction="sum"
                ).item()
                count += y.numel()
            extra = jepa_eval_metrics(model, val_set[0][0].to(device), eval_pairs) if eval_pairs is not None else {}
        model.train()
        val_loss = nats / max(count, 1)
        rec = emit(
            "eval",
            at,
            val_loss=val_loss,
            val_ppl=math.exp(min(val_loss, 50.0)),
            val_bpb=bits_per_byte(nats, val_bytes),
            **extra,
            tokens=tokens_seen,
            elapsed=round(time.time() - t_start, 3),
            train_time=round(train_time, 3),
        )
        rank = extra.get("eff_rank")
        if rank is not None and rank < jc.alert_rank_floor and not collapse_alerted:
            collapse_alerted = True
            emit("event", at, event="alert", kind="collapse", message=f"effective rank {rank:.2f} < floor {jc.alert_rank_floor}")
        return rec

    def sample(at: int) -> None:
        if not dinfo.is_main or tc.sample_tokens <= 0 or tokenizer is None:
            return
        ids = tokenizer.encode(tc.sample_prompt) or [0]
        gen = torch.Generator(device=device).manual_seed(tc.seed)
        prompt = torch.tensor([ids], dtype=torch.long, device=device)
        with rt.autocast():
            out = model.generate(prompt, tc.sample_tokens, temperature=0.8, top_k=50, generator=gen)
        text = tokenizer.decode(out[0, len(ids):].tolist())
        emit("event", at, event="sample", prompt=tc.sample_prompt, text=text)

    try:
        model.train()
        t_window = time.perf_counter()
        first_step = True
        while step < max_steps:
            step += 1
            t0 = time.perf_counter()
            factor = lr_factor(cfg.optim, step, max_steps)
            for g, base in zip(optimizer.param_groups, base_lrs):
                g["lr"] = base * factor
            lm_w = 1.0 if model.is_baseline else lm_weight_at(jc, step, max_steps)
            loss_acc = torch.zeros((), device=device)
            out = None
            for micro in range(accum):
                x, y = batcher.next()
                if on_batch is not None:
                    on_batch((step - 1) * accum + micro, x, y)
                if device.type == "cuda":
                    x = x.pin_memory().to(device, non_blocking=True)
                    y = y.pin_memory().to(device, non_blocking=True)
                else:
                    x, y = x.to(device), y.to(device)
                sync_ctx = fwd.no_sync() if (dinfo.enabled and micro < accum - 1) else contextlib.nullcontext()
                with sync_ctx:
                    with rt.autocast():
                        out = fwd(x, y, lm_w)
                    (out.loss / accum).backward()
                loss_acc += out.loss.detach() / accum
            tokens_seen += tokens_per_step

            log_due = step % cfg.log.every == 0 or step == max_steps
            eval_due = step % tc.eval_every == 0 or step == max_steps
            ckpt_due = step % tc.checkpoint_every == 0 or step == max_steps
            if check_every_step or log_due or eval_due or ckpt_due:
                loss_val = loss_acc.item()
                if not math.isfinite(loss_val):
                    status = "diverged"
                    where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written before it"
                    message = f"loss became {loss_val} at step {step}; {where}."
                    emit("event", step, event="alert", kind="diverged", message=message)
                    break

            if cfg.optim.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            elif log_due:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
            else:
                grad_norm = None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            momentum = ema_momentum_at(jc, step, max_steps)
            if not model.is_baseline:
                model.update_teacher(momentum)

            if device.type == "cuda" and (log_due or first_step):
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            if first_step and use_compile:
                compile_s = dt  # the first compiled step includes compilation; keep it out of throughput
            else:
                train_time += dt
                window_tokens += tokens_per_step
                window_time += dt
            first_step = False
            cb.on_step(step, max_steps)

            if log_due:
                rec: dict[str, Any] = {"loss": loss_val}
                assert out is not None
                rec["lm_loss"] = out.lm_loss.item()
                if not model.is_baseline:
                    rec["jepa_loss"] = out.jepa_loss.item() if out.jepa_loss is not None else None
                    rec.update({k: v.item() for k, v in out.stats.items()})
                    rec["ema_momentum"] = momentum
                rec["lm_weight"] = lm_w
                rec["lr"] = optimizer.param_groups[0]["lr"]
                rec["grad_norm"] = grad_norm.item() if grad_norm is not None else None
                rec["tokens"] = tokens_seen
                tps = window_tokens / window_time if window_time > 0 else 0.0
                rec["tok_per_s"] = tps
                if peak:
                    rec["mfu"] = tps * flops_per_token / peak
                if compile_s:
                    rec["compile_s"] = compile_s
                rec["elapsed"] = round(time.time() - t_start, 3)
                rec["train_time"] = round(train_time, 3)
                emit("train", step, **rec)
                window_tokens, window_time = 0, 0.0
                std = rec.get("std_anchor")
                if std is not None and std < jc.alert_std_floor and not collapse_alerted:
                    collapse_alerted = True
                    emit("event", step, event="alert", kind="collapse", message=f"std_anchor {std:.4f} < floor {jc.alert_std_floor}")

            want_stop = stop.requested or stop_file.exists() or (stop_after is not None and step >= stop_after)
            over_budget = tc.time_budget_s > 0 and train_time >= tc.time_budget_s
            want_stop = broadcast_flag(dinfo, want_stop, device)
            over_budget = broadcast_flag(dinfo, over_budget, device)
            if over_budget and step < max_steps:
                message = f"time budget of {tc.time_budget_s:g} s reached at step {step}"
                eval_due = ckpt_due = True
            if eval_due:
                last_eval = evaluate(step)
                if tc.sample_every == 0:
                    sample(step)
            if tc.sample_every and step % tc.sample_every == 0:
                sample(step)
            if want_stop and not ckpt_due:
                ckpt_due = True
            if ckpt_due:
                checkpoint(step)
            if want_stop:
                status = "interrupted"
                message = f"stopped at step {step} ({stop.reason or ('stop file' if stop_file.exists() else 'requested')}); resume with --resume {run_dir}"
                break
            if over_budget:
                break
    except _StopRun as e:
        status, message = e.status, e.message
    except KeyboardInterrupt:
        status = "interrupted"
        message = f"aborted at step {step} without a final checkpoint; last checkpoint: {last_ckpt}"
    except BaseException as e:
        status, message = "failed", f"{type(e).__name__}: {e}"
        emit("event", step, event="run_end", status=status, message=message, step_reached=step)
        logger.close()
        if dinfo.is_main:
            rd.remove_pidfile(run_dir)
        stop.restore()
        shutdown(dinfo)
        raise
    finally:
        stop.restore()

    in_sync = ranks_in_sync(dinfo, model, device)
    wall = time.time() - t_start
    end_fields: dict[str, Any] = {
        "status": status,
        "message": message,
        "wall_s": round(wall, 3),
        "train_time": round(train_time, 3),
        "tokens": tokens_seen,
        "last_checkpoint": str(last_ckpt) if last_ckpt else None,
    }
    if dinfo.enabled:
        end_fields["world_size"] = dinfo.world_size
        end_fields["ranks_in_sync"] = in_sync
    emit("event", step, event="run_end", **end_fields)
    logger.close()
    if dinfo.is_main:
        rd.remove_pidfile(run_dir)
        with contextlib.suppress(FileNotFoundError):
            stop_file.unlink()
    shutdown(dinfo)
    return TrainResult(
        run_dir=run_dir,
        status=status,
        step=step,
        message=message,
        last_eval=last_eval,
        last_checkpoint=last_ckpt,
        wall_s=wall,
        train_s=train_time,
        tokens=tokens_seen,
    )
