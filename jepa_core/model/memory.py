"""The training-memory estimate of a config, beside the model it describes (as `flops.py` is for FLOPs).

The trainer refuses a run that cannot fit before allocating anything (`train.build`), and
`jepa preflight` shows the same figure; a model change (grouped-query attention, say) is
made here and in `flops.py`, next to `transformer.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from jepa_core.config import Config
from jepa_core.units import fmt_bytes, fmt_count

# The memory estimate may use this fraction of the device's memory (the rest: CUDA
# context, allocator fragmentation, the OS and other processes on a CPU box).
MEMORY_BUDGET_FRACTION = 0.9


@dataclass(frozen=True)
class MemoryEstimate:
    """Training memory, in bytes, by the formula in `estimate_memory`."""

    params_total: int
    params_trainable: int
    weights: int
    grads: int
    optimizer: int
    activations_per_seq: int
    activations_per_batch_extra: int
    batch_size: int

    @property
    def static(self) -> int:
        return self.weights + self.grads + self.optimizer

    @property
    def activations(self) -> int:
        return self.batch_size * self.activations_per_seq + self.activations_per_batch_extra

    @property
    def total(self) -> int:
        return self.static + self.activations

    def max_batch_size(self, budget: float) -> int:
        """The largest micro-batch whose estimate fits `budget` bytes (0 when none does)."""
        extra_per_seq = self.activations_per_batch_extra / max(1, self.batch_size**2)
        lo, hi = 0, max(1, self.batch_size) * 1024
        # the pair term grows as B^2, so search instead of solving
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.static + mid * self.activations_per_seq + extra_per_seq * mid * mid <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo


def estimate_memory(cfg: Config, vocab_size: int | None = None, precision: str = "fp32") -> MemoryEstimate:
    """Training memory of one rank, by formula (an estimate, meant to catch gross misfits).

    P_total: every parameter incl. the EMA teacher; P_train: trainable ones
    (exact counts, from the model built on the meta device: no memory used).
      weights    = 4 * P_total            fp32 master weights (autocast keeps them fp32)
      grads      = 4 * P_train
      optimizer  = 8 * P_train            AdamW exp_avg and exp_avg_sq, fp32
      activations per sequence = T * (L * (10 d + 4 h) * a + [JEPA] 4 d * a + d * a + V * (a + 12))
        saved per block and token: ~10 d (norm inputs/outputs, q/k/v, attention
        output, projections) + 4 h (SwiGLU u, v, silu(u), product), h the SwiGLU
        width; 4 d for the lm_bridge; d for the embedding output; the logits in
        the compute dtype plus their fp32 copy, log-softmax and gradient (3 x 4 bytes);
        a = 2 bytes under bf16, 4 under fp32. SDPA is assumed flash/memory-efficient
        (no T^2 attention matrix stored).
      pairs      = 12 * (B * P)^2 per micro-batch: the InfoNCE logits, mask and softmax.
    total = weights + grads + optimizer + B * activations_per_sequence + pairs
    """
    from .jepa import JepaLM
    from .transformer import swiglu_hidden

    V = vocab_size or cfg.data.vocab_size
    with torch.device("meta"):
        model = JepaLM.from_config(cfg, V)
    p_total = sum(p.numel() for p in model.parameters())
    teacher = {id(p) for p in model.teacher_parameters()}
    p_train = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in teacher)
    m = cfg.model
    d, L, T, B = m.d_model, m.n_layers, cfg.data.block_size, cfg.train.batch_size
    h = swiglu_hidden(d, m.ff_multiplier, m.ff_round)
    a = 2 if precision == "bf16" else 4
    per_token = L * (10 * d + 4 * h) * a + d * a + V * (a + 12)
    pairs = 0
    if not cfg.jepa.run_baseline:
        per_token += 4 * d * a if m.lm_bridge else 0
        n_pairs = B * cfg.jepa.pairs_per_seq
        pairs = 12 * n_pairs * n_pairs
    return MemoryEstimate(
        params_total=p_total,
        params_trainable=p_train,
        weights=4 * p_total,
        grads=4 * p_train,
        optimizer=8 * p_train,
        activations_per_seq=T * per_token,
        activations_per_batch_extra=pairs,
        batch_size=B,
    )


def memory_verdict(est: MemoryEstimate, cfg: Config, capacity: int, what: str) -> tuple[bool, str]:
    """(fits, detail) of an estimate against `capacity` bytes, with a batch-size suggestion."""
    budget = MEMORY_BUDGET_FRACTION * capacity
    B, accum = cfg.train.batch_size, cfg.train.grad_accum_steps
    head = (
        f"params {fmt_count(est.params_total)} ({fmt_count(est.params_trainable)} trainable): weights {fmt_bytes(est.weights)} + grads "
        f"{fmt_bytes(est.grads)} + AdamW {fmt_bytes(est.optimizer)} + activations {fmt_bytes(est.activations)} "
        f"(batch {B} x {cfg.data.block_size}) = {fmt_bytes(est.total)} of {fmt_bytes(capacity)} {what}"
    )
    if est.total <= budget:
        return True, f"{head} ({100 * est.total / capacity:.0f}%)"
    b = est.max_batch_size(budget)
    if b >= 1:
        new_accum = math.ceil(B * accum / b)
        hint = f"suggest --set train.batch_size={b} --set train.grad_accum_steps={new_accum} (same tokens per step)"
    else:
        hint = f"the weights and optimizer alone need {fmt_bytes(est.static)}: use a smaller model (d_model, n_layers) or vocab"
    return False, f"does not fit: {head}; {hint}"
