"""The engine behind `jepa bench`: time training steps and the machine's matmul peak.

One process, one model shape (the profile's), random tokens. Three arms run
the same step as the training loop (forward, backward, gradient clipping,
AdamW step, zero_grad, EMA teacher update): the LM-only baseline, JEPA with
the projector teacher and JEPA with the encoder teacher. After a warm-up, the
arms are timed in interleaved repeats (baseline, projector, encoder,
baseline, ...), so a change of background load during the run hits every arm
alike and the JEPA/baseline ratios stay meaningful on a shared machine.
Then each arm runs `steps` more steps with a `PhaseClock`, which says where a
step's time goes (forward, backward, optimizer, teacher) and, through
`phase_notes`, what an unusual split means.

The matmul peak is measured in the same run at the model's compute dtype
(square matmuls of a few sizes, best of repeats); MFU is reported against it
and, on a GPU found in the datasheet table, against the datasheet bf16 peak.

Nothing here prints; `run_bench` returns a `BenchReport` (`to_dict()` is the
JSON the CLI writes with --json).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from jepa_core.config import Config, validate
from jepa_core.errors import ConfigError

# The step and its device-dependent plan are training's own (jepa_core/train/step.py): bench
# times `train_step`, the very function the loop calls, not a copy of it.
from jepa_core.train.phases import PhaseClock, phase_notes, phase_shares
from jepa_core.train.step import DEFAULT_FUSED_CPU, StepPlan, build_trainee, move_batch, plan_step, train_step  # noqa: F401

ARMS = ("baseline", "projector", "encoder")
ARM_LABELS = {"baseline": "baseline (LM only)", "projector": "JEPA, projector teacher", "encoder": "JEPA, encoder teacher"}

CPU_MATMUL_SIZES = (256, 512, 1024, 2048)
CUDA_MATMUL_SIZES = (1024, 2048, 4096, 8192)


# --------------------------------------------------------------------------- results


@dataclass
class MatmulPeak:
    """Best measured FLOP/s of an n x n @ n x n matmul, per size, at `dtype`."""

    dtype: str
    by_size: dict[int, float]

    @property
    def flops_per_s(self) -> float:
        return max(self.by_size.values()) if self.by_size else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "flops_per_s": self.flops_per_s, "by_size": {str(k): v for k, v in self.by_size.items()}}


@dataclass
class ArmResult:
    """One arm's timings: `ms_per_step[i]` is repeat i's mean over `steps` steps."""

    name: str
    label: str
    params_trainable: int
    params_teacher: int
    flops_per_token: float
    tokens_per_step: int
    ms_per_step: list[float]
    peak_mem_bytes: int | None = None
    peak_mem_kind: str = ""
    first_step_ms: float | None = None
    compile_s: float | None = None
    phase_ms: dict[str, float] = field(default_factory=dict)  # per step, from extra clocked steps
    phase_notes: list[str] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms_per_step)

    @property
    def min_ms(self) -> float:
        return min(self.ms_per_step)

    @property
    def max_ms(self) -> float:
        return max(self.ms_per_step)

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats: the run's noise, as a fraction."""
        return (self.max_ms - self.min_ms) / self.median_ms if self.median_ms > 0 else 0.0

    @property
    def tok_per_s(self) -> float:
        return self.tokens_per_step / (self.median_ms / 1e3) if self.median_ms > 0 else 0.0

    @property
    def achieved_flops(self) -> float:
        return self.tok_per_s * self.flops_per_token

    def mfu(self, peak_flops: float | None) -> float | None:
        return self.achieved_flops / peak_flops if peak_flops else None


