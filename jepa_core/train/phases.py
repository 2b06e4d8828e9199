"""Where a step's time goes: forward, backward, optimizer, teacher; and what an unusual split means.

`train_step` takes an optional `PhaseClock`; `jepa bench` and `jepa preflight` pass one
on a few extra steps. The loop does not: the clock syncs the device at every phase
boundary (so GPU work is charged to the phase that queued it), which costs throughput.
`phase_notes` turns a split into one-line advice, in the same words for both tools.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from jepa_core.config import Config

PHASES = ("forward", "backward", "optimizer", "teacher")

# Shares of a step above which a phase is worth a note. On a healthy small model forward and
# backward are about 85-90% of the step: AdamW is a few %, Muon with fp32 Newton-Schulz ~10%,
# the projector teacher's EMA ~1%, the encoder teacher's (a copy of the whole backbone) ~5%.
OPTIMIZER_SHARE_NOTE = 0.25
TEACHER_SHARE_NOTE = 0.15


class PhaseClock:
    """Milliseconds per phase, summed over the steps it was handed to; `per_step()` averages."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.total_ms = dict.fromkeys(PHASES, 0.0)
        self.steps = 0
        self._t = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        self._t = self._now()

    def lap(self, phase: str) -> None:
        now = self._now()
        self.total_ms[phase] += (now - self._t) * 1e3
        self._t = now

    def end_step(self) -> None:
        self.steps += 1

    def per_step(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.total_ms.items()}


class _NoClock:
    """What `train_step` times with when nobody asked: nothing, at no cost."""

    def start(self) -> None: ...

    def lap(self, phase: str) -> None: ...

    def end_step(self) -> None: ...


NO_CLOCK = _NoClock()


def phase_shares(phase_ms: dict[str, float]) -> dict[str, float]:
    total = sum(phase_ms.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in phase_ms.items()}


def phase_notes(phase_ms: dict[str, float], cfg: "Config", device: torch.device) -> list[str]:
    """One line per phase whose share of the step is unusual: the likely cause and the `--set` that changes it."""
    from jepa_core.train.device import fast_bf16_matmul, resolve_ns_dtype

    share = phase_shares(phase_ms)
    notes = []
    o = cfg.optim
    if share.get("optimizer", 0.0) > OPTIMIZER_SHARE_NOTE:
        head = f"the optimizer is {share['optimizer']:.0%} of the step"
        if o.optimizer == "muon":
            dtype, _ = resolve_ns_dtype(o.muon_ns_dtype, device)
            fast, why = fast_bf16_matmul(device)
            if dtype == torch.bfloat16 and not fast:
                notes.append(
                    f"{head}: Muon's Newton-Schulz runs in bf16 and {why}; "
                    "--set optim.muon_ns_dtype=auto (or fp32) makes it several times faster"
                )
            else:
                notes.append(
                    f"{head}: Muon's {o.muon_ns_steps} Newton-Schulz iterations per matrix are a fixed cost per step, "
                    "large next to this batch; a larger train.batch_size amortises it, or --set optim.optimizer=adamw"
                )
        else:
            notes.append(f"{head}: AdamW's per-parameter updates dominate (a very small model, or many small tensors)")
    if share.get("teacher", 0.0) > TEACHER_SHARE_NOTE and not cfg.jepa.run_baseline:
        cause = "the encoder teacher averages a copy of the whole backbone" if cfg.jepa.teacher == "encoder" else "the EMA update"
        notes.append(f"the teacher update is {share['teacher']:.0%} of the step: {cause}; --set jepa.teacher=projector is cheaper")
    return notes
