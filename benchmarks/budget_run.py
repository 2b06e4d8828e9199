"""One tuning run: `jepa train` under a time or step budget, then the eval that counts.

    python benchmarks/budget_run.py LABEL --profile tiny-baseline --budget 120 [--set k=v ...]
    python benchmarks/budget_run.py LABEL --profile tiny-baseline --budget 0 --set train.max_steps=800

With `--budget S` the run stops after S seconds of training time (`train.time_budget_s`) and the
first eval at or after S seconds counts; with `--budget 0` the last eval counts (fixed token
budgets: deterministic for a seed, so configs compare without the machine's load in the way).
Runs go to --out (default /tmp/jepa-tune); checkpoints and samples are off. One line is printed
and appended to --log: label, step, training time, val BPB, val loss, median tok/s, 1-min load
average before and after, overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("label")
    ap.add_argument("--profile", default="tiny-baseline")
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default="/tmp/jepa-tune")
    ap.add_argument("--log", default="/tmp/jepa-tune/results.tsv")
    args = ap.parse_args()
    run_dir = Path(args.out) / args.label
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    sets = [f"train.time_budget_s={args.budget}", "train.checkpoint_every=1000000", "train.sample_tokens=0", *args.set]
    cmd = [sys.executable, "-m", "jepa_cli", "train", "--profile", args.profile, "--no-tui", "--run-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    load0 = os.getloadavg()[0]
    with open(run_dir.parent / f"{args.label}.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    load1 = os.getloadavg()[0]
    evals, tps = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("type") == "eval":
            evals.append(rec)
        elif rec.get("type") == "train":
            tps.append(rec.get("tok_per_s") or 0.0)
    if args.budget > 0:
        hit = next((e for e in evals if e.get("train_time", 0) >= args.budget), evals[-1])
    else:
        hit = evals[-1]
    line = (
        f"{args.label}\tstep {hit['step']}\ttrain_time {hit['train_time']:.1f}\tval_bpb {hit['val_bpb']:.4f}\t"
        f"val_loss {hit['val_loss']:.4f}\ttok/s {statistics.median(tps):.0f}\tload {load0:.2f}->{load1:.2f}\t{' '.join(args.set)}"
    )
    print(line)
    with open(args.log, "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