@dataclass
class BenchReport:
    profile: str
    device: str
    device_name: str
    precision: str
    threads: int
    torch_version: str
    shape: dict[str, int]
    steps: int
    repeats: int
    warmup: int
    plan: dict[str, Any]
    matmul: MatmulPeak
    datasheet_peak: float | None
    arms: list[ArmResult]
    load_avg: dict[str, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    precision_why: str = ""  # the setting, or what `auto` saw

    def arm(self, name: str) -> ArmResult | None:
        return next((a for a in self.arms if a.name == name), None)

    @property
    def ratios(self) -> dict[str, float]:
        """Median step time of each JEPA arm over the baseline's (same process, interleaved)."""
        base = self.arm("baseline")
        if base is None or base.median_ms <= 0:
            return {}
        return {a.name: a.median_ms / base.median_ms for a in self.arms if a.name != "baseline"}

    def to_dict(self) -> dict[str, Any]:
        peak = self.matmul.flops_per_s
        arms = []
        for a in self.arms:
            arms.append(
                {
                    "name": a.name,
                    "label": a.label,
                    "ms_per_step": {"median": a.median_ms, "min": a.min_ms, "max": a.max_ms, "spread": a.spread, "repeats": a.ms_per_step},
                    "tok_per_s": a.tok_per_s,
                    "tokens_per_step": a.tokens_per_step,
                    "flops_per_token": a.flops_per_token,
                    "achieved_flops_per_s": a.achieved_flops,
                    "mfu_measured": a.mfu(peak),
                    "mfu_datasheet": a.mfu(self.datasheet_peak),
                    "peak_mem_bytes": a.peak_mem_bytes,
                    "peak_mem_kind": a.peak_mem_kind,
                    "params_trainable": a.params_trainable,
                    "params_teacher": a.params_teacher,
                    "first_step_ms": a.first_step_ms,
                    "compile_s": a.compile_s,
                    "phase_ms": a.phase_ms,
                    "phase_share": phase_shares(a.phase_ms),
                    "phase_notes": a.phase_notes,
                }
            )
        return {
            "profile": self.profile,
            "device": self.device,
            "device_name": self.device_name,
            "precision": self.precision,
            "precision_why": self.precision_why,
            "threads": self.threads,
            "torch_version": self.torch_version,
            "shape": self.shape,
            "steps": self.steps,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "plan": self.plan,
            "matmul_peak": self.matmul.to_dict(),
            "datasheet_peak_flops_per_s": self.datasheet_peak,
            "arms": arms,
            "ratios_vs_baseline": self.ratios,
            "load_avg": self.load_avg,
            "wall_s": self.wall_s,
            "notes": self.notes,
        }


# --------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(
    device: torch.device, dtype: torch.dtype, sizes: Sequence[int], repeats: int = 5, min_time_s: float = 0.05
) -> MatmulPeak:
    """Best-of-`repeats` FLOP/s (2 n^3 per product) of square matmuls; each repeat runs
    enough products to last about `min_time_s`, so timer resolution does not matter."""
    out: dict[int, float] = {}
    gen = torch.Generator(device="cpu").manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
        c = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=c)  # warm-up: library init, workspace
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        _sync(device)
        one = max(time.perf_counter() - t0, 1e-7)
        iters = max(1, min(1000, int(min_time_s / one)))
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                torch.mm(a, b, out=c)
            _sync(device)
            best = min(best, (time.perf_counter() - t0) / iters)
        out[n] = 2.0 * n**3 / best
        del a, b, c
    return MatmulPeak(dtype=str(dtype).replace("torch.", ""), by_size=out)


def _reset_peak_rss() -> bool:
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS, so each arm gets its own high-water mark
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss: kilobytes on Linux, bytes on macOS; a process-lifetime high-water mark
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def arm_config(cfg: Config, arm: str) -> Config:
    """The profile's shape with the arm's objective: LM-only, or JEPA with the given teacher."""
    if arm not in ARMS:
        raise ConfigError(f"Unknown bench arm {arm!r}.", hint=f"Arms: {', '.join(ARMS)}.")
    raw = cfg.to_dict()
    raw["jepa"] = dict(raw["jepa"], run_baseline=arm == "baseline")
    if arm != "baseline":
        raw["jepa"]["teacher"] = arm
    return validate(raw, source=f"bench arm {arm}")


