"""Optimizers compared at equal training time, for the LM-only baseline and the JEPA arm.

    python benchmarks/equal_time.py --budget 180 --read-at 120,180 --seeds 1337,1338

For each optimizer (`--optimizers`, default muon,adamw) `jepa bench` first times the
baseline and JEPA (projector) steps of `--profile` on this machine; each arm's run then
gets `max_steps` = budget / its step time, so that its cosine schedule ends at about
`--budget` seconds of training, with `--evals` evaluations spread over it. A run stops
at 1.3 x the budget whatever happens. What counts, per `--read-at` time t: the best
val BPB among the evaluations made within t seconds of `train_time`.

Runs go to --out (checkpoints and samples off); a table is printed and the whole result
(step times, every eval, the CPU) is written to --out/equal_time.json. Run it on an idle
machine, from a worktree at a fixed commit: every figure is a wall-clock one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ARMS = {"baseline": "jepa.run_baseline=true", "jepa": "jepa.run_baseline=false"}


def step_times(profile: str, optimizer: str) -> dict[str, float]:
    """Median ms per step of the baseline and projector arms at the profile's shape (compiled if it is)."""
    from jepa_core.tools.bench import run_bench
    from jepa_core.config import load_config

    cfg = load_config(profile, [f"optim.optimizer={optimizer}"])
    rep = run_bench(cfg, steps=10, repeats=3, warmup=3, arms=("baseline", "projector"), matmul_sizes=(256,), matmul_repeats=1)
    return {"baseline": rep.arm("baseline").median_ms, "jepa": rep.arm("projector").median_ms}


def train_run(run_dir: Path, profile: str, sets: list[str]) -> list[dict]:
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "jepa_cli", "train", "--profile", profile, "--no-tui", "--run-dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    records = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def best_within(evals: list[dict], t: float) -> dict | None:
    inside = [e for e in evals if e.get("train_time", float("inf")) <= t and e.get("val_bpb") is not None]
    return min(inside, key=lambda e: e["val_bpb"]) if inside else None


def main() -> None:
    from jepa_core.tools.bench import cpu_name
    from jepa_core.train.device import cpu_flags

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--optimizers", default="muon,adamw")
    ap.add_argument("--budget", type=float, default=180.0)
    ap.add_argument("--read-at", default="120,180")
    ap.add_argument("--seeds", default="1337,1338")
    ap.add_argument("--evals", type=int, default=6, help="evaluations per run, evenly spaced")
    ap.add_argument("--out", default="/tmp/jepa-equal-time")
    args = ap.parse_args()
    out = Path(args.out)
    reads = [float(t) for t in args.read_at.split(",")]
    flags = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith(("avx512f", "amx", "avx2")))
    result: dict = {"cpu": cpu_name(), "cpu_flags": flags, "profile": args.profile, "budget_s": args.budget, "runs": []}
    for opt in args.optimizers.split(","):
        ms = step_times(args.profile, opt)
        print(f"{opt}: ms/step baseline {ms['baseline']:.1f}, jepa {ms['jepa']:.1f}", flush=True)
        for arm, arm_set in ARMS.items():
            steps = int(args.budget * 1e3 / ms[arm])
            every = max(1, steps // args.evals)
            for seed in args.seeds.split(","):
                label = f"{opt}-{arm}-s{seed}"
                sets = [
                    arm_set, f"optim.optimizer={opt}", f"train.seed={seed}", f"train.max_steps={steps}",
                    f"train.eval_every={every}", f"train.time_budget_s={1.3 * args.budget}",
                    "train.checkpoint_every=1000000", "train.sample_tokens=0",
                ]
                recs = train_run(out / label, args.profile, sets)
                evals = [r for r in recs if r.get("type") == "eval"]
                tps = [r["tok_per_s"] for r in recs if r.get("type") == "train" and r.get("tok_per_s")]
                run = {"label": label, "optimizer": opt, "arm": arm, "seed": int(seed), "max_steps": steps, "ms_per_step_bench": ms[arm],
                       "tok_per_s_median": statistics.median(tps) if tps else None, "evals": evals, "best_within": {}}
                for t in reads:
                    b = best_within(evals, t)
                    run["best_within"][str(int(t))] = None if b is None else {"val_bpb": b["val_bpb"], "step": b["step"], "train_time": b["train_time"]}
                result["runs"].append(run)
                cells = "  ".join(
                    f"<={t:g}s: {v['val_bpb']:.4f} (step {v['step']}, {v['train_time']:.0f} s)" if v else f"<={t:g}s: -"
                    for t, v in zip(reads, run["best_within"].values())
                )
                print(f"{label:<24} steps {steps:>5}  {cells}", flush=True)
    (out / "equal_time.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out / 'equal_time.json'}")


if __name__ == "__main__":
    main()
