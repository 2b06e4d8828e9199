"""Time one training eval on a profile's real validation split (untrained weights: the cost
does not depend on them): the evaluator as `jepa train` runs it, LM scoring alone, and
optionally a strided eval.

    python benchmarks/bench_eval.py [--profile tiny] [--set k=v ...] [--stride 64] [--reps 3]

Prints seconds per eval and the tokens scored against the split's tokens after the first.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from jepa_core.config import load_config
from jepa_core.data import ensure_prepared
from jepa_core.model import JepaLM, score_lm
from jepa_core.train.device import resolve_runtime
from jepa_core.train.evaluator import Evaluator


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
    model = JepaLM.from_config(cfg, prepared.vocab_size).to(rt.device)
    T, B, n = cfg.data.block_size, cfg.train.batch_size, len(prepared.val_tokens)
    print(f"{args.profile}: {n} validation tokens, block {T}, batch {B}, device {rt.device}")

    ev = Evaluator(cfg, prepared, rt.device, baseline=model.is_baseline)
    s_ev, rec = best_of(args.reps, lambda: ev(model))
    print(f"eval as in training: {s_ev:.3f} s; val_tokens {rec['val_tokens']} (split: {n - 1} after the first), "
          f"val_bpb {rec['val_bpb']:.4f}" + (f", {rec['retrieval_pairs']} retrieval pairs" if "retrieval_pairs" in rec else ""))

    lengths = np.asarray(prepared.tokenizer().token_byte_lengths())
    model.eval()

    def lm(stride: int):
        with torch.no_grad(), rt.autocast():
            return score_lm(lambda x: model.lm_logits(x.to(rt.device)), prepared.val_tokens, T, B, stride, cfg.train.eval_tokens, lengths)

    s_lm, _ = best_of(args.reps, lambda: lm(cfg.train.eval_stride))
    print(f"LM scoring alone: {s_lm:.3f} s (the JEPA probes add {s_ev - s_lm:+.3f} s)")
    if args.stride:
        s_st, sc = best_of(args.reps, lambda: lm(args.stride))
        print(f"LM scoring with stride {args.stride}: {s_st:.3f} s ({s_st / s_lm:.2f}x), {sc.n_tokens} tokens, "
              f"BPB {sc.nats / (np.log(2) * sc.n_bytes):.4f}")


if __name__ == "__main__":
    main()
