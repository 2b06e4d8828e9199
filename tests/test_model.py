"""The LM stack: causality, RoPE, norms, SwiGLU, heads, state-dict names, init."""

from __future__ import annotations

import math

import pytest
import torch

from model_helpers import small_cfg
from jepa_core.model import JepaLM
from jepa_core.model.transformer import (
    CausalSelfAttention,
    DecoderOnlyTransformer,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    swiglu_hidden,
)




V = 61


@pytest.mark.parametrize("tying", [True, False])
def test_causality_bit_identical(tying):
    torch.manual_seed(0)
    model = JepaLM.from_config(small_cfg(model={"weight_tying": tying}), V).eval()
    idx = torch.randint(0, V, (2, 32))
    t = 13
    idx2 = idx.clone()
    idx2[:, t + 1 :] = (idx2[:, t + 1 :] + 7) % V
    a, b = model.lm_logits(idx), model.lm_logits(idx2)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    # the test can fail: later positions do see the change
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def _rope_reference(x: torch.Tensor, base: float) -> torch.Tensor:
    """Complex rotation of (x_i, x_{i+h/2}) by pos * base^(-2i/h), float64."""
    T, h = x.shape[-2], x.shape[-1]
    half = h // 2
    xc = torch.complex(x[..., :half].double(), x[..., half:].double())
    out = torch.empty_like(xc)
    for pos in range(T):
        for i in range(half):
            theta = pos * base ** (-2.0 * i / h)
            out[..., pos, i] = xc[..., pos, i] * complex(math.cos(theta), math.sin(theta))
    return torch.cat((out.real, out.imag), dim=-1)


def test_rope_matches_complex_rotation_reference():
    torch.manual_seed(1)
    rope = RotaryEmbedding(8, 16, 10000.0)
    x = torch.randn(2, 3, 16, 8)
    ref = _rope_reference(x, 10000.0)
    torch.testing.assert_close(rope(x).double(), ref, atol=2e-6, rtol=0)
    # float64 input is rotated in float64 (tables rounded to float32 only)
    torch.testing.assert_close(rope(x.double()), ref, atol=1e-6, rtol=0)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(2)
    T, h = 24, 16
    rope = RotaryEmbedding(h, T, 10000.0)
    q = torch.randn(h).double().expand(T, h).clone()
    k = torch.randn(h).double().expand(T, h).clone()
    s = rope(q) @ rope(k).T  # s[i, j] = <R_i q, R_j k>
    for shift in (1, 5, 11):
        torch.testing.assert_close(s[shift:, shift:], s[: T - shift, : T - shift], atol=1e-5, rtol=0)
    # and it does depend on the offset (the rotation is not the identity)
    assert abs(s[0, 0] - s[0, 5]) > 1e-3


def test_shorter_sequence_after_longer_one():
    torch.manual_seed(3)
    model = JepaLM.from_config(small_cfg(), V).eval()
    idx = torch.randint(0, V, (2, 32))
    long = model.lm_logits(idx)
    short = model.lm_logits(idx[:, :9])  # the tables are sliced, not rebuilt
    torch.testing.assert_close(short, long[:, :9], atol=1e-5, rtol=1e-5)
    again = model.lm_logits(idx)
    torch.testing.assert_close(again, long, atol=0, rtol=0)
    with pytest.raises(ValueError, match="block_size"):
        model.lm_logits(torch.randint(0, V, (1, 33)))


def test_rope_tables_not_in_state_dict_and_follow_dtype():
    model = JepaLM.from_config(small_cfg(jepa={"teacher": "encoder"}), V)
    keys = list(model.state_dict())
    assert not any("rope" in k or k.endswith((".cos", ".sin")) for k in keys)
    rope = model.transformer.blocks[0].attn.rope
    assert rope.cos.shape == (32, 8)


def test_meta_build_then_materialise():
    cfg = small_cfg(jepa={"teacher": "encoder"})
    ref = JepaLM.from_config(cfg, V)
    with torch.device("meta"):
        model = JepaLM.from_config(cfg, V)
    model.to_empty(device="cpu")
    model.reset_rope_tables()
    model.load_state_dict(ref.state_dict())
    idx = torch.randint(0, V, (2, 32))
    torch.testing.assert_close(model.lm_logits(idx), ref.lm_logits(idx), atol=0, rtol=0)


def test_rmsnorm_matches_float64_reference():
    torch.manual_seed(4)
    norm = RMSNorm(10, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(10))
    x = torch.randn(3, 5, 10)
    xd, wd = x.double(), norm.weight.double()
    ref = xd / torch.sqrt((xd**2).mean(-1, keepdim=True) + 1e-5) * wd
    torch.testing.assert_close(norm(x).double(), ref, atol=1e-5, rtol=1e-5)
    # bf16 input comes back bf16, normalised in fp32
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, atol=0.05, rtol=0.02)


