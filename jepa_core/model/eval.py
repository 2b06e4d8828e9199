"""Evaluation helpers: fixed-pair JEPA retrieval, effective rank, bits per byte.

Retrieval: for every pair, the prediction p_i is compared (cosine) with the
targets y_j of all eval pairs of the same horizon; top-1 is right when its own
target scores highest. With n candidates chance is 1/n, so the
chance-normalised score (acc - 1/n) / (1 - 1/n) is 0 at chance and 1 when
perfect, comparable across horizons and eval sizes. The margin is the mean of
(positive similarity - best negative similarity). Candidates are all pairs of
the horizon whatever `jepa.negatives` says, so runs compare on the same task.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import JepaConfig
from .jepa import JepaLM, Pairs, sample_anchor_target_pairs


def fixed_eval_pairs(batch_size: int, seq_len: int, jcfg: JepaConfig, n_pairs: int, seed: int) -> Pairs:
    """n_pairs pairs over a (batch_size, seq_len) batch, on the CPU, from a private
    seeded generator: the same every eval, and the global RNG is left untouched."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    per_seq = max(1, math.ceil(n_pairs / batch_size))
    pairs = sample_anchor_target_pairs(
        batch_size, seq_len, jcfg.horizons, jcfg.horizon_probs, per_seq, "cpu", generator=gen
    )
    return Pairs(*(x[:n_pairs] for x in pairs))


def effective_rank(z: torch.Tensor) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values."""
    s = torch.linalg.svdvals(z.detach().double().cpu())
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def bits_per_byte(sum_nats: float, n_bytes: int) -> float:
    """Summed next-token loss in nats over the text's UTF-8 byte count, in bits."""
    if n_bytes <= 0:
        raise ValueError(f"bits_per_byte needs a positive byte count, got {n_bytes}")
    return float(sum_nats) / (math.log(2.0) * n_bytes)


def retrieval_metrics(p: torch.Tensor, y: torch.Tensor, k_idx: torch.Tensor, horizons: list[int]) -> dict[str, float]:
    """Per-horizon top-1 (raw and chance-normalised) and the pooled margin.

    p, y: (N, D) L2-normalised predictions and targets. A horizon with fewer
    than two pairs has no negatives and is left out.
    """
    sims = p.float() @ y.float().T
    out: dict[str, float] = {}
    margins = []
    for hi, k in enumerate(horizons):
        rows = (k_idx == hi).nonzero().flatten()
        n = rows.numel()
        if n < 2:
            continue
        s = sims[rows][:, rows]
        eye = torch.eye(n, dtype=torch.bool, device=s.device)
        correct = int((s.argmax(dim=1) == torch.arange(n, device=s.device)).sum())
        acc = correct / n
        out[f"retrieval_top1_h{k}"] = acc
        out[f"retrieval_top1_norm_h{k}"] = (acc - 1.0 / n) / (1.0 - 1.0 / n)
        margins.append(s.diagonal() - s.masked_fill(eye, float("-inf")).max(dim=1).values)
    if margins:
        out["retrieval_margin"] = float(torch.cat(margins).mean())
    return out


@torch.no_grad()
def jepa_eval_metrics(model: JepaLM, idx: torch.Tensor, pairs: Pairs) -> dict[str, float]:
    """Retrieval top-1 per horizon, its chance-normalised value, margin and the
    effective rank of the anchor latents z_a, in eval mode; {} for the baseline."""
    if model.is_baseline:
        return {}
    was_training = model.training
    model.eval()
    try:
        pairs = pairs.to(idx.device)
        _, h_tap = model.transformer(idx)
        z_a, z_p, z_t = model.jepa_latents(idx, h_tap, pairs)
    finally:
        model.train(was_training)
    p = F.normalize(z_p.float(), dim=-1)
    y = F.normalize(z_t.float(), dim=-1)
    out = retrieval_metrics(p, y, pairs.k_idx, list(model.cfg.jepa.horizons))
    out["eff_rank"] = effective_rank(z_a)
    return out
