"""Time `jepa inspect` on a ~100 MB checkpoint, with and without --stats.

    .venv/bin/python benchmarks/bench_inspect.py [--repeats 5] [--layers 6]

Builds a weights file in a temporary directory with the real checkpoint layout
(state-dict names, jepa metadata; d_model 512, vocab 8192, F32), then runs the
installed CLI in a fresh interpreter each time, so the numbers include Python
start-up and imports, as a user sees them. The page cache is warm (the file was
just written); a cold read only matters for --stats, which reads every byte.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

D, V, FF, LATENT = 512, 8192, 1408, 256


def build_tensors(layers: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    t = {"transformer.tok_emb.weight": w(V, D)}
    for i in range(layers):
        b = f"transformer.blocks.{i}."
        t[b + "attn_norm.weight"] = np.ones(D, np.float32)
        t[b + "attn.qkv.weight"] = w(3 * D, D)
        t[b + "attn.proj.weight"] = w(D, D)
        t[b + "mlp_norm.weight"] = np.ones(D, np.float32)
        t[b + "mlp.w12.weight"] = w(2 * FF, D)
        t[b + "mlp.w3.weight"] = w(D, FF)
    t["transformer.norm_f.weight"] = np.ones(D, np.float32)
    t["transformer.tap_norm.weight"] = np.ones(D, np.float32)
    t["transformer.logit_scale"] = np.array(D**-0.5, np.float32)
    t["transformer.out_bias"] = np.zeros(V, np.float32)
    t["transformer.bridge_gate"] = np.array(-2.0, np.float32)
    t["transformer.lm_bridge.0.weight"] = np.ones(D, np.float32)
    for j in (1, 4):
        t[f"transformer.lm_bridge.{j}.weight"] = w(D, D)
        t[f"transformer.lm_bridge.{j}.bias"] = np.zeros(D, np.float32)
    for head, d_in in (("jepa.online_proj", D), ("jepa.predictor", 2 * LATENT), ("teacher.target_proj", D)):
        t[f"{head}.0.weight"] = w(2 * LATENT, d_in)
        t[f"{head}.0.bias"] = np.zeros(2 * LATENT, np.float32)
        t[f"{head}.3.weight"] = w(LATENT, 2 * LATENT)
        t[f"{head}.3.bias"] = np.zeros(LATENT, np.float32)
    t["jepa.horizon_emb.weight"] = w(3, LATENT)
    return t


def metadata(layers: int) -> dict[str, str]:
    config = (
        f'name = "bench"\n[model]\nd_model = {D}\nn_layers = {layers}\nn_heads = 8\ntap_layer = -2\n'
        f'weight_tying = true\n[jepa]\nteacher = "projector"\nlatent_dim = {LATENT}\nhorizons = [2, 8, 32]\n'
        f'[data]\nvocab_size = {V}\nblock_size = 256\n'
    )
    return {
        "format": "jepa-weights/1",
        "kind": "weights",
        "config": config,
        "profile": "bench",
        "step": "5000",
        "tokens_seen": str(5000 * 32 * 256),
        "tokenizer_sha256": "0" * 64,
        "metrics": json.dumps({"type": "eval", "step": 5000, "val_loss": 3.1, "val_ppl": 22.2, "val_bpb": 1.42, "eff_rank": 120.5}),
        "jepa_version": "0.1.0",
        "torch_version": "2.13.0",
        "created": "2026-11-25T10:00:00+00:00",
        "weight_tying": "true",
    }


def time_cli(path: Path, extra: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "jepa_cli", "inspect", str(path), *extra], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"jepa inspect failed:\n{r.stderr}")
    return times


def time_engine(path: Path, stats: bool, repeats: int) -> list[float]:
    from jepa_core.tools.inspect import inspect_checkpoint

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        inspect_checkpoint(path, stats=stats)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", type=int, default=6, help="6 layers of d_model 512 with vocab 8192 is ~100 MB in F32")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "step-00005000.safetensors"
        tensors = build_tensors(args.layers)
        save_file(tensors, str(path), metadata=metadata(args.layers))
        size = path.stat().st_size
        n_params = sum(a.size for a in tensors.values())
        del tensors
        print(f"checkpoint: {size / 1e6:.1f} MB, {n_params:,} parameters, F32")
        rows = [
            ("jepa inspect", time_cli(path, [], args.repeats)),
            ("jepa inspect --json", time_cli(path, ["--json"], args.repeats)),
            ("jepa inspect --stats", time_cli(path, ["--stats"], args.repeats)),
            ("engine, header only", time_engine(path, False, args.repeats)),
            ("engine, --stats", time_engine(path, True, args.repeats)),
            ("interpreter start-up + `jepa --version`", _startup(args.repeats)),
        ]
        print(f"{'what':42} {'median s':>9} {'min s':>7} {'max s':>7}  (n={args.repeats})")
        for name, t in rows:
            print(f"{name:42} {statistics.median(t):9.3f} {min(t):7.3f} {max(t):7.3f}")


def _startup(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jepa_cli", "--version"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return times


if __name__ == "__main__":
    main()