def test_swiglu_formula_and_hidden_rounding():
    assert swiglu_hidden(128, 8 / 3, 64) == 384  # 341.33 -> next multiple of 64
    assert swiglu_hidden(768, 8 / 3, 64) == 2048
    assert swiglu_hidden(96, 4.0, 128) == 384
    torch.manual_seed(5)
    mlp = SwiGLU(6, 8, 0.0)
    x = torch.randn(4, 6)
    w12, w3 = mlp.w12.weight.double(), mlp.w3.weight.double()
    u, v = x.double() @ w12[:8].T, x.double() @ w12[8:].T
    ref = (u * torch.sigmoid(u) * v) @ w3.T
    torch.testing.assert_close(mlp(x).double(), ref, atol=1e-6, rtol=1e-5)
    assert mlp.w12.bias is None and mlp.w3.bias is None


def test_attention_matches_explicit_causal_softmax():
    torch.manual_seed(6)
    attn = CausalSelfAttention(8, 2, 16, 10000.0, 0.0).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    q, k, v = (x @ attn.qkv.weight.T).split(8, dim=-1)
    heads = lambda t: t.view(1, 5, 2, 4).transpose(1, 2)  # noqa: E731
    q, k, v = heads(q), heads(k), heads(v)
    q, k = _rope_reference(q, 10000.0), _rope_reference(k, 10000.0)
    s = q @ k.transpose(-1, -2) / 2.0
    s = s.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    y = (s.softmax(-1) @ v).transpose(1, 2).reshape(1, 5, 8) @ attn.proj.weight.T
    torch.testing.assert_close(attn(x), y, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("tying", [True, False])
def test_logits_formula(tying):
    torch.manual_seed(7)
    c = small_cfg(model={"weight_tying": tying})
    tr = DecoderOnlyTransformer(c.model, V, c.data.block_size, with_tap=False)
    with torch.no_grad():
        tr.out_bias.copy_(torch.randn(V))
        tr.logit_scale.fill_(0.37)
    h = torch.randn(2, 3, 32)
    w = tr.tok_emb.weight if tying else tr.lm_head.weight
    ref = (h.double() @ w.double().T) * 0.37 + tr.out_bias.double()
    torch.testing.assert_close(tr.logits(h).double(), ref, atol=1e-5, rtol=1e-5)
    assert tr.logit_scale.requires_grad and tr.out_bias.requires_grad
    assert hasattr(tr, "lm_head") != tying


def test_state_dict_names_are_the_checkpoint_format():
    cfg = small_cfg(model={"weight_tying": False, "n_layers": 2, "tap_layer": 0}, jepa={"teacher": "encoder"})
    keys = set(JepaLM.from_config(cfg, V).state_dict())
    block = ["attn_norm.weight", "attn.qkv.weight", "attn.proj.weight", "mlp_norm.weight", "mlp.w12.weight", "mlp.w3.weight"]
    mlp = ["0.weight", "0.bias", "3.weight", "3.bias"]
    expected = {
        "transformer.tok_emb.weight",
        "transformer.norm_f.weight",
        "transformer.logit_scale",
        "transformer.out_bias",
        "transformer.lm_head.weight",
        "transformer.tap_norm.weight",
        "transformer.bridge_gate",
        "transformer.lm_bridge.0.weight",
        "transformer.lm_bridge.1.weight",
        "transformer.lm_bridge.1.bias",
        "transformer.lm_bridge.4.weight",
        "transformer.lm_bridge.4.bias",
        "jepa.horizon_emb.weight",
        "teacher.encoder.tok_emb.weight",
        "teacher.encoder.tap_norm.weight",
        *(f"transformer.blocks.{i}.{n}" for i in range(2) for n in block),
        *(f"teacher.encoder.blocks.0.{n}" for n in block),  # only up to the tap (tl = 0)
        *(f"jepa.online_proj.{n}" for n in mlp),
        *(f"jepa.predictor.{n}" for n in mlp),
        *(f"teacher.target_proj.{n}" for n in mlp),
    }
    assert keys == expected


def test_tap_layer_resolution_and_bridge_gate_init():
    for tap, tl in ((-1, 2), (-3, 0), (1, 1)):
        tr = JepaLM.from_config(small_cfg(model={"tap_layer": tap}), V).transformer
        assert tr.tap_index == tl
        assert tr.bridge_gate.item() == -2.0


def test_init_scales_and_initial_loss():
    torch.manual_seed(8)
    cfg = small_cfg(model={"d_model": 128, "n_heads": 4, "n_layers": 4, "init_std": 0.02}, data={"block_size": 64})
    model = JepaLM.from_config(cfg, 512)
    tr = model.transformer
    resid = 0.02 / math.sqrt(8)
    assert abs(tr.blocks[1].attn.proj.weight.std().item() - resid) < 0.1 * resid
    assert abs(tr.blocks[1].mlp.w3.weight.std().item() - resid) < 0.1 * resid
    assert abs(tr.blocks[1].attn.qkv.weight.std().item() - 0.02) < 0.002
    assert abs(tr.tok_emb.weight.std().item() - 0.02) < 0.002
    assert tr.logit_scale.item() == pytest.approx(1 / math.sqrt(128))
    idx, targets = torch.randint(0, 512, (2, 4, 64))
    out = model(idx, targets)
    # near-uniform predictions at step 0: the LM loss starts at ln V
    assert abs(out.lm_loss.item() - math.log(512)) < 0.05


def test_shared_parameters_start_identical_whatever_optional_modules_exist():
    """Pairing by construction: the baseline, a JEPA arm and an encoder-teacher arm of one seed
    share every parameter they have in common bit for bit, whatever the global RNG did before."""
    untied = {"weight_tying": False}
    torch.manual_seed(123)
    base = JepaLM.from_config(small_cfg(model=untied, jepa={"run_baseline": True}), V, seed=7).state_dict()
    torch.manual_seed(456)  # a different global stream must not matter
    jepa = JepaLM.from_config(small_cfg(model=untied), V, seed=7).state_dict()
    enc = JepaLM.from_config(small_cfg(model=untied, jepa={"teacher": "encoder"}), V, seed=7).state_dict()
    other = JepaLM.from_config(small_cfg(model=untied, jepa={"run_baseline": True}), V, seed=8).state_dict()
    assert "transformer.lm_bridge.1.weight" in jepa and "transformer.lm_bridge.1.weight" not in base
    for name, t in base.items():
        assert torch.equal(t, jepa[name]) and torch.equal(t, enc[name]), name
    random_ones = [n for n in base if n.endswith(("qkv.weight", "proj.weight", "w12.weight", "w3.weight", "tok_emb.weight", "lm_head.weight"))]
    assert len(random_ones) == 3 * 4 + 2
    assert all(not torch.equal(base[n], other[n]) for n in random_ones)
    # the JEPA heads do not depend on the teacher either; distinct tensors get distinct draws
    for name in (n for n in jepa if n.startswith("jepa.")):
        assert torch.equal(jepa[name], enc[name]), name
    assert not torch.equal(base["transformer.blocks.0.attn.qkv.weight"][:32], base["transformer.blocks.1.attn.qkv.weight"][:32])


def test_shared_lm_digest_covers_exactly_the_shared_weights():
    base = JepaLM.from_config(small_cfg(jepa={"run_baseline": True}), V, seed=7)
    jepa = JepaLM.from_config(small_cfg(jepa={"teacher": "encoder"}), V, seed=7)
    assert base.shared_lm_digest() == jepa.shared_lm_digest()
    assert JepaLM.from_config(small_cfg(jepa={"run_baseline": True}), V, seed=8).shared_lm_digest() != base.shared_lm_digest()
    digest = jepa.shared_lm_digest()
    with torch.no_grad():
        # JEPA-only parts (bridge, gate, heads, teacher) are not shared: they do not enter the digest
        jepa.transformer.bridge_gate.fill_(3.0)
        jepa.transformer.lm_bridge[1].weight.zero_()
        jepa.jepa.horizon_emb.weight.zero_()
        next(jepa.teacher.parameters()).zero_()
        assert jepa.shared_lm_digest() == digest
        jepa.transformer.logit_scale.mul_(2.0)  # a 0-d shared parameter does
        assert jepa.shared_lm_digest() != digest


def test_generate_shapes_greedy_and_seeded_sampling():
    torch.manual_seed(9)
    model = JepaLM.from_config(small_cfg(), V)
    model.train()
    prompt = torch.tensor([3, 4, 5])
    out = model.generate(prompt, 40, temperature=0.0)  # runs past block_size: context is cropped
    assert out.shape == (43,) and torch.equal(out[:3], prompt)
    assert model.training  # mode restored
    # greedy equals argmax of the last logits, step by step (first two steps)
    ids = prompt[None]
    for _ in range(2):
        ids = torch.cat((ids, model.eval().lm_logits(ids)[:, -1].argmax(-1, keepdim=True)), 1)
    assert torch.equal(out[:5], ids[0])
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = model.generate(prompt[None].repeat(2, 1), 10, temperature=1.0, top_k=5, generator=g1)
    b = model.generate(prompt[None].repeat(2, 1), 10, temperature=1.0, top_k=5, generator=g2)
    assert a.shape == (2, 13) and torch.equal(a, b)
    # top_k = 1 is greedy
    c = model.generate(prompt, 6, temperature=1.0, top_k=1, generator=g1)
    assert torch.equal(c, out[:9])
