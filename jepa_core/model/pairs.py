"""Anchor/target pairs for the JEPA objective: horizon-sampled (t, t + k) positions per sequence,
drawn from tables built with Python ints, so a compiled forward has no graph break."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import torch


class Pairs(NamedTuple):
    """N = B * pairs_per_seq anchor/target pairs; the target position is t + k."""

    b: torch.Tensor  # sequence index in the batch
    t: torch.Tensor  # anchor position
    k_idx: torch.Tensor  # index into the horizons list
    k: torch.Tensor  # horizon value

    @property
    def tpos(self) -> torch.Tensor:
        return self.t + self.k

    def to(self, device: torch.device | str) -> "Pairs":
        device = torch.device(device)
        # non_blocking only host -> GPU: a non-blocking copy to the host could be read early
        return Pairs(*(x.to(device, non_blocking=device.type == "cuda") for x in self))


def pair_capacity_error(seq_len: int, horizons: Sequence[int], horizon_probs: Sequence[float], pairs_per_seq: int) -> str | None:
    """Why `pairs_per_seq` pairs cannot be drawn without replacement from one sequence, or None.

    Horizon k has T - k anchors and receives pairs_per_seq * p_k of a
    sequence's pairs on average; drawing them without replacement while keeping
    every pair's marginal (k ~ p, t ~ U{0..T-1-k}) needs p_k * P <= T - k.
    """
    for k, p in zip(horizons, horizon_probs):
        if k >= seq_len:
            return f"horizon {k} does not fit a sequence of {seq_len} tokens (need k < T)"
        if p > 0 and pairs_per_seq * p > seq_len - k + 1e-9:
            return (
                f"horizon {k} gets {pairs_per_seq} x {p:g} = {pairs_per_seq * p:g} pairs per sequence on average "
                f"but has only {seq_len - k} anchors (T - k) to draw them from without replacement"
            )
    return None


class _PairTables(NamedTuple):
    edges: torch.Tensor  # (H,) float64: P * cumulative horizon probabilities, the last exactly P
    caps: tuple[int, ...]  # most pairs of each horizon in one sequence: ceil(P p_k), at most T - k
    cap_t: torch.Tensor  # (H,) the same, as a tensor
    horizon_values: torch.Tensor  # (H,) long: k for each horizon index
    slot_block: torch.Tensor  # (sum caps,) long: the horizon index of each candidate slot
    slot_rank: torch.Tensor  # (sum caps,) long: the slot's position inside its horizon's slots


@functools.lru_cache(maxsize=64)
def _pair_tables(seq_len: int, horizons: tuple[int, ...], horizon_probs: tuple[float, ...], P: int, device: torch.device) -> _PairTables:
    # built once per shape and device: a training step then copies nothing from the host
    probs = [p / sum(horizon_probs) for p in horizon_probs]
    # the tolerance absorbs float noise in P * p_k (an exact 2 computed as 2.0000000000000004)
    caps = tuple(min(seq_len - k, math.ceil(P * p - 1e-9)) if p > 0 else 0 for k, p in zip(horizons, probs))
    edges = torch.cumsum(torch.tensor([P * p for p in probs], dtype=torch.float64), 0)
    edges[-1] = P
    # from Python ints, not repeat_interleave of a tensor: the table is also built while tracing
    # (under torch.compile), where an output shape read from tensor data is a graph break
    slot_block = torch.tensor([h for h, c in enumerate(caps) for _ in range(c)], dtype=torch.long)
    slot_rank = torch.cat([torch.arange(c) for c in caps])
    return _PairTables(
        edges.to(device),
        caps,
        torch.tensor(caps).to(device),
        torch.tensor(list(horizons), dtype=torch.long).to(device),
        slot_block.to(device),
        slot_rank.to(device),
    )


def sample_anchor_target_pairs(
    batch_size: int,
    seq_len: int,
    horizons: Sequence[int],
    horizon_probs: Sequence[float],
    pairs_per_seq: int,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> Pairs:
    """P = pairs_per_seq distinct (anchor, horizon) pairs per sequence; b = arange(B).repeat_interleave(P).

    Every pair, taken on its own, has k ~ Categorical(horizon_probs) and
    t ~ U{0..T-1-k}, and no (sequence, anchor, horizon) repeats. Per sequence,
    horizon k gets c_k pairs, c_k = the number of points u, u+1, ..., u+P-1
    (u ~ U[0, 1)) in [P * sum_{j<k} p_j, P * sum_{j<=k} p_j): floor or ceil of
    P * p_k, with mean exactly P * p_k (systematic sampling), summing to P.
    Its anchors are a uniform random c_k-subset of 0..T-1-k (the c_k largest of
    T - k uniform keys). So each anchor of horizon k is drawn with probability
    P * p_k / (T - k), which needs P * p_k <= T - k (`pair_capacity_error`).

    Draws only from `generator` (on its device) or, without one, from the
    global RNG of `device`, a fixed number of draws per call, so a saved and
    restored RNG state reproduces the pairs. Vectorised (one top-c per horizon,
    no loop over rows) and free of host syncs.
    """
    if len(horizons) != len(horizon_probs) or not horizons:
        raise ValueError(f"{len(horizon_probs)} probabilities for {len(horizons)} horizons")
    why = pair_capacity_error(seq_len, horizons, horizon_probs, pairs_per_seq)
    if why is not None:
        raise ValueError(why)
    device = torch.device(device)
    draw_dev = generator.device if generator is not None else device
    B, P = batch_size, pairs_per_seq
    key = (int(seq_len), tuple(int(k) for k in horizons), tuple(float(p) for p in horizon_probs), P, draw_dev)
    # traced by torch.compile, the tables become graph constants: the cache is for eager calls
    tab = _pair_tables.__wrapped__(*key) if torch.compiler.is_compiling() else _pair_tables(*key)
    # counts per sequence: ceil(S_k - u) - ceil(S_{k-1} - u), which telescopes to exactly P
    u = torch.rand(B, 1, dtype=torch.float64, device=draw_dev, generator=generator)
    hi = torch.ceil(tab.edges - u)
    counts = torch.diff(hi, dim=1, prepend=torch.zeros_like(u)).long()
    counts = torch.minimum(counts, tab.cap_t)
    # a count above its cap needs P p_k to be an integer and u to hit an edge exactly (float
    # rounding, ~1e-16): the missing pairs go to horizons with room, in order, so rows keep P
    room = tab.cap_t - counts
    short = P - counts.sum(dim=1, keepdim=True)
    counts = counts + torch.minimum(room, (short - (torch.cumsum(room, dim=1) - room)).clamp_(min=0))
    anchors = []
    for k, cap in zip(horizons, tab.caps):
        if cap:
            keys = torch.rand(B, seq_len - k, dtype=torch.float64, device=draw_dev, generator=generator)
            anchors.append(keys.topk(cap, dim=1).indices)  # a uniform random cap-subset, in random order
    slots = torch.cat(anchors, 1)  # (B, sum caps); slot j belongs to horizon slot_block[j]
    valid = tab.slot_rank < counts[:, tab.slot_block]
    # the P valid slots of each row, in slot order (stable), i.e. grouped by horizon
    keep = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :P]
    t = slots.gather(1, keep).reshape(-1)
    k_idx = tab.slot_block[keep].reshape(-1)
    b = torch.arange(B, device=draw_dev).repeat_interleave(P)
    pairs = Pairs(b, t, k_idx, tab.horizon_values[k_idx])
    return pairs if draw_dev == device else pairs.to(device)


