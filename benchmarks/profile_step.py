"""Profile training steps of one bench arm with torch.profiler and print the top ops.

    python benchmarks/profile_step.py --profile tiny-baseline --arm baseline --steps 5

Uses the bench engine's `_Arm` (the same step as the training loop) on random tokens.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from jepa_core.tools.bench import _Arm, arm_config, plan_step
from jepa_core.config import load_config
from jepa_core.train.device import resolve_runtime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="tiny-baseline")
    ap.add_argument("--arm", default="baseline", choices=["baseline", "projector", "encoder"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--fused-cpu", action="store_true")
    ap.add_argument("--sort", default="self_cpu_time_total")
    args = ap.parse_args()
    cfg = arm_config(load_config(args.profile, args.set), args.arm)
    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    plan = plan_step(cfg, rt.device, rt.precision, fused_cpu=args.fused_cpu)
    arm = _Arm(args.arm, cfg, cfg.data.vocab_size, rt.device, plan, seed=0)
    B, T, V = cfg.train.batch_size, cfg.data.block_size, cfg.data.vocab_size
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    for _ in range(3):
        arm.step(x, y)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if rt.device.type == "cuda" else [])
    with profile(activities=acts, record_shapes=False) as prof:
        for _ in range(args.steps):
            arm.step(x, y)
    print(prof.key_averages().table(sort_by=args.sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
