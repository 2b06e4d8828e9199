"""Evaluation: whole-split LM scoring (bits per byte) and the JEPA representation probes.

LM: `score_lm` scores every validation token after the first exactly once
(non-overlapping blocks, or sliding windows with a stride) and returns the
summed nats, the number of scored tokens and the UTF-8 bytes of those target
tokens; BPB = nats / (ln 2 * bytes).

Retrieval: for every pair of a fixed eval set, the prediction p_i is compared
(cosine) with the targets y_j of all eval pairs of the same horizon; top-1 is
right when its own target scores highest. With n candidates chance is 1/n, so
the chance-normalised score (acc - 1/n) / (1 - 1/n) is 0 at chance and 1 when
perfect, comparable across horizons and eval sizes. The margin is the mean of
(positive similarity - best negative similarity). Candidates are all pairs of
the horizon whatever `jepa.negatives` says, so runs compare on the same task.

Copy control: the same retrieval with the query replaced by the teacher's
latent of the anchor token itself (target projector at t: no predictor, no
horizon). It measures how far the targets can be told apart by recognising
the anchor's surroundings (its sequence, its neighbourhood) alone; prediction's
lift over it is what the predictor adds.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import JepaConfig
from .jepa import JepaLM, Pairs, sample_anchor_target_pairs

# --------------------------------------------------------------------------- LM scoring


class LMScore(NamedTuple):
    nats: float  # summed next-token cross-entropy over the scored targets
    n_tokens: int  # scored targets
    n_bytes: int  # UTF-8 bytes of the scored target tokens


def score_lm(
    logits_fn: Callable[..., torch.Tensor],
    val_tokens: np.ndarray,
    block_size: int,
    batch_size: int,
    stride: int = 0,
    max_tokens: int = 0,
    token_bytes: Sequence[int] | np.ndarray | None = None,
    *,
    with_starts: bool = False,
) -> LMScore:
    """Score the validation stream once per token (see `val_windows` for the windows).

    `logits_fn(x)` maps (b, L) int64 CPU inputs to (b, L, V) logits (on any
    device; it moves x itself and sets eval mode / autocast); with
    `with_starts` it is called as `logits_fn(x, starts)`, starts the windows'
    offsets in the split (so it can reuse the pass, as the JEPA probes do).
    `token_bytes[id]` is the byte length of token `id`; bytes are counted over
    the scored *targets*, the text the nats are about. Without it n_bytes is 0.
    """
    from ..data.batching import iter_val_batches, val_windows

    windows = val_windows(len(val_tokens), block_size, stride, max_tokens)
    # a copy: tokenizers hand out a read-only array, which torch would warn about
    lengths = None if token_bytes is None else torch.from_numpy(np.array(token_bytes, dtype=np.int64))
    sums: list[torch.Tensor] = []
    n_tokens = n_bytes = 0
    with torch.no_grad():
        for x, y, skip, start in iter_val_batches(val_tokens, windows, batch_size):
            scored = torch.arange(x.shape[1])[None, :] >= skip[:, None]  # (b, L) on the CPU
            logits = logits_fn(x, start) if with_starts else logits_fn(x)
            dev = logits.device
            yd = y.to(dev)
            if bool(scored.all()):
                flat, tgt = logits.reshape(-1, logits.shape[-1]), yd.reshape(-1)
            else:
                m = scored.to(dev)
                flat, tgt = logits[m], yd[m]
            sums.append(F.cross_entropy(flat.float(), tgt, reduction="sum"))
            n_tokens += int(scored.sum())
            if lengths is not None:
                n_bytes += int(lengths[y[scored]].sum())
    nats = float(torch.stack(sums).cpu().double().sum()) if sums else 0.0
    return LMScore(nats, n_tokens, n_bytes)


def bits_per_byte(sum_nats: float, n_bytes: int) -> float:
    """Summed next-token loss in nats over the text's UTF-8 byte count, in bits."""
    if n_bytes <= 0:
        raise ValueError(f"bits_per_byte needs a positive byte count, got {n_bytes}")
    return float(sum_nats) / (math.log(2.0) * n_bytes)


# --------------------------------------------------------------------------- the fixed pair set


class EvalPairSet(NamedTuple):
    """Fixed eval pairs over full validation blocks tokens[s : s + T], s in `starts`
    (multiples of T: the blocks of non-overlapping LM scoring); `pairs.b` indexes `starts`."""

    starts: np.ndarray
    pairs: Pairs


