"""Optimizer parameter groups: exact coverage on every shipped profile, clear failures."""

from __future__ import annotations

import pytest
import torch

from jepa_core.config import load_config, validate
from jepa_core.model import JepaLM, build_param_groups, check_param_groups
from jepa_core.profiles import list_profiles
from jepa_core.train.optimizer import MuonWithAdamW, build_optimizer

PROFILES = sorted(list_profiles())


def _meta_model(cfg, vocab):
    # the shipped profiles go up to GPT-2-small size: build them without allocating
    with torch.device("meta"):
        return JepaLM.from_config(cfg, vocab)


def _expected_group(name: str, p: torch.nn.Parameter, tied: bool, muon: bool = False) -> str:
    head = name.startswith("jepa.") or name in (
        "transformer.lm_head.weight",
        "transformer.logit_scale",
        "transformer.out_bias",
    )
    if head or (tied and name == "transformer.tok_emb.weight"):
        return "heads"
    hidden_matrix = p.dim() == 2 and (name.startswith("transformer.blocks.") or name.startswith("transformer.lm_bridge."))
    if muon and hidden_matrix:
        return "muon"
    return "backbone_decay" if p.dim() >= 2 else "backbone_no_decay"


def test_there_are_shipped_profiles():
    assert {"tiny", "tiny-baseline", "shakespeare", "wikitext2", "gpt2-small"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("variant", ["as-shipped", "encoder", "untied", "muon", "muon-untied"])
def test_groups_cover_every_profile_model(profile, variant):
    overrides = {
        "as-shipped": [],
        "encoder": ["jepa.teacher=encoder"],
        "untied": ["model.weight_tying=false"],
        "muon": ["optim.optimizer=muon"],
        "muon-untied": ["optim.optimizer=muon", "model.weight_tying=false"],
    }[variant]
    cfg = load_config(profile, overrides)
    model = _meta_model(cfg, cfg.data.vocab_size)
    groups = build_param_groups(model, cfg.optim)
    check_param_groups(model, groups)  # raises on any gap or overlap
    muon = cfg.optim.optimizer == "muon"
    names = ["heads", "backbone_decay", "backbone_no_decay"] + (["muon"] if muon else [])
    assert [g["name"] for g in groups] == names
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
        assert placed[n] == _expected_group(n, p, tied, muon), n
    heads, decay, no_decay = groups[:3]
    if muon:
        assert groups[3]["lr"] == cfg.optim.muon_lr and groups[3]["weight_decay"] == cfg.optim.muon_weight_decay
        assert all(p.ndim == 2 for p in groups[3]["params"]) and groups[3]["params"]
    assert heads["lr"] == cfg.optim.lr_head and heads["weight_decay"] == 0.0
    assert decay["lr"] == cfg.optim.lr and decay["weight_decay"] == cfg.optim.weight_decay
    assert no_decay["lr"] == cfg.optim.lr and no_decay["weight_decay"] == 0.0
    if not cfg.jepa.run_baseline:
        assert teacher and not any(id(p) in teacher for g in groups for p in g["params"])
    # torch's optimizers take the dicts as they are (extra "name" key included)
    opt = build_optimizer(groups, cfg.optim, torch.device("cpu"))
    assert [g["name"] for g in opt.param_groups] == names


def _small():
    cfg = validate(
        {
            "model": {"d_model": 16, "n_layers": 2, "n_heads": 2, "tap_layer": 0},
            "jepa": {"latent_dim": 8, "horizons": [2], "horizon_probs": [1.0], "teacher": "encoder"},
            "data": {"block_size": 16},
        }
    )
    model = JepaLM.from_config(cfg, 40)
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


def _muon_pair():
    """Two identical small models with the muon config, and that config."""
    cfg = validate(
        {
            "model": {"d_model": 16, "n_layers": 2, "n_heads": 2, "tap_layer": 0},
            "jepa": {"latent_dim": 8, "horizons": [2], "horizon_probs": [1.0]},
            "data": {"block_size": 16},
            # bf16 Newton-Schulz: torch's own dtype, so the combined optimizer can be
            # compared bit for bit with torch.optim.Muon (tests/test_muon_ns.py covers fp32)
            "optim": {"optimizer": "muon", "muon_lr": 0.05, "muon_weight_decay": 0.1, "lr": 1e-2, "lr_head": 2e-2, "muon_ns_dtype": "bf16"},
        }
    )
    torch.manual_seed(0)
    a = JepaLM.from_config(cfg, 40)
    b = JepaLM.from_config(cfg, 40)
    b.load_state_dict(a.state_dict())
    return cfg, a, b


def _fill_grads(model, seed):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn(p.shape, generator=g)


def test_muon_with_adamw_steps_like_torch_optimizers_used_apart():
    """Routing check: our combined optimizer == torch's Muon on the hidden matrices plus
    torch's AdamW on the rest, built by hand from the documented split."""
    cfg, a, b = _muon_pair()
    opt = build_optimizer(build_param_groups(a, cfg.optim), cfg.optim, torch.device("cpu"))
    assert isinstance(opt, MuonWithAdamW)
    names = dict(b.named_parameters())
    teacher = {id(p) for p in b.teacher_parameters()}
    hidden = [p for n, p in names.items() if p.ndim == 2 and n.startswith(("transformer.blocks.", "transformer.lm_bridge."))]
    heads = [p for n, p in names.items() if id(p) not in teacher and (n.startswith("jepa.") or n.startswith("transformer.tok_emb") or n in ("transformer.logit_scale", "transformer.out_bias"))]
    rest = [p for p in b.parameters() if id(p) not in teacher and all(p is not q for q in hidden + heads)]
    ref_muon = torch.optim.Muon(hidden, lr=0.05, weight_decay=0.1, momentum=cfg.optim.muon_momentum, nesterov=True)
    ref_adam = torch.optim.AdamW(
        [{"params": heads, "lr": 2e-2, "weight_decay": 0.0}, {"params": rest, "lr": 1e-2, "weight_decay": 0.0}],
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps,
    )
    for step in range(3):
        _fill_grads(a, step)
        _fill_grads(b, step)
        opt.step()
        ref_muon.step()
        ref_adam.step()
        opt.zero_grad()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n
    before = {n: p.detach().clone() for n, p in a.named_parameters()}
    # the LR schedule writes into opt.param_groups: lr 0 on the muon group (and no decay)
    # must leave every hidden matrix where it is while AdamW still moves the rest
    muon_group = next(g for g in opt.param_groups if g["name"] == "muon")
    muon_group["lr"] = 0.0
    _fill_grads(a, 7)
    opt.step()
    for n, p in a.named_parameters():
        if n.startswith("transformer.blocks.") and p.ndim == 2:
            assert torch.equal(p, before[n]), n
    assert not torch.equal(a.transformer.out_bias, before["transformer.out_bias"])
    # one state table: AdamW moments and Muon momentum, each parameter once
    assert all("momentum_buffer" in opt.state[p] for p in muon_group["params"])
    assert all("exp_avg" in opt.state[p] for p in opt.param_groups[0]["params"])


def test_muon_needs_a_torch_that_has_it(monkeypatch):
    from jepa_core.errors import ConfigError

    cfg, a, _ = _muon_pair()
    monkeypatch.delattr(torch.optim, "Muon")
    with pytest.raises(ConfigError, match="torch >= 2.9"):
        build_optimizer(build_param_groups(a, cfg.optim), cfg.optim, torch.device("cpu"))
