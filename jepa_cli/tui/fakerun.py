"""A synthetic run directory in the trainer's exact formats, for tests, demos and benchmarks.

`python -m jepa_cli.tui.fakerun DIR [--steps N]` writes a finished tiny run
(config.toml, metrics.jsonl with train lines, evals and events) so the
dashboard can be tried without training: `jepa watch DIR`. The curves are
shaped like a real tiny run (decaying losses, rising anchor std, warmup-cosine
LR) with seeded noise; everything is deterministic, including the timestamps.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

T0 = 1_764_065_700.0  # a fixed "start time" (2025-11-25 10:15 UTC) so output never depends on the clock


def train_record(step: int, rng: random.Random, max_steps: int, *, baseline: bool = False, t0: float = T0, tokens_per_step: int = 4096, step_s: float = 0.2) -> dict[str, Any]:
    f = step / max(1, max_steps)
    noise = lambda s: rng.gauss(0.0, s)  # noqa: E731
    lm = 2.0 + 5.0 * math.exp(-6 * f) + noise(0.08)
    warm = 50
    lr = 3e-3 * (step / warm if step < warm else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, max_steps - warm))))
    rec: dict[str, Any] = {"type": "train", "step": step, "time": t0 + step * step_s, "loss": lm}
    rec["lm_loss"] = lm
    if not baseline:
        info = 1.2 + 2.5 * math.exp(-5 * f) + noise(0.06)
        var_l = 0.05 + 0.85 * math.exp(-8 * f) + abs(noise(0.01))
        cov_l = 0.02 + 0.4 * math.exp(-7 * f) + abs(noise(0.005))
        jl = info + var_l + 0.04 * cov_l
        rec.update(
            loss=lm + 0.5 * jl,
            jepa_loss=jl,
            info_nce=info,
            var_loss=var_l,
            cov_loss=cov_l,
            std_anchor=0.6 - 0.5 * math.exp(-6 * f) + noise(0.01),
            std_pred=0.5 - 0.42 * math.exp(-5 * f) + noise(0.01),
            ema_momentum=0.99 + 0.0095 * 0.5 * (1 - math.cos(math.pi * f)),
            jepa_weight=0.5,
            **_grad_probe(step, f),
        )
    rec.update(
        lm_weight=1.0,
        lr=lr,
        grad_norm=abs(0.5 + 2 * math.exp(-4 * f) + noise(0.1)),
        tokens=step * tokens_per_step,
        tok_per_s=tokens_per_step / step_s * (1 + noise(0.02)),
        elapsed=step * step_s,
    )
    return rec


def _grad_probe(step: int, f: float) -> dict[str, float]:
    # its own seeded stream, so the other curves (and their snapshots) keep their noise
    r = random.Random(step)
    return {
        "grad_norm_lm": 0.3 + 1.5 * math.exp(-4 * f) + abs(r.gauss(0, 0.05)),
        "grad_norm_jepa": 0.2 + 0.8 * math.exp(-3 * f) + abs(r.gauss(0, 0.05)),
        "grad_cos": -0.05 + 0.25 * math.exp(-6 * f) + r.gauss(0, 0.03),
    }


def eval_record(step: int, rng: random.Random, max_steps: int, *, baseline: bool = False, t0: float = T0, tokens_per_step: int = 4096, step_s: float = 0.2, horizons=(2, 8, 32)) -> dict[str, Any]:
    f = step / max(1, max_steps)
    val = 2.2 + 5.0 * math.exp(-5.5 * f) + rng.gauss(0, 0.01)
    rec: dict[str, Any] = {
        "type": "eval",
        "step": step,
        "time": t0 + step * step_s + 0.1,
        "val_loss": val,
        "val_ppl": math.exp(val),
        "val_bpb": val / math.log(2) / 3.2,
    }
    if not baseline:
        n = 512 // len(horizons)  # pairs per horizon group: chance is 1/n
        for h in horizons:
            top1 = (0.6 / math.sqrt(h)) * (1 - math.exp(-4 * f)) + 0.002
            copy = (0.25 / h) * (1 - math.exp(-2 * f)) + 0.002  # z(t) as the query: good at short horizons only
            rec[f"retrieval_top1_h{h}"] = top1
            rec[f"retrieval_copy_top1_h{h}"] = copy
            rec[f"retrieval_top1_norm_h{h}"] = (top1 - 1 / n) / (1 - 1 / n)
        rec["retrieval_margin"] = 0.3 * (1 - math.exp(-3 * f))
        rec["eff_rank"] = 4 + 28 * (1 - math.exp(-4 * f))
    rec.update(tokens=step * tokens_per_step, elapsed=step * step_s + 0.1)
    return rec


def write_fake_run(
    run_dir: Path,
    *,
    steps: int = 600,
    log_every: int = 10,
    eval_every: int = 100,
    checkpoint_every: int = 200,
    profile: str = "tiny",
    baseline: bool = False,
    finished: bool = True,
    seed: int = 0,
    overrides: tuple[str, ...] = (),
) -> Path:
    """Write config.toml and metrics.jsonl for a run of `steps` steps; returns run_dir."""
    from jepa_core.config import config_to_toml, load_config

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ov = [f"train.max_steps={steps}", *overrides]
    if baseline:
        ov.append("jepa.run_baseline=true")
    cfg = load_config(profile, ov)
    (run_dir / "config.toml").write_text(config_to_toml(cfg))
    rng = random.Random(seed)
    lines: list[dict[str, Any]] = [
        {
            "type": "event",
            "step": 0,
            "time": T0,
            "event": "run_start",
            "run_name": run_dir.name,
            "profile": profile,
            "device": "cpu",
            "precision": "fp32",
            "max_steps": steps,
            "params": {"total": 1_234_567},
            "config": cfg.to_dict(),
        }
    ]
    for step in range(log_every, steps + 1, log_every):
        lines.append(train_record(step, rng, steps, baseline=baseline))
        if step % eval_every == 0 or step == steps:
            lines.append(eval_record(step, rng, steps, baseline=baseline))
            lines.append({"type": "event", "step": step, "time": T0 + step * 0.2 + 0.2, "event": "sample", "text": "ROMEO:\nWhat light through yonder window breaks?"})
        if step % checkpoint_every == 0 or step == steps:
            lines.append({"type": "event", "step": step, "time": T0 + step * 0.2 + 0.3, "event": "checkpoint", "path": f"checkpoints/step-{step:08d}.safetensors"})
    if finished:
        lines.append({"type": "event", "step": steps, "time": T0 + steps * 0.2 + 1, "event": "run_end", "status": "finished", "message": f"{steps} steps"})
    with open(run_dir / "metrics.jsonl", "w") as f:
        for rec in lines:
            f.write(json.dumps(rec) + "\n")
    return run_dir


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    write_fake_run(a.run_dir, steps=a.steps, log_every=a.log_every, baseline=a.baseline, seed=a.seed)
    print(f"wrote {a.run_dir}; view it with: jepa watch {a.run_dir}")


if __name__ == "__main__":
    main()
