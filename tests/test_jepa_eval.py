"""Eval helpers (retrieval, effective rank, BPB, fixed pairs) and the FLOPs estimate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from jepa_core.config import validate
from model_helpers import small_cfg
from jepa_core.model import (
    JepaLM,
    bits_per_byte,
    effective_rank,
    estimate_flops_per_token,
    fixed_eval_pairs,
    jepa_eval_metrics,
    retrieval_metrics,
)

V = 61




def _retrieval_reference(p, y, k_idx, horizons):
    p, y, k_idx = p.double().tolist(), y.double().tolist(), k_idx.tolist()
    out, margins = {}, []
    for hi, k in enumerate(horizons):
        rows = [i for i in range(len(p)) if k_idx[i] == hi]
        n = len(rows)
        if n < 2:
            continue
        right = 0
        for i in rows:
            s = {j: sum(a * b for a, b in zip(p[i], y[j])) for j in rows}
            best = max(rows, key=lambda j: (s[j], -j))  # first index wins ties, like argmax
            right += best == i
            margins.append(s[i] - max(s[j] for j in rows if j != i))
        acc = right / n
        out[f"retrieval_top1_h{k}"] = acc
        out[f"retrieval_top1_norm_h{k}"] = (acc - 1 / n) / (1 - 1 / n)
    out["retrieval_margin"] = sum(margins) / len(margins)
    return out


def test_retrieval_hand_computed():
    e = torch.eye(4)
    # horizon 0: perfect; horizon 1: the two targets swapped
    got = retrieval_metrics(e, e[[0, 1, 3, 2]], torch.tensor([0, 0, 1, 1]), [2, 8])
    assert got == pytest.approx(
        {
            "retrieval_top1_h2": 1.0,
            "retrieval_top1_norm_h2": 1.0,
            "retrieval_top1_h8": 0.0,
            "retrieval_top1_norm_h8": -1.0,
            "retrieval_margin": 0.0,  # (+1 + 1 - 1 - 1) / 4
        }
    )
    # a horizon with a single pair has no negatives and is left out
    got = retrieval_metrics(e[:3], e[:3], torch.tensor([0, 0, 1]), [2, 8])
    assert "retrieval_top1_h8" not in got and got["retrieval_top1_h2"] == 1.0


def test_retrieval_matches_loop_reference():
    torch.manual_seed(0)
    p = F.normalize(torch.randn(40, 6), dim=-1)
    y = F.normalize(p + 0.8 * torch.randn(40, 6), dim=-1)
    k_idx = torch.randint(0, 3, (40,))
    got = retrieval_metrics(p, y, k_idx, [2, 8, 32])
    ref = _retrieval_reference(p, y, k_idx, [2, 8, 32])
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-6), key
    assert 0 < got["retrieval_top1_h2"] < 1  # a non-trivial case


def test_fixed_eval_pairs_are_fixed_and_leave_the_global_rng_alone():
    j = small_cfg().jepa
    state = torch.get_rng_state()
    a = fixed_eval_pairs(8, 32, j, 50, seed=123)
    b = fixed_eval_pairs(8, 32, j, 50, seed=123)
    c = fixed_eval_pairs(8, 32, j, 50, seed=124)
    assert torch.equal(state, torch.get_rng_state())
    assert all(x.shape == (50,) for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert (a.tpos < 32).all() and (a.b < 8).all()


@pytest.mark.parametrize("teacher", ["projector", "encoder"])
def test_jepa_eval_metrics_on_a_model(teacher):
    torch.manual_seed(1)
    model = JepaLM(small_cfg(jepa={"teacher": teacher}, model={"dropout": 0.3}), V)
    model.train()
    idx = torch.randint(0, V, (8, 32))
    pairs = fixed_eval_pairs(8, 32, model.cfg.jepa, 64, seed=0)
    got = jepa_eval_metrics(model, idx, pairs)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        _, h_tap = model.transformer(idx)
        z_a, z_p, z_t = model.jepa_latents(idx, h_tap, pairs)
    ref = _retrieval_reference(F.normalize(z_p, dim=-1), F.normalize(z_t, dim=-1), pairs.k_idx, [2, 4])
    assert set(got) == set(ref) | {"eff_rank"}
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-5), key
    assert got["eff_rank"] == pytest.approx(effective_rank(z_a), rel=1e-6)
    assert 1.0 <= got["eff_rank"] <= 16.0
    # the same pairs give the same numbers (fixed eval)
    assert jepa_eval_metrics(model, idx, pairs) == got


def test_jepa_eval_metrics_baseline_is_empty():
    model = JepaLM(small_cfg(jepa={"run_baseline": True}), V)
    pairs = fixed_eval_pairs(2, 32, model.cfg.jepa, 8, seed=0)
    assert jepa_eval_metrics(model, torch.randint(0, V, (2, 32)), pairs) == {}


def test_effective_rank_hand_computed():
    assert effective_rank(torch.eye(4)) == pytest.approx(4.0)
    # singular values (3, 1): p = (3/4, 1/4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(math.exp(h), rel=1e-9)
    assert effective_rank(torch.ones(10, 5)) == pytest.approx(1.0, abs=1e-6)  # full collapse
    assert effective_rank(torch.zeros(10, 5)) == 0.0
    # rotations do not change the singular values
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    z = torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5, 0.0, 0.0], dtype=torch.float64)) @ q
    s = torch.tensor([5.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    p = s / s.sum()
    assert effective_rank(z) == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-9)


def test_bits_per_byte():
    assert bits_per_byte(100 * math.log(2), 50) == pytest.approx(2.0)
    assert bits_per_byte(1.0, 1) == pytest.approx(1 / math.log(2))
    with pytest.raises(ValueError):
        bits_per_byte(1.0, 0)


# --------------------------------------------------------------------------- FLOPs


def test_flops_hand_computed():
    cfg = lambda **j: small_cfg(model={"ff_multiplier": 4.0, "ff_round": 1}, jepa=j)  # noqa: E731
    # d 32, L 3, T 32, hidden 128, V 61: N = 3 * (4*32^2 + 3*32*128) + 61*32 = 51104
    assert estimate_flops_per_token(cfg(run_baseline=True), V) == 6 * 51104 + 12 * 3 * 32 * 32
    # + bridge 6*2*32^2 + (4/32) * (6*(1536+1536) + 2*1536 + 4*128*16 + 6*16^2)
    assert estimate_flops_per_token(cfg(), V) == 343488 + 12288 + 3904
    # + encoder teacher forward: block 0 on every token, 2*16384 + 4*32*32; block 1 (the tap)
    # keys/values on every token 2*2*32^2, the rest on 4 of 32 tokens: (1/8)*2*(16384-2048) + 4*4*32
    assert estimate_flops_per_token(cfg(teacher="encoder"), V) == 359680 + 32768 + 4096 + 4096 + 3584 + 512


@pytest.mark.parametrize("run_baseline,teacher", [(True, "projector"), (False, "projector"), (False, "encoder")])
def test_flops_match_the_matmuls_torch_counts(run_baseline, teacher):
    """FlopCounterMode counts the matmuls of a real forward+backward (attention apart)."""
    B, T = 4, 32
    cfg = validate(
        {
            "model": {"d_model": 64, "n_layers": 3, "n_heads": 2, "ff_multiplier": 4.0, "ff_round": 1},
            "data": {"block_size": T},
            "jepa": {"run_baseline": run_baseline, "teacher": teacher, "latent_dim": 16, "horizons": [2, 4],
                     "horizon_probs": [0.5, 0.5], "pairs_per_seq": 4},
            "train": {"batch_size": B},
        }
    )
    model = JepaLM(cfg, 50)
    idx = torch.randint(0, 50, (B, T))
    counter = FlopCounterMode(display=False)
    with counter:
        model(idx, idx).loss.backward()
    counts = counter.get_flop_counts()["Global"]
    matmul = sum(v for k, v in counts.items() if str(k).split(".")[-1] in ("mm", "addmm", "bmm"))
    # SDPA is not counted: online 12*L*d*T; encoder teacher block 0 4*d*T, tap block 4 queries x T keys
    attention = 12 * 3 * 64 * T + (4 * 64 * T + 4 * 4 * 64 if teacher == "encoder" else 0)
    assert matmul / (B * T) == estimate_flops_per_token(cfg, 50) - attention