def max_pairs_per_seq(seq_len: int, jcfg: JepaConfig) -> int:
    """The most pairs one sequence holds without replacement (p_k * P <= T - k for every k)."""
    caps = [math.floor((seq_len - k) / p + 1e-9) for k, p in zip(jcfg.horizons, jcfg.horizon_probs) if p > 0]
    return max(1, min(caps)) if caps else 1


def eval_pair_set(n_tokens: int, block_size: int, jcfg: JepaConfig, n_pairs: int, seed: int) -> EvalPairSet:
    """At least n_pairs pairs (when the split holds that many), the same every eval.

    jepa.pairs_per_seq pairs per block, the training density, over
    ceil(n_pairs / pairs_per_seq) full blocks spread evenly over the split; a
    split with too few blocks gets more pairs per block, up to what one block
    holds without replacement. Drawn on the CPU from a private generator seeded
    with `seed`: the global RNG is left alone.
    """
    T = int(block_size)
    n_full = (int(n_tokens) - 1) // T  # blocks of T inputs with their T targets, as LM scoring sees them
    if n_full < 1:
        raise ValueError(f"the validation split ({n_tokens} tokens) holds no full block of {T}")
    per_seq = jcfg.pairs_per_seq
    want = max(1, math.ceil(n_pairs / per_seq))
    if want <= n_full:
        k = (np.arange(want, dtype=np.int64) * n_full) // want
    else:
        k = np.arange(n_full, dtype=np.int64)
        per_seq = min(max(per_seq, math.ceil(n_pairs / n_full)), max_pairs_per_seq(T, jcfg))
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    pairs = sample_anchor_target_pairs(len(k), T, jcfg.horizons, jcfg.horizon_probs, per_seq, "cpu", generator=gen)
    return EvalPairSet(k * T, pairs)


# --------------------------------------------------------------------------- metrics


def effective_rank(z: torch.Tensor) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values.

    NaN for non-finite latents (the SVD would raise, and a diverging run must end as
    "diverged" at its next loss check, not "failed" inside an eval)."""
    z = z.detach().double().cpu()
    if not bool(torch.isfinite(z).all()):
        return float("nan")
    s = torch.linalg.svdvals(z)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def retrieval_metrics(p: torch.Tensor, y: torch.Tensor, k_idx: torch.Tensor, horizons: list[int]) -> dict[str, float]:
    """Per-horizon top-1 (raw and chance-normalised) and the pooled margin.

    p, y: (N, D) L2-normalised queries and targets. A horizon with fewer
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


class EvalLatents(NamedTuple):
    z_a: torch.Tensor  # online anchor latents
    z_p: torch.Tensor  # predictions
    z_t: torch.Tensor  # teacher latents at t + k (the targets)
    z_c: torch.Tensor  # teacher latents at t (the copy-control queries)


def pair_latents(model: JepaLM, idx: torch.Tensor, h_tap: torch.Tensor, pairs: Pairs) -> EvalLatents:
    """The four latents of `pairs` over the batch `idx` whose tap activations are `h_tap`
    (from a forward already run), without gradients, in the model's current mode."""
    with torch.no_grad():
        z_a = model.jepa.online_proj(h_tap[pairs.b, pairs.t])
        z_p = model.jepa.predict(z_a, pairs.k_idx)
        h_teacher = model.teacher.encoder(idx) if model.teacher.encoder is not None else h_tap
        rows = torch.cat((pairs.tpos, pairs.t))
        z = model.teacher.target_proj(h_teacher[torch.cat((pairs.b, pairs.b)), rows])
        n = pairs.b.numel()
    return EvalLatents(z_a, z_p, z[:n], z[n:])


def eval_latents(model: JepaLM, idx: torch.Tensor, pairs: Pairs) -> EvalLatents:
    """The four latents of `pairs` over the batch `idx` (one forward up the stack)."""
    with torch.no_grad():
        _, h_tap = model.transformer(idx)
    return pair_latents(model, idx, h_tap, pairs)


