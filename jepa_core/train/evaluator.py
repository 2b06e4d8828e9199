"""Evaluation during training: validation LM loss and bits per byte, and the JEPA probes.

Built once per run, called at each eval step on the main rank.

- LM: every validation token after the first is scored exactly once (`score_lm`:
  non-overlapping blocks of block_size, the last one shorter; or sliding
  windows with `train.eval_stride`), unless `train.eval_tokens` caps it to the
  first N targets; the record says so with `val_capped`. BPB divides the
  summed nats by the UTF-8 bytes of the scored *targets*.
- JEPA: a fixed set of at least `jepa.eval_pairs` pairs over as many
  validation blocks as needed (seeded by `train.seed`), with retrieval, its
  copy control and the effective rank over the whole set. Its blocks are
  blocks of the LM scoring grid, so the probes read the scoring pass's tap
  activations (one forward per block); blocks a stride or a cap leaves
  uncovered get a pass of their own.

Forward batches hold `train.batch_size` windows (`train.eval_batches` is
ignored; it stays in the schema so older config files load). Only private
generators are used, so when an eval runs never changes the training stream.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from jepa_core.config import Config
from jepa_core.errors import ConfigError


class Evaluator:
    def __init__(self, cfg: Config, prepared: Any, device: torch.device, *, baseline: bool):
        from jepa_core.data.batching import val_blocks, val_windows
        from jepa_core.model import eval_pair_set
        from jepa_core.model.eval import PairProbe

        tc, T = cfg.train, cfg.data.block_size
        self.device = device
        self.tokens = prepared.val_tokens
        n = len(self.tokens)
        if n < T + 1:
            raise ConfigError(
                f"The validation split of `{cfg.data.dataset}` has {n} tokens, too few for one block of {T}.",
                hint="Lower data.block_size or raise data.val_fraction.",
            )
        self.block_size, self.batch_size = T, tc.batch_size
        self.stride, self.max_tokens = tc.eval_stride, tc.eval_tokens
        self.n_scored = val_windows(n, T, self.stride, self.max_tokens).n_scored
        self.capped = self.n_scored < n - 1
        # bits per byte divide by the bytes of the *targets* (the tokens scored), not of the inputs
        self.token_bytes = np.asarray(prepared.tokenizer().token_byte_lengths(), dtype=np.int64)
        self.probe = self.blocks = None
        if not baseline:
            pair_set = eval_pair_set(n, T, cfg.jepa, cfg.jepa.eval_pairs, seed=tc.seed)
            self.probe = PairProbe(pair_set.starts, pair_set.pairs, T)
            self.blocks = val_blocks(self.tokens, pair_set.starts, T)

    @torch.no_grad()
    def __call__(self, model) -> dict[str, Any]:
        """The eval record's metric fields for `model` (left in train mode afterwards)."""
        from jepa_core.model import bits_per_byte, score_lm

        probe = self.probe

        def logits(x: torch.Tensor, starts) -> torch.Tensor:
            x = x.to(self.device)
            h, h_tap = model.transformer(x)
            if probe is not None:  # the JEPA probes read the same pass where it covers their blocks
                probe.take(model, x, starts, h_tap)
            return model.transformer.logits(h)

        model.eval()
        try:
            # no autocast: scores are fp32 whatever precision the run trains in, so the val BPB of
            # a bf16 run and an fp32 run measure their weights, not their evaluation's rounding
            # (under FSDP a bf16 run's mixed-precision policy still gathers bf16 weights)
            if probe is not None:
                probe.reset()
            score = score_lm(
                logits,
                self.tokens,
                self.block_size,
                self.batch_size,
                self.stride,
                self.max_tokens,
                self.token_bytes,
                with_starts=True,
            )
            extra = probe.finish(model, self.blocks, self.batch_size) if probe is not None else {}
        finally:
            model.train()
        val_loss = score.nats / max(score.n_tokens, 1)
        return {
            "val_loss": val_loss,
            "val_ppl": math.exp(min(val_loss, 50.0)),
            "val_bpb": bits_per_byte(score.nats, score.n_bytes),
            "val_tokens": score.n_tokens,
            "val_bytes": score.n_bytes,
            "val_capped": self.capped,
            **extra,
        }
