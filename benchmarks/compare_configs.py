"""Throughput of several config variants, interleaved in one process (tok/s, relative to the first).

    python benchmarks/compare_configs.py --profile tiny-baseline --arm baseline \
        "" "model.n_layers=3" "model.d_model=96;train.batch_size=16"

Each variant is a `;`-separated list of `section.key=value` overrides on the profile (and the
pseudo-override `fused_adamw`: AdamW with fused=True on CPU). The
variants take turns (round-robin, `--seconds` of steps each, `--repeats` rounds), so a change of
background load hits all of them alike; the medians over rounds are reported. The step is the
bench engine's (the training loop's work) on random tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from jepa_core.tools.bench import _Arm, arm_config, plan_step
from jepa_core.config import load_config
from jepa_core.train.device import resolve_runtime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="';'-separated overrides per variant ('' = the profile as is)")
    ap.add_argument("--profile", default="tiny-baseline")
    ap.add_argument("--arm", default="baseline", choices=["baseline", "projector", "encoder"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    arms = []
    for spec in args.variants:
        ov = [s for s in spec.split(";") if s and s != "fused_adamw"]
        fused = "fused_adamw" in spec.split(";")  # pseudo-override: fused AdamW on CPU
        cfg = arm_config(load_config(args.profile, ov), args.arm)
        rt = resolve_runtime(cfg.train.device, cfg.train.precision)
        arm = _Arm(args.arm, cfg, cfg.data.vocab_size, rt.device, plan_step(cfg, rt.device, rt.precision, fused_cpu=fused), seed=0)
        B, T, V = cfg.train.batch_size, cfg.data.block_size, cfg.data.vocab_size
        g = torch.Generator().manual_seed(0)
        xy = (torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g))
        for _ in range(3):
            arm.step(*xy)
        arms.append((spec or "(profile)", arm, xy, B * T))
    rates: list[list[float]] = [[] for _ in arms]
    for _ in range(args.repeats):
        for i, (_, arm, xy, ntok) in enumerate(arms):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                arm.step(*xy)
                n += 1
            rates[i].append(n * ntok / (time.perf_counter() - t0))
    print(f"1-min load average at the end: {os.getloadavg()[0]:.2f}")
    base = statistics.median(rates[0])
    for (name, arm, _, _), r in zip(arms, rates):
        m = statistics.median(r)
        print(f"{name:60s} tok/s {m:8.0f}  rel {m / base:.3f}  MFLOP/tok {arm.flops_per_token / 1e6:.2f}  GFLOP/s {m * arm.flops_per_token / 1e9:.1f}")


if __name__ == "__main__":
    main()
