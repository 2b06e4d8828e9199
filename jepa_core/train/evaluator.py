"""Evaluation during training: validation LM loss and bits per byte, and the JEPA probes.

Built once per run (the validation windows, their byte count and the fixed
eval pairs do not change), called at each eval step on the main rank. It uses
private generators only, so when an eval runs never changes the training stream.
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
        from jepa_core.data import val_batches
        from jepa_core.model import fixed_eval_pairs

        tc = cfg.train
        self.device, self.autocast = device, autocast
        self.val_set = val_batches(prepared.val_tokens, cfg.data.block_size, tc.batch_size, tc.eval_batches)
        if not self.val_set:
            raise ConfigError(
                f"The validation split of `{cfg.data.dataset}` has {len(prepared.val_tokens)} tokens, too few for one block of {cfg.data.block_size}.",
                hint="Lower data.block_size or raise data.val_fraction.",
            )
        # bits per byte divide by the bytes of the *targets* (the tokens scored), not of the inputs
        lengths = torch.as_tensor(np.array(prepared.tokenizer().token_byte_lengths(), dtype=np.int64))
        self.val_bytes = int(sum(lengths[y].sum().item() for _, y in self.val_set))
        self.pairs = None if baseline else fixed_eval_pairs(self.val_set[0][0].shape[0], cfg.data.block_size, cfg.jepa, cfg.jepa.eval_pairs, seed=tc.seed)

    @torch.no_grad()
    def __call__(self, model) -> dict[str, Any]:
        """The eval record's metric fields for `model` (left in train mode afterwards)."""
        from jepa_core.model import bits_per_byte, jepa_eval_metrics

        model.eval()
        try:
            nats, count = 0.0, 0
            with self.autocast():
                for x, y in self.val_set:
                    x, y = x.to(self.device), y.to(self.device)
                    logits = model.lm_logits(x).float()
                    nats += torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), reduction="sum").item()
                    count += y.numel()
                extra = jepa_eval_metrics(model, self.val_set[0][0].to(self.device), self.pairs) if self.pairs is not None else {}
        finally:
            model.train()
        val_loss = nats / max(count, 1)
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)), "val_bpb": bits_per_byte(nats, self.val_bytes), **extra}
