"""What each model tensor is, decided in one place from its state-dict name (stdlib only).

The optimizer groups, Muon's routing, `JepaLM.param_counts`, `jepa inspect`'s
parameter split and preflight all ask `param_role`, so they cannot disagree
(the tied embedding in particular: it *is* the LM head's weight, so its role
is "lm_head", trained at `lr_head` without decay, and counted with the head).

Roles:
- "teacher": the EMA teacher (`teacher.*`), never optimised;
- "jepa_head": online projector, predictor, horizon embedding (`jepa.*`);
- "lm_head": the untied head, `logit_scale`, `out_bias`, and the embedding when tied;
- "embedding": the token embedding when untied (a lookup table: AdamW with decay, never Muon);
- "hidden_matrix": every other 2-D backbone weight (block projections, the lm_bridge);
- "vector": norm gains, biases, the bridge gate (ndim < 2: no decay).
"""

from __future__ import annotations

ROLES = ("teacher", "jepa_head", "lm_head", "embedding", "hidden_matrix", "vector")
EMBEDDING = "transformer.tok_emb.weight"
_HEAD = ("transformer.lm_head.weight", "transformer.logit_scale", "transformer.out_bias")


def param_role(name: str, ndim: int, tied: bool) -> str:
    if name.startswith("teacher."):
        return "teacher"
    if name.startswith("jepa."):
        return "jepa_head"
    if name in _HEAD or (tied and name == EMBEDDING):
        return "lm_head"
    if name == EMBEDDING:
        return "embedding"
    return "hidden_matrix" if ndim == 2 else "vector"


# how the roles add up into the coarser counts that run_start and `jepa inspect` show
COUNT_OF_ROLE = {
    "teacher": "teacher",
    "jepa_head": "jepa_heads",
    "lm_head": "lm_head",
    "embedding": "backbone",
    "hidden_matrix": "backbone",
    "vector": "backbone",
}


# the transformer parts only a JEPA arm builds (the tap's norm, the bridge above the tap)
JEPA_ONLY = ("transformer.tap_norm.", "transformer.lm_bridge.", "transformer.bridge_gate")


def in_shared_lm(name: str, ndim: int, tied: bool) -> bool:
    """True for the LM network every arm builds: the backbone and the LM head, without the
    JEPA heads, the teacher and the JEPA-only stack (what the init digest covers)."""
    return param_role(name, ndim, tied) not in ("teacher", "jepa_head") and not name.startswith(JEPA_ONLY)
