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
    # train.parallel = "fsdp": weights, grads and optimizer are one rank's shards of `ranks`;
    # `gathered` is what FSDP holds whole at once (the root group and two blocks, with their grads)
    ranks: int = 1
    gathered: int = 0

    @property
    def static(self) -> int:
        return self.weights + self.grads + self.optimizer + self.gathered

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


def estimate_memory(cfg: Config, vocab_size: int | None = None, precision: str = "fp32", world_size: int = 1) -> MemoryEstimate:
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

    Under train.parallel = "fsdp" over W > 1 ranks (train/fsdp.py) a rank keeps 1/W of
    weights, grads and optimizer (rounded up), and holds whole, at once, the root group (all
    but the blocks: embeddings, head, JEPA heads, teacher projector) and two blocks (the one
    running and the one prefetched), each with a gradient of the same size while it is reduced:
      gathered   = 2 * a * (P_root + 2 * P_block)
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
    weights, grads, optimizer, ranks, gathered = 4 * p_total, 4 * p_train, 8 * p_train, 1, 0
    if world_size > 1 and cfg.train.parallel == "fsdp":
        ranks = world_size
        weights, grads, optimizer = (math.ceil(x / ranks) for x in (weights, grads, optimizer))
        blocks = list(model.transformer.blocks)
        if model.teacher is not None and model.teacher.encoder is not None:
            blocks += list(model.teacher.encoder.blocks)
        p_block = sum(p.numel() for p in blocks[0].parameters())
        p_root = p_total - sum(p.numel() for b in blocks for p in b.parameters())
        gathered = 2 * a * (p_root + 2 * p_block)
    return MemoryEstimate(
        params_total=p_total,
        params_trainable=p_train,
        weights=weights,
        grads=grads,
        optimizer=optimizer,
        activations_per_seq=T * per_token,
        activations_per_batch_extra=pairs,
        batch_size=B,
        ranks=ranks,
        gathered=gathered,
    )


def memory_verdict(est: MemoryEstimate, cfg: Config, capacity: int, what: str) -> tuple[bool, str]:
    """(fits, detail) of an estimate against `capacity` bytes, with a batch-size suggestion."""
    budget = MEMORY_BUDGET_FRACTION * capacity
    B, accum = cfg.train.batch_size, cfg.train.grad_accum_steps
    shard = f" (1/{est.ranks} each, fsdp) + gathered {fmt_bytes(est.gathered)}" if est.ranks > 1 else ""
    head = (
        f"params {fmt_count(est.params_total)} ({fmt_count(est.params_trainable)} trainable): weights {fmt_bytes(est.weights)} + grads "
        f"{fmt_bytes(est.grads)} + AdamW {fmt_bytes(est.optimizer)}{shard} + activations {fmt_bytes(est.activations)} "
        f"(batch {B} x {cfg.data.block_size}) = {fmt_bytes(est.total)}{' per rank' if est.ranks > 1 else ''} of {fmt_bytes(capacity)} {what}"
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
