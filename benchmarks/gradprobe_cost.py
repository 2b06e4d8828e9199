"""What the LM/JEPA gradient probe (train/gradprobe.py) costs per step it runs on.

    python benchmarks/gradprobe_cost.py --profile tiny --steps 20

Times `train_step` on random tokens with the probe on every step against off,
interleaved in rounds (so drift on a shared machine hits both alike), eager by
default (`--compile` for the profile's setting). Training probes on log steps
only: the per-run cost is this per-step cost divided by `log.every`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from jepa_core.config import load_config
from jepa_core.train.device import resolve_runtime
from jepa_core.train.step import build_trainee, plan_step, train_step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per arm per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(args.profile, args.set)
    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    plan = plan_step(cfg, rt.device, rt.precision, compile=args.compile)
    tr = build_trainee(cfg, cfg.data.vocab_size, rt.device, plan, seed=0)
    B, T, V = cfg.train.batch_size, cfg.data.block_size, cfg.data.vocab_size
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    ms = cfg.train.max_steps
    for s in range(3):  # warm up both paths (and compile)
        train_step(tr, lambda: (x, y), s + 1, ms, want_grad_norm=True, probe_grads=s % 2 == 0)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for probe in (False, True):
            for s in range(args.steps):
                t0 = time.perf_counter()
                train_step(tr, lambda: (x, y), 10 + s, ms, want_grad_norm=True, probe_grads=probe)
                if rt.device.type == "cuda":
                    torch.cuda.synchronize()
                times[probe].append(time.perf_counter() - t0)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    every = cfg.log.every
    print(f"{args.profile} on {rt.device} ({rt.precision}, compile={plan.compile}), {len(times[True])} steps per arm")
    print(f"step without probe: {off * 1e3:.1f} ms (median)   with probe: {on * 1e3:.1f} ms   (+{(on / off - 1) * 100:.0f}%)")
    print(f"at log.every = {every}: +{(on - off) / every / off * 100:.1f}% of training time")


if __name__ == "__main__":
    main()
