"""One optimizer step: the only step there is. `jepa train`, `jepa bench` and `jepa preflight` all call it.

A step sets the schedules (learning rates, LM and JEPA weights, EMA momentum) for its
step number, runs `grad_accum_steps` micro-batches (forward, backward; DDP
syncs gradients on the last one only), clips, steps the optimizer, clears the
gradients and then, after the optimizer step, moves the EMA teacher toward
the freshly updated online weights.

The device-dependent choices live in `StepPlan` so that a bench on a machine
times exactly what training on that machine would run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from jepa_core.config import Config

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class StepPlan:
    """The device-dependent choices of a step.

    - fused AdamW: one kernel per parameter group, on CUDA and on CPU (DEFAULT_FUSED_CPU);
    - compile: when the profile asks and a compiler works here;
    - pinned memory and non-blocking host-to-device copies: CUDA only;
    - a host sync (`loss.item()`) every step on CPU, where it costs nothing, so a
      non-finite loss stops the run at once (and gradient clipping may branch on the
      norm); on CUDA only at log/eval/checkpoint steps.
    """

    device_type: str
    fused_adamw: bool
    compile: bool
    pin_memory: bool
    sync_every_step: bool
    autocast_dtype: torch.dtype | None

    def adamw_kwargs(self) -> dict[str, Any]:
        return {"fused": True} if self.fused_adamw else {}

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)


# Fused AdamW on CPU: one kernel for the whole group instead of a loop over parameters, about
# half the time on `tiny` (benchmarks/2026-12-xeon-amx.md). torch >= 2.4 has it.
DEFAULT_FUSED_CPU = True


def plan_step(cfg: Config, device: torch.device, precision: str, fused_cpu: bool = DEFAULT_FUSED_CPU, compile: bool | None = None) -> StepPlan:
    """The StepPlan for `device` (only its `.type` is read, so tests can pass a CUDA device without one)."""
    cuda = device.type == "cuda"
    return StepPlan(
        device_type=device.type,
        fused_adamw=cuda or (device.type == "cpu" and fused_cpu),
        compile=bool(cfg.train.compile) if compile is None else compile,
        pin_memory=cuda,
        sync_every_step=device.type == "cpu",
        autocast_dtype=torch.bfloat16 if precision == "bf16" else None,
    )


def move_batch(x: torch.Tensor, y: torch.Tensor, device: torch.device, plan: StepPlan) -> Batch:
    """Host batch -> device: pinned + non-blocking on CUDA, a plain (no-op on CPU) `.to` elsewhere."""
    if plan.pin_memory:
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


@dataclass
class Trainee:
    """What a step updates: the model, the module that runs its forward (compiled and/or
    DDP-wrapped, or the model itself), the optimizer and the peak learning rates."""

    cfg: Config
    model: Any  # JepaLM
    fwd: torch.nn.Module
    optimizer: Any
    base_lrs: list[float]
    device: torch.device
    plan: StepPlan
    ddp: bool = False
    fsdp: bool = False  # sharded by fsdp.shard_model: `model` is the FSDP module and `fwd` is `model`

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def build_trainee(
    cfg: Config, vocab_size: int, device: torch.device, plan: StepPlan, *, seed: int, ddp: bool = False, fsdp_world: int = 0,
    load: Callable[[Any], Any] | None = None,
) -> Trainee:
    """Model (initialised from `seed`, identical on every rank), parameter groups, optimizer, wrappers.

    `load(model)` puts other weights into the whole model first (`--init-from`), before anything
    shards, compiles or wraps it. `fsdp_world` > 1: shard the model over that many ranks (fsdp.py)
    before the optimizer sees its parameters."""
    from jepa_core.model import JepaLM, build_param_groups, check_param_groups
    from jepa_core.train.allocator import retain_freed_memory
    from jepa_core.train.optimizer import build_optimizer

    if device.type == "cpu":  # before the first step's allocations (allocator.py says why)
        retain_freed_memory()
    torch.manual_seed(seed)
    model = JepaLM.from_config(cfg, vocab_size, seed=seed).to(device)
    if load is not None:
        load(model)
    if fsdp_world > 1:
        from jepa_core.train.fsdp import shard_model

        precision = "bf16" if plan.autocast_dtype == torch.bfloat16 else "fp32"
        model = shard_model(model, cfg, device, precision, fsdp_world, compile=plan.compile)
        groups = build_param_groups(model, cfg.optim)
        check_param_groups(model, groups)
        optimizer = build_optimizer(groups, cfg.optim, device, adamw_options=plan.adamw_kwargs())
        if plan.compile:
            _allow_retained_backward()
        model.train()
        return Trainee(cfg, model, model, optimizer, [g["lr"] for g in groups], device, plan, fsdp=True)
    groups = build_param_groups(model, cfg.optim)
    check_param_groups(model, groups)
    optimizer = build_optimizer(groups, cfg.optim, device, adamw_options=plan.adamw_kwargs())
    if plan.compile:
        _allow_retained_backward()
    fwd: torch.nn.Module = torch.compile(model) if plan.compile else model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(fwd, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()
    return Trainee(cfg, model, fwd, optimizer, [g["lr"] for g in groups], device, plan, ddp)


def _allow_retained_backward() -> None:
    """Let a compiled model's backward keep its graph, as the gradient probe's extra backward needs.

    AOTAutograd "donates" saved buffers to the backward (reuses their memory) unless told not to,
    and a compiled backward with donated buffers refuses retain_graph=True. Process-wide and
    read when the first compiled backward is built; it costs a little memory, not time.
    """
    import torch._functorch.config as functorch_config

    if hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False


@dataclass
class StepResult:
    loss: torch.Tensor  # mean over micro-batches, detached, on the device (no host sync)
    out: Any  # the last micro-batch's ModelOutput (its stats are logged)
    grad_norm: torch.Tensor | None
    lm_weight: float
    jepa_weight: float | None  # None for the baseline
    ema_momentum: float | None  # None for the baseline
    grads: dict[str, float | None] | None = None  # gradprobe.FIELDS when probed


def set_schedules(tr: Trainee, step: int, max_steps: int) -> tuple[float, float | None, float | None]:
    """Learning rates for `step`; returns (lm_weight, jepa_weight, ema momentum) for it."""
    from jepa_core.model import ema_momentum_at, jepa_weight_at, lm_weight_at
    from jepa_core.train.schedule import lr_factor

    factor = lr_factor(tr.cfg.optim, step, max_steps)
    for g, base in zip(tr.optimizer.param_groups, tr.base_lrs, strict=True):
        g["lr"] = base * factor
    if tr.model.is_baseline:
        return 1.0, None, None
    j = tr.cfg.jepa
    return lm_weight_at(j, step, max_steps), jepa_weight_at(j, step, max_steps), ema_momentum_at(j, step, max_steps)


def train_step(
    tr: Trainee, next_batch: Callable[[], Batch], step: int, max_steps: int, *,
    want_grad_norm: bool = False, probe_grads: bool = False, clock: Any = None,
) -> StepResult:
    """One optimizer step (1-based `step`) over `grad_accum_steps` micro-batches from `next_batch`.

    `probe_grads` measures the LM and JEPA gradients on the backbone (gradprobe.py) at the
    cost of one more backward; JEPA runs only, and not under DDP, where the step's gradient
    is the ranks' average but the probe's would be this rank's own. `clock` (a
    phases.PhaseClock) times forward, backward, optimizer and teacher: bench and preflight only.
    """
    from jepa_core.train.phases import NO_CLOCK

    clock = clock or NO_CLOCK
    lm_w, jepa_w, momentum = set_schedules(tr, step, max_steps)
    # tensors, not Python floats: a compiled forward would otherwise be specialised
    # on (and recompiled for) every new value of a ramping or annealed weight
    lm_w_t = torch.tensor(lm_w, dtype=torch.float32)
    jepa_w_t = torch.tensor(jepa_w or 0.0, dtype=torch.float32)
    probe = probe_grads and jepa_w is not None and not (tr.ddp or tr.fsdp)
    accum = tr.cfg.train.grad_accum_steps
    loss_acc = torch.zeros((), device=tr.device)
    out = grads = None
    for micro in range(accum):
        x, y = move_batch(*next_batch(), tr.device, tr.plan)
        clock.start()
        no_sync = tr.ddp and micro < accum - 1
        with tr.fwd.no_sync() if no_sync else contextlib.nullcontext():
            with tr.plan.autocast():
                out = tr.fwd(x, y, lm_w_t, jepa_weight=jepa_w_t)
            clock.lap("forward")
            # the first micro-batch: nothing else is in .grad yet, so its gradient is read directly
            probed = _probe_before(tr, out, lm_w_t, jepa_w_t) if probe and micro == 0 else None
            (out.loss / accum).backward()
            if probed is not None:
                grads = probed.after_backward()
        loss_acc += out.loss.detach() / accum
        clock.lap("backward")
    if tr.fsdp:
        from jepa_core.train.fsdp import average_replicated_grads

        average_replicated_grads(tr.model, torch.distributed.get_world_size())
    params = tr.params
    clip = tr.cfg.optim.grad_clip
    grad_norm = None
    if clip > 0 or want_grad_norm:
        if tr.fsdp:  # each rank holds a shard of every gradient: the norm is a collective
            from jepa_core.train.fsdp import clip_grad_norm_
        else:
            clip_grad_norm_ = _clip_on_host if tr.plan.sync_every_step else torch.nn.utils.clip_grad_norm_
        grad_norm = clip_grad_norm_(params, clip if clip > 0 else float("inf"))
    tr.optimizer.step()
    tr.optimizer.zero_grad(set_to_none=True)
    clock.lap("optimizer")  # gradient clipping included
    if momentum is not None:
        tr.model.update_teacher(momentum)
    clock.lap("teacher")
    clock.end_step()
    return StepResult(loss_acc, out, grad_norm, lm_w, jepa_w, momentum, grads)


def _clip_on_host(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """torch's clip_grad_norm_, minus its multiply by exactly 1.0 when the norm is under `max_norm`.

    torch always multiplies (by a factor clamped to 1) so as never to wait for the device; where
    the step syncs anyway (CPU) the branch is free and saves a pass over every gradient. The
    result is bitwise torch's: the skipped multiply is by 1.0.
    """
    utils = torch.nn.utils
    if not hasattr(utils, "get_total_norm"):  # torch < 2.6
        return utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params if p.grad is not None]
    total = utils.get_total_norm(grads)
    # torch's factor, computed as torch computes it; a NaN norm multiplies too (and the loop stops)
    if not bool(max_norm / (total + 1e-6) >= 1.0):
        utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def _probe_before(tr: Trainee, out, lm_w_t: torch.Tensor, jepa_w_t: torch.Tensor):
    from jepa_core.train.gradprobe import GradProbe

    # the weighted terms exactly as the total loss holds them
    dev = out.loss.device
    return GradProbe.before_backward(tr.model, lm_w_t.to(dev) * out.lm_loss, jepa_w_t.to(dev) * out.jepa_loss,
                                     tr.cfg.train.grad_accum_steps, exact_lm=tr.plan.autocast_dtype is not None)
