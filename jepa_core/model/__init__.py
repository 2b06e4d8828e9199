"""The model: decoder-only transformer, JEPA objective, parameter groups, eval helpers.

Names load lazily: importing the package (or `roles`) does not import torch.
"""

import importlib
from typing import Any

# Lazy: `jepa_core.model.roles` is stdlib-only and `jepa inspect` reads it without torch; the
# names below load their (torch-importing) module on first use.
_LAZY = {
    "DecoderOnlyTransformer": ".transformer",
    "EvalPairSet": ".eval",
    "JepaLM": ".jepa",
    "LMScore": ".eval",
    "ModelOutput": ".jepa",
    "Pairs": ".pairs",
    "bits_per_byte": ".eval",
    "build_param_groups": ".param_groups",
    "check_param_groups": ".param_groups",
    "covariance_loss": ".jepa",
    "effective_rank": ".eval",
    "ema_momentum_at": ".jepa",
    "estimate_flops_per_token": ".flops",
    "eval_pair_set": ".eval",
    "info_nce": ".jepa",
    "jepa_eval_metrics": ".eval",
    "lm_weight_at": ".jepa",
    "jepa_weight_at": ".jepa",
    "negatives_mask": ".jepa",
    "pair_capacity_error": ".pairs",
    "param_group_names": ".param_groups",
    "retrieval_metrics": ".eval",
    "sample_anchor_target_pairs": ".pairs",
    "score_lm": ".eval",
    "variance_loss": ".jepa",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_LAZY)
