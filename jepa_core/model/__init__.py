"""The model: decoder-only transformer, JEPA objective, parameter groups, eval helpers.

Imports torch; only commands that build or read a model import it.
"""

from .eval import (
    EvalPairSet,
    LMScore,
    bits_per_byte,
    effective_rank,
    eval_pair_set,
    fixed_eval_pairs,
    jepa_eval_metrics,
    retrieval_metrics,
    score_lm,
)
from .flops import estimate_flops_per_token
from .jepa import (
    JepaLM,
    ModelOutput,
    Pairs,
    covariance_loss,
    ema_momentum_at,
    info_nce,
    lm_weight_at,
    negatives_mask,
    pair_capacity_error,
    sample_anchor_target_pairs,
    variance_loss,
)
from .param_groups import build_param_groups, check_param_groups, param_group_names
from .transformer import DecoderOnlyTransformer

__all__ = [
    "DecoderOnlyTransformer",
    "EvalPairSet",
    "LMScore",
    "JepaLM",
    "ModelOutput",
    "Pairs",
    "bits_per_byte",
    "build_param_groups",
    "check_param_groups",
    "covariance_loss",
    "effective_rank",
    "ema_momentum_at",
    "estimate_flops_per_token",
    "eval_pair_set",
    "fixed_eval_pairs",
    "info_nce",
    "jepa_eval_metrics",
    "lm_weight_at",
    "negatives_mask",
    "pair_capacity_error",
    "param_group_names",
    "retrieval_metrics",
    "sample_anchor_target_pairs",
    "score_lm",
    "variance_loss",
]
