"""Learning-rate schedule: linear warmup, then cosine to min_lr_ratio * lr."""

from __future__ import annotations

import math

from jepa_core.config import OptimConfig


def lr_factor(ocfg: OptimConfig, step: int, max_steps: int) -> float:
    """Multiplier of the peak LR at optimizer step `step` (1-based)."""
    warm = ocfg.warmup_steps
    if warm > 0 and step <= warm:
        return step / warm
    if max_steps <= warm:
        return 1.0
    progress = min(1.0, (step - warm) / (max_steps - warm))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return ocfg.min_lr_ratio + (1.0 - ocfg.min_lr_ratio) * cosine