class _Arm:
    """One arm: a model and optimizer built as the training loop builds them, stepped by `train_step`."""

    def __init__(self, name: str, cfg: Config, vocab_size: int, device: torch.device, plan: StepPlan, seed: int):
        from jepa_core.model import estimate_flops_per_token

        self.name, self.cfg = name, cfg
        self.trainee = build_trainee(cfg, vocab_size, device, plan, seed=seed)
        self.model = self.trainee.model
        self.flops_per_token = estimate_flops_per_token(cfg, vocab_size)
        counts = self.model.param_counts()
        self.params_trainable, self.params_teacher = counts["total_trainable"], counts["teacher"]
        self.step_no = 0

    def step(self, x: torch.Tensor, y: torch.Tensor, clock: PhaseClock | None = None) -> None:
        """One training step on (x, y) (every micro-batch of it), with the loop's per-step host sync on CPU."""
        self.step_no += 1
        max_steps = self.cfg.train.max_steps
        res = train_step(self.trainee, lambda: (x, y), min(self.step_no, max_steps), max_steps, clock=clock)
        if self.trainee.plan.sync_every_step:
            res.loss.item()


def _time_phases(arm: _Arm, res: ArmResult, batches: list, steps: int, device: torch.device) -> None:
    """Where the time goes: extra steps with a clock that syncs at every phase boundary (apart
    from the timed repeats, whose throughput the syncs would lower on a GPU)."""
    clock = PhaseClock(device)
    for i in range(steps):
        arm.step(*batches[i % len(batches)], clock=clock)
    res.phase_ms = clock.per_step()
    res.phase_notes = phase_notes(res.phase_ms, arm.cfg, device)


def _build_and_warm(name: str, cfg: Config, device: torch.device, plan, seed: int, warmup: int, batches: list, say) -> tuple[_Arm, ArmResult]:
    """Build one arm and run its untimed warm-up steps, recording its memory high-water mark and
    its first step (which, compiled, is compile time plus one step)."""
    V, B, T = cfg.data.vocab_size, cfg.train.batch_size, cfg.data.block_size
    say(f"building {name}")
    arm = _Arm(name, arm_config(cfg, name), V, device, plan, seed)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        mem_kind = "cuda_max_allocated"
    else:
        mem_kind = "cpu_rss_hwm" if _reset_peak_rss() else "cpu_ru_maxrss"
    say(f"warming up {name}")
    first_ms = None
    for i in range(max(warmup, 1 if plan.compile else 0)):
        _sync(device)
        t0 = time.perf_counter()
        arm.step(*batches[i % len(batches)])
        _sync(device)
        if i == 0:
            first_ms = (time.perf_counter() - t0) * 1e3
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss_bytes()
    res = ArmResult(
        name=name,
        label=ARM_LABELS[name],
        params_trainable=arm.params_trainable,
        params_teacher=arm.params_teacher,
        flops_per_token=arm.flops_per_token,
        tokens_per_step=B * T * cfg.train.grad_accum_steps,
        ms_per_step=[],
        peak_mem_bytes=int(peak),
        peak_mem_kind=mem_kind,
        first_step_ms=first_ms,
    )
    return arm, res


def _time_repeats(built: list[_Arm], results: dict[str, ArmResult], batches: list, steps: int, repeats: int, device: torch.device, say) -> None:
    """`repeats` rounds of `steps` timed steps, the arms interleaved round by round (so a change in
    the machine's load falls on every arm alike)."""
    for r in range(repeats):
        for arm in built:
            say(f"timing {arm.name} (repeat {r + 1}/{repeats})")
            _sync(device)
            t0 = time.perf_counter()
            for i in range(steps):
                arm.step(*batches[i % len(batches)])
            _sync(device)
            results[arm.name].ms_per_step.append((time.perf_counter() - t0) * 1e3 / steps)
        if device.type == "cuda":
            for arm in built:
                res = results[arm.name]
                res.peak_mem_bytes = max(res.peak_mem_bytes or 0, int(torch.cuda.max_memory_allocated(device)))


def _shape(cfg: Config) -> dict:
    from jepa_core.model.transformer import swiglu_hidden

    m = cfg.model
    return {
        "batch_size": cfg.train.batch_size,
        "block_size": cfg.data.block_size,
        "d_model": m.d_model,
        "n_layers": m.n_layers,
        "n_heads": m.n_heads,
        "ff_hidden": swiglu_hidden(m.d_model, m.ff_multiplier, m.ff_round),
        "vocab_size": cfg.data.vocab_size,
        "tap_index": cfg.tap_index,
        "pairs_per_seq": cfg.jepa.pairs_per_seq,
        "latent_dim": cfg.jepa.latent_dim,
    }


