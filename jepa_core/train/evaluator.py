"""Evaluation during training: validation LM loss and bits per byte, and the JEPA probes.

Built once per run, called at each eval step on the main rank.

- LM: every validation token after the first is scored exactly once (`score_lm`:
  non-overlapping blocks of block_size, the last one shorter; or sliding
  windows with `train.eval_stride`), unless `train.eval_tokens` caps it to the
  first N targets; the record says so with `val_capped`. BPB divides the
  summed nats by the UTF-8 bytes of the scored *targets*.
- JEPA: a fixed set of at least `jepa.eval_pairs` pairs over as many
  validation blocks as needed (seeded by `train.seed`), with retrieval, its
  copy control and the effective rank over the whole set.

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
    def __init__(self, cfg: Config, prepared: Any, device: torch.device, autocast, *, baseline: bool):
        from jepa_core.data.batching import val_blocks, val_windows
        from jepa_core.model import eval_pair_set

        tc, T = cfg.train, cfg.data.block_size
        self.device, self.autocast = device, autocast
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
        self.pair_set = None if baseline else eval_pair_set(n, T, cfg.jepa, cfg.jepa.eval_pairs, seed=tc.seed)
        self.blocks = None if self.pair_set is None else val_blocks(self.tokens, self.pair_set.starts, T)

    @torch.no_grad()
    def __call__(self, model) -> dict[str, Any]:
        """The eval record's metric fields for `model` (left in train mode afterwards)."""
        from jepa_core.model import bits_per_byte, jepa_eval_metrics, score_lm

        model.eval()
        try:
            with self.autocast():
                score = score_lm(
                    lambda x: model.lm_logits(x.to(self.device)),
                    self.tokens,
                    self.block_size,
                    self.batch_size,
                    self.stride,
                    self.max_tokens,
                    self.token_bytes,
                )
                extra = {}
                if self.pair_set is not None:
                    extra = jepa_eval_metrics(model, self.blocks, self.pair_set.pairs, batch_size=self.batch_size)
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
