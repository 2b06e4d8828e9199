"""Time one training eval on a profile's real validation split (untrained weights: the cost
does not depend on them): whole-split LM scoring, the JEPA probes, and a strided variant.

    python benchmarks/bench_eval.py [--profile tiny] [--set k=v ...] [--stride 64] [--reps 3]

Prints seconds per eval part and the tokens scored against the split's tokens after the first.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from jepa_core.config import load_config
from jepa_core.data import ensure_prepared
from jepa_core.model import JepaLM, eval_pair_set, jepa_eval_metrics, score_lm
from jepa_core.data.batching import val_blocks
from jepa_core.train.device import resolve_runtime


def best_of(reps: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--stride", type=int, default=0, help="also time train.eval_stride = this (0: skip)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config(args.profile, args.set)
    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    prepared = ensure_prepared(cfg.data)
    torch.manual_seed(0)
    model = JepaLM.from_config(cfg, prepared.vocab_size).to(rt.device).eval()
    T, B = cfg.data.block_size, cfg.train.batch_size
    toks = prepared.val_tokens
    lengths = np.asarray(prepared.tokenizer().token_byte_lengths())
    autocast = rt.autocast

    def lm(stride: int):
        with torch.no_grad(), autocast():
            return score_lm(lambda x: model.lm_logits(x.to(rt.device)), toks, T, B, stride, cfg.train.eval_tokens, lengths)

    s_lm, score = best_of(args.reps, lambda: lm(cfg.train.eval_stride))
    print(f"{args.profile}: {len(toks)} validation tokens, block {T}, batch {B}, device {rt.device}")
    print(f"LM scoring (stride {cfg.train.eval_stride}): {s_lm:.3f} s, {score.n_tokens} tokens scored "
          f"(split: {len(toks) - 1} after the first), {score.n_tokens / s_lm:,.0f} tok/s, BPB {score.nats / (np.log(2) * score.n_bytes):.4f}")
    if args.stride:
        s_st, sc = best_of(args.reps, lambda: lm(args.stride))
        print(f"LM scoring (stride {args.stride}): {s_st:.3f} s ({s_st / s_lm:.2f}x), {sc.n_tokens} tokens, "
              f"BPB {sc.nats / (np.log(2) * sc.n_bytes):.4f}")
    if not model.is_baseline:
        pset = eval_pair_set(len(toks), T, cfg.jepa, cfg.jepa.eval_pairs, seed=cfg.train.seed)
        blocks = val_blocks(toks, pset.starts, T)
        with autocast():
            s_j, m = best_of(args.reps, lambda: jepa_eval_metrics(model, blocks, pset.pairs, batch_size=B))
        print(f"JEPA probes: {s_j:.3f} s, {m['retrieval_pairs']} pairs over {len(pset.starts)} blocks")
        print(f"one eval: {s_lm + s_j:.3f} s")


if __name__ == "__main__":
    main()