class PairProbe:
    """The eval latents of a fixed pair set, gathered block by block from whichever forward
    passes cover its blocks: the LM scoring pass over non-overlapping blocks covers them all
    (the pair blocks are blocks of that grid), so an eval runs the stack once per block;
    `finish` runs the blocks no pass covered (a stride, a cap) and computes the metrics."""

    def __init__(self, starts: np.ndarray, pairs: Pairs, block_size: int):
        self.starts = np.asarray(starts, dtype=np.int64)
        self.block_size = int(block_size)
        self.pairs = Pairs(*(x.cpu() for x in pairs))
        self._block_of = {int(s): i for i, s in enumerate(self.starts.tolist())}
        order = torch.argsort(self.pairs.b, stable=True)
        counts = torch.bincount(self.pairs.b, minlength=len(self.starts)).tolist()
        self._rows = list(torch.split(order, counts))  # pair indices of each block
        self._got: dict[int, EvalLatents] = {}

    def reset(self) -> None:
        self._got = {}

    def take(self, model: JepaLM, x: torch.Tensor, starts: np.ndarray, h_tap: torch.Tensor) -> None:
        """Collect the latents of the pair blocks among the windows (x, starts) of a forward pass."""
        if x.shape[1] != self.block_size:
            return
        rows, blocks = [], []
        for r, s in enumerate(np.asarray(starts).tolist()):
            i = self._block_of.get(int(s))
            if i is not None and i not in self._got and self._rows[i].numel():
                rows.append(r)
                blocks.append(i)
        if not rows:
            return
        sel = [self._rows[i] for i in blocks]
        p = self.pairs
        b = torch.cat([torch.full((len(ix),), j) for j, ix in enumerate(sel)])
        ix = torch.cat(sel)
        sub = Pairs(b, p.t[ix], p.k_idx[ix], p.k[ix]).to(x.device)
        r_t = torch.tensor(rows, device=x.device)
        lat = pair_latents(model, x[r_t], h_tap[r_t], sub)
        lo = 0
        for i, part in zip(blocks, sel):
            n = part.numel()
            self._got[i] = EvalLatents(*(z[lo : lo + n] for z in lat))
            lo += n

    def finish(self, model: JepaLM, blocks: torch.Tensor, batch_size: int) -> dict[str, float]:
        """Run the blocks not yet covered (`blocks`: all pair blocks' inputs, (n, T)), then the metrics."""
        device = next(model.parameters()).device
        missing = [i for i in range(len(self.starts)) if i not in self._got and self._rows[i].numel()]
        for lo in range(0, len(missing), batch_size):
            chunk = missing[lo : lo + batch_size]
            x = blocks[chunk].to(device)
            with torch.no_grad():
                _, h_tap = model.transformer(x)
            self.take(model, x, self.starts[chunk], h_tap)
        done = [i for i in range(len(self.starts)) if self._rows[i].numel()]
        lat = EvalLatents(*(torch.cat([getattr(self._got[i], f) for i in done]) for f in EvalLatents._fields))
        order = torch.cat([self._rows[i] for i in done])
        return representation_metrics(lat, self.pairs.k_idx[order].to(lat.z_a.device), _horizons_of(self.pairs))


def _horizons_of(pairs: Pairs) -> list[int]:
    """horizons[k_idx] = k as the pairs show it (an index no pair uses gets 0 and is never read)."""
    out = [0] * (int(pairs.k_idx.max()) + 1 if pairs.k_idx.numel() else 0)
    for i, k in zip(pairs.k_idx.tolist(), pairs.k.tolist()):
        out[i] = k
    return out


def representation_metrics(lat: EvalLatents, k_idx: torch.Tensor, horizons: list[int]) -> dict[str, float]:
    """Retrieval (top-1, normalised, margin), the copy control's top-1, effective rank of z_a, pair count."""
    p = F.normalize(lat.z_p.float(), dim=-1)
    y = F.normalize(lat.z_t.float(), dim=-1)
    c = F.normalize(lat.z_c.float(), dim=-1)
    out = retrieval_metrics(p, y, k_idx, horizons)
    copy = retrieval_metrics(c, y, k_idx, horizons)
    for k in horizons:
        if f"retrieval_top1_h{k}" in copy:
            out[f"retrieval_copy_top1_h{k}"] = copy[f"retrieval_top1_h{k}"]
    out["retrieval_pairs"] = int(k_idx.numel())
    out["eff_rank"] = effective_rank(lat.z_a)
    return out


@torch.no_grad()
def jepa_eval_metrics(model: JepaLM, idx: torch.Tensor, pairs: Pairs, batch_size: int | None = None) -> dict[str, float]:
    """Representation metrics of `pairs` over the blocks `idx` (n_blocks, T), in eval mode; {} for the baseline.

    The blocks go through the model `batch_size` at a time (all at once by
    default), each moved to the model's device; metrics are over the whole set.
    """
    if model.is_baseline:
        return {}
    was_training = model.training
    model.eval()
    try:
        probe = PairProbe(np.arange(idx.shape[0]), pairs, idx.shape[1])
        return probe.finish(model, idx, batch_size or idx.shape[0])
    finally:
        model.train(was_training)
