"""AdamW parameter groups, and the check that they cover the model exactly once.

Groups (roles in `roles.py`; docs/architecture.md, "The packages"):
- "heads": JEPA heads, the LM head (the embedding when tied), `logit_scale`,
  `out_bias`; at `lr_head`, no weight decay;
- "backbone_decay": other trainable tensors with ndim >= 2, at `lr` with `weight_decay`;
- "backbone_no_decay": other trainable tensors with ndim < 2 (norm gains,
  biases, the bridge gate), at `lr`, no decay.
- "muon" (only with `optim.optimizer = "muon"`): the backbone's hidden 2-D matrices
  (block projections and the lm_bridge), taken out of "backbone_decay"; at `muon_lr`
  with `muon_weight_decay`. Embeddings stay on AdamW: Muon's orthogonalised update
  suits matrices that map hidden states, not lookup tables.
The EMA teacher is never in a group: it is updated by `update_teacher` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from .roles import param_role

if TYPE_CHECKING:
    from ..config import OptimConfig
    from .jepa import JepaLM

def build_param_groups(model: "JepaLM", ocfg: "OptimConfig") -> list[dict[str, Any]]:
    """Three named groups (always present, possibly empty), plus "muon" when that optimizer is chosen.

    Membership comes from `param_role` (roles.py), the one classification of the model's tensors.
    """
    tied = model.transformer.weight_tying
    use_muon = ocfg.optimizer == "muon"
    members: dict[str, list] = {"heads": [], "backbone_decay": [], "backbone_no_decay": [], "muon": []}
    for name, p in model.named_parameters():
        role = param_role(name, p.ndim, tied)
        if role == "teacher" or not p.requires_grad:
            continue
        if role in ("jepa_head", "lm_head"):
            members["heads"].append(p)
        elif role == "hidden_matrix" and use_muon:
            members["muon"].append(p)
        elif role in ("hidden_matrix", "embedding"):
            members["backbone_decay"].append(p)
        else:
            members["backbone_no_decay"].append(p)
    groups = [
        {"params": members["heads"], "lr": ocfg.lr_head, "weight_decay": 0.0, "name": "heads"},
        {"params": members["backbone_decay"], "lr": ocfg.lr, "weight_decay": ocfg.weight_decay, "name": "backbone_decay"},
        {"params": members["backbone_no_decay"], "lr": ocfg.lr, "weight_decay": 0.0, "name": "backbone_no_decay"},
    ]
    if use_muon:
        groups.append({"params": members["muon"], "lr": ocfg.muon_lr, "weight_decay": ocfg.muon_weight_decay, "name": "muon"})
    return groups


def param_group_names(model: nn.Module, groups: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Group name -> parameter names, in order (for reports and checkpoint keys)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {g.get("name", str(i)): [names.get(id(p), "<unknown>") for p in g["params"]] for i, g in enumerate(groups)}


def check_param_groups(model: nn.Module, groups: list[dict[str, Any]]) -> None:
    """Raise ValueError unless every trainable parameter is in exactly one group and no
    teacher (or frozen, or foreign) tensor is in any; the message names each offender."""
    named = dict(model.named_parameters())
    by_id = {id(p): n for n, p in named.items()}
    teacher = {id(p) for p in model.teacher_parameters()} if hasattr(model, "teacher_parameters") else set()
    seen: dict[int, list[str]] = {}
    problems: list[str] = []
    for i, g in enumerate(groups):
        gname = g.get("name", f"group {i}")
        for p in g["params"]:
            if id(p) not in by_id:
                problems.append(f"a tensor of shape {tuple(p.shape)} in group {gname!r} is not a parameter of the model")
                continue
            seen.setdefault(id(p), []).append(gname)
    for pid, gnames in seen.items():
        name = by_id[pid]
        if pid in teacher:
            problems.append(f"EMA teacher parameter {name} is in group(s) {gnames}; the teacher must not be optimised")
        elif not named[name].requires_grad:
            problems.append(f"frozen parameter {name} is in group(s) {gnames}")
        if len(gnames) > 1:
            problems.append(f"{name} is in {len(gnames)} groups: {gnames}")
    for name, p in named.items():
        if p.requires_grad and id(p) not in teacher and id(p) not in seen:
            problems.append(f"trainable parameter {name} is in no optimizer group")
    if problems:
        raise ValueError("optimizer parameter groups are wrong:\n  " + "\n  ".join(problems))
