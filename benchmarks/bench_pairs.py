"""Time the JEPA pair sampler (it runs every training step) against i.i.d. sampling with replacement.

    python benchmarks/bench_pairs.py [--device cpu|cuda] [--reps 200]

Prints microseconds per call for a few profile shapes, the ratio to the
with-replacement draw it replaced, and (for context) how often that draw put the
same (sequence, anchor, horizon) twice in one batch.
"""

from __future__ import annotations

import argparse
import time

import torch

from jepa_core.config import load_config
from jepa_core.model import sample_anchor_target_pairs


def with_replacement(B, T, horizons, probs, P, device, generator):
    # the sampler before without-replacement: k ~ Categorical, t ~ U{0..T-1-k}, each pair on its own
    n = B * P
    k_idx = torch.multinomial(torch.tensor(probs, device=device), n, replacement=True, generator=generator)
    k = torch.tensor(horizons, device=device)[k_idx]
    u = torch.rand(n, dtype=torch.float64, device=device, generator=generator)
    t = torch.minimum((u * (T - k)).floor().long(), T - k - 1)
    return torch.arange(B, device=device).repeat_interleave(P), t, k_idx, k


def timed(fn, reps: int, device: torch.device) -> float:
    for _ in range(5):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--profiles", nargs="*", default=["tiny", "shakespeare", "gpt2-small"])
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    print(f"{'profile':<12} {'B':>3} {'T':>5} {'P':>3} {'new us':>8} {'old us':>8} {'ratio':>6} {'dup batches (old)':>18}")
    for name in args.profiles:
        cfg = load_config(name)
        j, B, T = cfg.jepa, cfg.train.batch_size, cfg.data.block_size
        g = torch.Generator(device=device).manual_seed(0)
        args_ = (B, T, list(j.horizons), list(j.horizon_probs), j.pairs_per_seq, device)
        new = timed(lambda: sample_anchor_target_pairs(*args_, generator=g), args.reps, device)
        old = timed(lambda: with_replacement(*args_, generator=g), args.reps, device)
        dup = 0
        for _ in range(500):
            b, t, k_idx, _ = with_replacement(*args_, generator=g)
            key = torch.stack((b, t, k_idx), 1)
            dup += torch.unique(key, dim=0).shape[0] < key.shape[0]
        print(f"{name:<12} {B:>3} {T:>5} {j.pairs_per_seq:>3} {new:>8.1f} {old:>8.1f} {new / old:>6.2f} {dup / 500:>17.1%}")


if __name__ == "__main__":
    main()
