"""Optimizer parameter groups: exact coverage on every shipped profile, clear failures."""

from __future__ import annotations

import pytest
import torch

from jepa_core.config import load_config, validate
from jepa_core.model import JepaLM, build_param_groups, check_param_groups
from jepa_core.profiles import list_profiles

PROFILES = sorted(list_profiles())


def _meta_model(cfg, vocab):
    # the shipped profiles go up to GPT-2-small size: build them without allocating
    with torch.device("meta"):
        return JepaLM(cfg, vocab)


def _expected_group(name: str, p: torch.nn.Parameter, tied: bool) -> str:
    head = name.startswith("jepa.") or name in (
        "transformer.lm_head.weight",
        "transformer.logit_scale",
        "transformer.out_bias",
    )
    if head or (tied and name == "transformer.tok_emb.weight"):
        return "heads"
    return "backbone_decay" if p.dim() >= 2 else "backbone_no_decay"


def test_there_are_shipped_profiles():
    assert {"tiny", "tiny-baseline", "shakespeare", "wikitext2", "gpt2-small"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("variant", ["as-shipped", "encoder", "untied"])
def test_groups_cover_every_profile_model(profile, variant):
    overrides = {"as-shipped": [], "encoder": ["jepa.teacher=encoder"], "untied": ["model.weight_tying=false"]}[variant]
    cfg = load_config(profile, overrides)
    model = _meta_model(cfg, cfg.data.vocab_size)
    groups = build_param_groups(model, cfg.optim)
    check_param_groups(model, groups)  # raises on any gap or overlap
    assert [g["name"] for g in groups] == ["heads", "backbone_decay", "backbone_no_decay"]
    by_id = {id(p): n for n, p in model.named_parameters()}
    tied = cfg.model.weight_tying
    teacher = {id(p) for p in model.teacher_parameters()}
    placed = {}
    for g in groups:
        for p in g["params"]:
            placed[by_id[id(p)]] = g["name"]
    trainable = {n: p for n, p in model.named_parameters() if id(p) not in teacher}
    assert set(placed) == set(trainable)  # independent of check_param_groups
    for n, p in trainable.items():
        assert placed[n] == _expected_group(n, p, tied), n
    heads, decay, no_decay = groups
    assert heads["lr"] == cfg.optim.lr_head and heads["weight_decay"] == 0.0
    assert decay["lr"] == cfg.optim.lr and decay["weight_decay"] == cfg.optim.weight_decay
    assert no_decay["lr"] == cfg.optim.lr and no_decay["weight_decay"] == 0.0
    if not cfg.jepa.run_baseline:
        assert teacher and not any(id(p) in teacher for g in groups for p in g["params"])
    # torch's AdamW takes the dicts as they are (extra "name" key included)
    opt = torch.optim.AdamW(groups, betas=(cfg.optim.beta1, cfg.optim.beta2))
    assert [g["name"] for g in opt.param_groups] == ["heads", "backbone_decay", "backbone_no_decay"]


def _small():
    cfg = validate(
        {
            "model": {"d_model": 16, "n_layers": 2, "n_heads": 2, "tap_layer": 0},
            "jepa": {"latent_dim": 8, "horizons": [2], "horizon_probs": [1.0], "teacher": "encoder"},
            "data": {"block_size": 16},
        }
    )
    model = JepaLM(cfg, 40)
    return model, build_param_groups(model, cfg.optim)


def test_check_fails_when_a_parameter_is_left_out():
    model, groups = _small()
    groups[1]["params"] = [p for p in groups[1]["params"] if p is not model.transformer.blocks[1].mlp.w3.weight]
    groups[0]["params"] = [p for p in groups[0]["params"] if p is not model.jepa.horizon_emb.weight]
    with pytest.raises(ValueError) as e:
        check_param_groups(model, groups)
    msg = str(e.value)
    assert "trainable parameter transformer.blocks.1.mlp.w3.weight is in no optimizer group" in msg
    assert "trainable parameter jepa.horizon_emb.weight is in no optimizer group" in msg


def test_check_fails_on_duplicates_and_teacher_params():
    model, groups = _small()
    groups[2]["params"].append(model.transformer.norm_f.weight)  # already in backbone_no_decay
    with pytest.raises(ValueError, match=r"transformer.norm_f.weight is in 2 groups: \['backbone_no_decay', 'backbone_no_decay'\]"):
        check_param_groups(model, groups)
    model, groups = _small()
    groups[0]["params"].append(model.teacher.encoder.blocks[0].attn.qkv.weight)
    with pytest.raises(ValueError, match="EMA teacher parameter teacher.encoder.blocks.0.attn.qkv.weight"):
        check_param_groups(model, groups)
    model, groups = _small()
    groups[0]["params"].append(torch.nn.Parameter(torch.zeros(3)))
    with pytest.raises(ValueError, match="not a parameter of the model"):
        check_param_groups(model, groups)