def run_bench(
    cfg: Config,
    *,
    steps: int = 10,
    repeats: int = 5,
    warmup: int = 3,
    arms: Sequence[str] = ARMS,
    matmul_sizes: Sequence[int] | None = None,
    matmul_repeats: int = 5,
    fused_cpu: bool | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Time `arms` at `cfg`'s shape and measure the matmul peak; see the module docstring.

    Each arm runs `warmup` untimed steps, then `repeats` rounds of `steps`
    timed steps, the arms interleaved round by round. `fused_cpu` overrides
    the CPU fused-AdamW choice (None: the default the loop uses).
    """
    from jepa_core.train.allocator import allocator_label
    from jepa_core.train.device import compile_unavailable_reason, gpu_peak_flops, ns_dtype_label, resolve_runtime, slow_bf16_note

    if steps < 1 or repeats < 1 or warmup < 0:
        raise ConfigError(f"bench needs steps >= 1, repeats >= 1 and warmup >= 0 (got {steps}, {repeats}, {warmup}).")
    if not arms:
        raise ConfigError("bench needs at least one arm.", hint=f"Arms: {', '.join(ARMS)}.")
    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    device = rt.device
    plan = plan_step(cfg, device, rt.precision, fused_cpu=DEFAULT_FUSED_CPU if fused_cpu is None else fused_cpu)
    notes: list[str] = [n for n in (slow_bf16_note(rt),) if n]
    if plan.compile:
        why_not = compile_unavailable_reason(device)
        if why_not:
            plan = dataclasses.replace(plan, compile=False)
            notes.append(why_not)
    V, B, T = cfg.data.vocab_size, cfg.train.batch_size, cfg.data.block_size

    # random tokens, made before timing (data preparation is off the critical path)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    batches = [torch.randint(0, V, (B, T + 1), generator=gen) for _ in range(4)]
    batches = [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in batches]

    built: list[_Arm] = []
    results: dict[str, ArmResult] = {}
    for name in arms:
        arm, results[name] = _build_and_warm(name, cfg, device, plan, seed, warmup, batches, say)
        built.append(arm)
    _time_repeats(built, results, batches, steps, repeats, device, say)

    for arm in built:
        say(f"timing {arm.name}'s phases")
        _time_phases(arm, results[arm.name], batches, steps, device)

    for arm in built:
        res = results[arm.name]
        if plan.compile and res.first_step_ms is not None:
            # the first compiled step is compile + one step; report compile time apart from throughput
            res.compile_s = max(0.0, (res.first_step_ms - res.median_ms) / 1e3)

    say("measuring the matmul peak")
    mm_dtype = rt.autocast_dtype or torch.float32
    sizes = tuple(matmul_sizes) if matmul_sizes else (CUDA_MATMUL_SIZES if device.type == "cuda" else CPU_MATMUL_SIZES)
    matmul = measure_matmul_peak(device, mm_dtype, sizes, repeats=matmul_repeats)
    datasheet = gpu_peak_flops(device) if (device.type == "cuda" and mm_dtype == torch.bfloat16) else None

    load_end = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    return BenchReport(
        profile=cfg.name,
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        precision=rt.precision,
        precision_why=rt.why,
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        shape=_shape(cfg),
        steps=steps,
        repeats=repeats,
        warmup=warmup,
        plan={
            "fused_adamw": plan.fused_adamw,
            "compile": plan.compile,
            "pin_memory": plan.pin_memory,
            "grad_accum_steps": cfg.train.grad_accum_steps,
            "autocast": str(plan.autocast_dtype).replace("torch.", "") if plan.autocast_dtype else None,
            "optimizer": cfg.optim.optimizer,
            "muon_ns_dtype": ns_dtype_label(cfg.optim.optimizer, cfg.optim.muon_ns_dtype, device),
            "allocator": allocator_label(),
        },
        matmul=matmul,
        datasheet_peak=datasheet,
        arms=[results[n] for n in arms],
        load_avg={"start": load_start, "end": load_end},
        wall_s=time.perf_counter() - t_start,
        notes=notes,
    )

