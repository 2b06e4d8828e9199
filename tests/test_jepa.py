"""The JEPA objective: pairs, losses, teachers, EMA and schedules, grad barrier, baseline."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model_helpers import small_cfg
from jepa_core.model import (
    JepaLM,
    covariance_loss,
    ema_momentum_at,
    info_nce,
    jepa_weight_at,
    lm_weight_at,
    negatives_mask,
    sample_anchor_target_pairs,
    variance_loss,
)
from jepa_core.model.jepa import Pairs

V = 53




# --------------------------------------------------------------------------- pairs


def test_pairs_shapes_and_bounds():
    B, T, P = 6, 40, 5
    g = torch.Generator().manual_seed(0)
    pairs = sample_anchor_target_pairs(B, T, [2, 8, 32], [0.5, 0.3, 0.2], P, "cpu", generator=g)
    N = B * P
    for x in pairs:
        assert x.shape == (N,) and x.dtype == torch.long
    assert torch.equal(pairs.b, torch.arange(B).repeat_interleave(P))
    assert torch.equal(pairs.k, torch.tensor([2, 8, 32])[pairs.k_idx])
    assert torch.equal(pairs.tpos, pairs.t + pairs.k)
    assert (pairs.t >= 0).all() and (pairs.tpos < T).all()


def _binomial_tolerance(n: int, p: float) -> float:
    # per sequence a horizon's count is floor or ceil of P*p, whose variance is at most the
    # binomial one; 5 binomial sd (+1 for p in {0, 1}) is then a bound no seed trips by chance
    return 5 * math.sqrt(n * p * (1 - p)) + 1


def _chi2_limit(df: int) -> float:
    # chi-square with df degrees of freedom has mean df and sd sqrt(2 df); pairs drawn
    # without replacement are negatively correlated, which only lowers the statistic
    return df + 6 * math.sqrt(2 * df)


@pytest.mark.parametrize(
    "T,horizons,probs,P",
    [(64, [2, 8, 32], [0.5, 0.3, 0.2], 100), (128, [2, 8, 32], [0.5, 0.3, 0.2], 4), (12, [1, 5], [0.3, 0.7], 7)],
)
def test_pair_marginals_stay_as_specified(T, horizons, probs, P):
    """k ~ Categorical(probs) and t | k ~ U{0..T-1-k}, whatever the no-replacement constraint does to the joint."""
    B = 40_000 // P + 1
    g = torch.Generator().manual_seed(1234)
    pairs = sample_anchor_target_pairs(B, T, horizons, probs, P, "cpu", generator=g)
    n = pairs.k.numel()
    counts = torch.bincount(pairs.k_idx, minlength=len(horizons)).tolist()
    for c, p in zip(counts, probs):
        assert abs(c - n * p) <= _binomial_tolerance(n, p), (c, n * p)
    for hi, k in enumerate(horizons):
        t = pairs.t[pairs.k_idx == hi]
        cells = torch.bincount(t, minlength=T - k).double()
        assert cells.numel() == T - k  # nothing beyond T-1-k
        assert (cells > 0).all()  # the ends included
        expect = t.numel() / (T - k)
        chi2 = float(((cells - expect) ** 2 / expect).sum())
        assert chi2 < _chi2_limit(T - k - 1), (k, chi2)


def _assert_no_duplicates(pairs, B, P):
    key = torch.stack((pairs.b, pairs.t, pairs.k_idx), dim=1)
    assert torch.unique(key, dim=0).shape[0] == B * P


@pytest.mark.parametrize(
    "T,horizons,probs,P",
    [
        (16, [2, 8], [0.5, 0.5], 12),  # 6 of 14 and 6 of 8 anchors per sequence
        (8, [2, 4], [0.5, 0.5], 8),  # horizon 4: 4 pairs for its 4 anchors, every one taken
        (10, [1, 3, 9], [0.2, 0.7, 0.1], 10),  # horizon 3 takes 7 of its 7 anchors, horizon 9 has 1
        (128, [2, 8, 32], [0.5, 0.3, 0.2], 4),  # tiny
    ],
)
def test_pairs_never_repeat_within_a_sequence(T, horizons, probs, P):
    g = torch.Generator().manual_seed(5)
    for _ in range(50):
        B = 64
        pairs = sample_anchor_target_pairs(B, T, horizons, probs, P, "cpu", generator=g)
        _assert_no_duplicates(pairs, B, P)
        assert torch.equal(pairs.b, torch.arange(B).repeat_interleave(P))
        assert (pairs.t >= 0).all() and (pairs.tpos < T).all()
    # when P * p_k equals T - k, every anchor of k is taken in every sequence
    pairs = sample_anchor_target_pairs(3, 8, [2, 4], [0.5, 0.5], 8, "cpu", generator=g)
    for b in range(3):
        sel = (pairs.b == b) & (pairs.k == 4)
        assert sorted(pairs.t[sel].tolist()) == [0, 1, 2, 3]


def test_pair_sampling_refuses_more_pairs_than_anchors():
    with pytest.raises(ValueError, match="only 6 anchors"):
        sample_anchor_target_pairs(2, 8, [2, 4], [0.9, 0.1], 8, "cpu")  # 7.2 pairs of horizon 2, 6 anchors


def test_pair_sampling_rng_discipline():
    g1 = torch.Generator().manual_seed(7)
    g2 = torch.Generator().manual_seed(7)
    state = torch.get_rng_state()
    a = sample_anchor_target_pairs(4, 16, [2, 4], [0.5, 0.5], 8, "cpu", generator=g1)
    b = sample_anchor_target_pairs(4, 16, [2, 4], [0.5, 0.5], 8, "cpu", generator=g2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.equal(state, torch.get_rng_state())  # a generator leaves the global RNG alone
    torch.manual_seed(3)
    c = sample_anchor_target_pairs(4, 16, [2, 4], [0.5, 0.5], 8, "cpu")
    torch.manual_seed(3)
    d = sample_anchor_target_pairs(4, 16, [2, 4], [0.5, 0.5], 8, "cpu")
    assert all(torch.equal(x, y) for x, y in zip(c, d))
    with pytest.raises(ValueError, match="horizon 16"):
        sample_anchor_target_pairs(4, 16, [2, 16], [0.5, 0.5], 8, "cpu")


# --------------------------------------------------------------------------- losses


def _negatives_mask_reference(b, tpos, k, k_idx, negatives):
    """The README rule as a double loop: True where j is not a candidate for row i."""
    n = len(b)
    drop = [[False] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if k_idx[j] != k_idx[i]:
                drop[i][j] = True
            elif j == i or negatives == "all":
                continue
            elif negatives == "other_sequences":
                drop[i][j] = b[j] == b[i]
            else:  # distant: the same sequence and a target closer than row i's horizon
                drop[i][j] = b[j] == b[i] and abs(tpos[j] - tpos[i]) < k[i]
    return drop


def _info_nce_reference(p, y, k_idx, tau, drop=None):
    """The design formula literally, in float64: sum_h (n_h/N) * mean over the horizon's rows of CE,
    each row's softmax over the columns `drop` keeps (default: its horizon's)."""
    p, y = p.double().tolist(), y.double().tolist()
    k_idx = k_idx.tolist()
    N = len(p)
    total = 0.0
    for h in sorted(set(k_idx)):
        rows = [i for i in range(N) if k_idx[i] == h]
        ces = []
        for i in rows:
            cols = [j for j in range(N) if not (drop[i][j] if drop is not None else k_idx[j] != k_idx[i])]
            s = {j: sum(a * b for a, b in zip(p[i], y[j])) / tau for j in cols}
            ces.append(-s[i] + math.log(sum(math.exp(v) for v in s.values())))
        total += len(rows) / N * (sum(ces) / len(ces))
    return total


def test_info_nce_hand_computed_closed_form():
    # two pairs of one horizon, orthonormal: CE = log(1 + e^(-1/tau)) for each row
    p = torch.eye(2, dtype=torch.float64)
    got = info_nce(p, p.clone(), torch.tensor([0, 0]), 0.5)
    assert got.item() == pytest.approx(math.log(1 + math.exp(-2.0)), abs=1e-6)
    # different horizons never compete: each row only has its positive -> loss 0
    got = info_nce(p, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64), torch.tensor([0, 1]), 0.5)
    assert got.item() == pytest.approx(0.0, abs=1e-7)


def test_a_horizon_with_one_pair_adds_zero_not_nan():
    # rows 0, 1 in horizon 0 (orthonormal), row 2 alone in horizon 1: (2/3) log(1 + e^-2) + (1/3) * 0
    p = torch.eye(3, dtype=torch.float64)
    got = info_nce(p, p.clone(), torch.tensor([0, 0, 1]), 0.5)
    assert got.item() == pytest.approx(2 / 3 * math.log(1 + math.exp(-2.0)), abs=1e-6)
    # "distant" masking every negative of a row leaves that row at 0 as well
    b, tpos, k = torch.tensor([0, 0, 0]), torch.tensor([4, 5, 9]), torch.tensor([2, 2, 2])
    got = info_nce(p, p.clone(), torch.tensor([0, 0, 0]), 0.5, negatives="distant", seq_ids=b, tpos=tpos, k=k)
    # rows 0 and 1 are each other's near-duplicates (1 < 2), row 2 is far from both
    ce_row2 = math.log(1 + 2 * math.exp(-2.0))
    ce_rows01 = math.log(1 + math.exp(-2.0))  # each keeps only row 2 as a negative
    assert got.item() == pytest.approx((2 * ce_rows01 + ce_row2) / 3, abs=1e-6)
    # one row in all: no negative, 0
    assert info_nce(p[:1], p[:1], torch.tensor([0]), 0.5).item() == 0.0


def _close_pairs(seed: int, B: int = 3, T: int = 40, P: int = 12):
    g = torch.Generator().manual_seed(seed)
    return sample_anchor_target_pairs(B, T, [2, 6, 12], [0.4, 0.4, 0.2], P, "cpu", generator=g)


@pytest.mark.parametrize("negatives", ["distant", "all", "other_sequences"])
def test_negatives_mask_matches_the_rule_brute_force(negatives):
    for seed in range(5):
        pairs = _close_pairs(seed)
        got = negatives_mask(pairs.k_idx, negatives, pairs.b, pairs.tpos, pairs.k)
        ref = _negatives_mask_reference(pairs.b.tolist(), pairs.tpos.tolist(), pairs.k.tolist(), pairs.k_idx.tolist(), negatives)
        assert got.tolist() == ref
    if negatives == "distant":
        # the case must be exercised: some same-sequence rows are kept, some dropped
        same = pairs.b[:, None] == pairs.b[None, :]
        same_h = (pairs.k_idx[:, None] == pairs.k_idx[None, :]) & same & ~torch.eye(len(pairs.b), dtype=torch.bool)
        assert (got & same_h).any() and (~got & same_h).any()


def test_distant_rule_reads_row_is_horizon():
    # the rule compares |u_j - u_i| with k_i, the horizon of the row: not symmetric in i, j.
    # (In the loss both rows of a group share one horizon; here the k given differ to show whose is read.)
    k_idx = torch.tensor([0, 0])
    b = torch.tensor([0, 0])
    tpos = torch.tensor([10, 13])
    m = negatives_mask(k_idx, "distant", b, tpos, torch.tensor([2, 8]))
    assert m.tolist() == [[False, False], [True, False]]  # |13 - 10| = 3: >= 2 for row 0, < 8 for row 1


@pytest.mark.parametrize("negatives", ["distant", "all", "other_sequences"])
def test_info_nce_matches_float64_reference(negatives):
    torch.manual_seed(0)
    pairs = _close_pairs(3)
    N, D = pairs.b.numel(), 5
    p = F.normalize(torch.randn(N, D, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(N, D, dtype=torch.float64), dim=-1)
    drop = _negatives_mask_reference(pairs.b.tolist(), pairs.tpos.tolist(), pairs.k.tolist(), pairs.k_idx.tolist(), negatives)
    ref = _info_nce_reference(p, y, pairs.k_idx, 0.2, drop)
    got = info_nce(p, y, pairs.k_idx, 0.2, negatives=negatives, seq_ids=pairs.b, tpos=pairs.tpos, k=pairs.k)
    # info_nce computes in float32
    assert got.item() == pytest.approx(ref, rel=1e-5)
    if negatives != "all":
        assert abs(ref - _info_nce_reference(p, y, pairs.k_idx, 0.2)) > 1e-3  # masking changes the value
        with pytest.raises(ValueError, match="seq_ids"):
            info_nce(p, y, pairs.k_idx, 0.2, negatives=negatives)
    with pytest.raises(ValueError, match="negatives must be"):
        info_nce(p, y, pairs.k_idx, 0.2, negatives="near")


def test_variance_loss_hand_computed():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    # population var per dim: 1 and 0; std sqrt(1 + 1e-4) > 1 -> 0, sqrt(1e-4) = 0.01 -> 0.99
    assert variance_loss(z).item() == pytest.approx(0.99 / 2, abs=1e-7)
    torch.manual_seed(1)
    z = torch.randn(9, 4, dtype=torch.float64) * torch.tensor([0.1, 0.5, 1.0, 3.0], dtype=torch.float64)
    ref = 0.0
    for j in range(4):
        col = z[:, j].tolist()
        mu = sum(col) / len(col)
        var = sum((c - mu) ** 2 for c in col) / len(col)
        ref += max(0.0, 1 - math.sqrt(var + 1e-4)) / 4
    assert variance_loss(z).item() == pytest.approx(ref, rel=1e-6)


def test_covariance_loss_hand_computed():
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    # C = [[2, 2], [2, 2]] (N-1 = 1), off-diagonal squares 8, / D = 4
    assert covariance_loss(z).item() == pytest.approx(4.0, abs=1e-6)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    # C = [[1, .5], [.5, 1]], off-diagonal squares 0.5, / 2 = 0.25
    assert covariance_loss(z).item() == pytest.approx(0.25, abs=1e-6)
    torch.manual_seed(2)
    z = torch.randn(7, 3, dtype=torch.float64)
    zl = z.tolist()
    mu = [sum(r[j] for r in zl) / 7 for j in range(3)]
    ref = 0.0
    for a in range(3):
        for b in range(3):
            if a != b:
                c = sum((r[a] - mu[a]) * (r[b] - mu[b]) for r in zl) / 6
                ref += c * c / 3
    assert covariance_loss(z).item() == pytest.approx(ref, rel=1e-5)


# --------------------------------------------------------------------------- schedules


def test_ema_schedules():
    j = small_cfg(jepa={"ema_momentum": 0.99}).jepa
    assert ema_momentum_at(j, 0, 100) == 0.99 and ema_momentum_at(j, 77, 100) == 0.99
    j = small_cfg(jepa={"ema_schedule": "cosine", "ema_momentum": 0.99, "ema_momentum_final": 0.999}).jepa
    assert ema_momentum_at(j, 0, 400) == pytest.approx(0.99, abs=1e-12)
    assert ema_momentum_at(j, 400, 400) == pytest.approx(0.999, abs=1e-12)  # S = 0 -> max_steps
    assert ema_momentum_at(j, 200, 400) == pytest.approx(0.9945, abs=1e-12)
    assert ema_momentum_at(j, 100, 400) == pytest.approx(0.99 + 0.009 * 0.5 * (1 - math.cos(math.pi / 4)), abs=1e-12)
    assert ema_momentum_at(j, 900, 400) == pytest.approx(0.999, abs=1e-12)
    j = small_cfg(
        jepa={"ema_schedule": "cosine", "ema_momentum": 0.9, "ema_momentum_final": 1.0, "ema_schedule_steps": 50}
    ).jepa
    assert ema_momentum_at(j, 0, 400) == pytest.approx(0.9)
    assert ema_momentum_at(j, 50, 400) == pytest.approx(1.0)
    assert ema_momentum_at(j, 25, 400) == pytest.approx(0.95)


def test_jepa_weight_schedule():
    assert [jepa_weight_at(small_cfg(jepa={"jepa_weight": 0.5}).jepa, s, 100) for s in (1, 70, 100)] == [0.5, 0.5, 0.5]
    j = small_cfg(jepa={"jepa_weight": 0.5, "jepa_weight_schedule": "anneal", "jepa_weight_anneal_frac": 0.3}).jepa
    # 100 steps, the last 30 annealed: full weight through step 70, half at 85, 1/30 of it at 99, 0 at 100
    got = [jepa_weight_at(j, s, 100) for s in (1, 69, 70, 85, 99, 100)]
    assert got == pytest.approx([0.5, 0.5, 0.5, 0.25, 0.5 / 30, 0.0])
    assert got[-1] == 0.0  # exactly: the run ends on the LM loss alone
    j = small_cfg(jepa={"jepa_weight": 2.0, "jepa_weight_schedule": "anneal", "jepa_weight_anneal_frac": 1.0}).jepa
    assert [jepa_weight_at(j, s, 8) for s in (0, 1, 4, 6, 8)] == pytest.approx([2.0, 1.75, 1.0, 0.5, 0.0])


def test_lm_weight_schedule():
    assert lm_weight_at(small_cfg(jepa={"run_baseline": True, "lm_weight": 0.3}).jepa, 0, 10) == 1.0
    assert lm_weight_at(small_cfg(jepa={"lm_weight": 0.3}).jepa, 0, 10) == 0.3
    j = small_cfg(
        jepa={"lm_weight": 0.5, "lm_weight_use_scheduler": True, "lm_warmup_steps": 10, "lm_ramp_steps": 30}
    ).jepa
    got = [lm_weight_at(j, s, 1000) for s in (0, 9, 10, 20, 25, 30, 500)]
    assert got == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.375, 0.5, 0.5])
    j = small_cfg(jepa={"lm_weight": 1.0, "lm_weight_use_scheduler": True, "lm_warmup_steps": 20}).jepa
    assert [lm_weight_at(j, s, 120) for s in (19, 20, 70, 120)] == pytest.approx([0.0, 0.0, 0.5, 1.0])


# --------------------------------------------------------------------------- EMA teacher


@pytest.mark.parametrize("teacher", ["projector", "encoder"])
def test_ema_update_closed_form(teacher):
    torch.manual_seed(3)
    model = JepaLM.from_config(small_cfg(jepa={"teacher": teacher}), V)
    tparams, oparams = model.teacher_parameters(), model._online_for_teacher()
    assert len(tparams) == len(oparams) > 0
    assert all(not p.requires_grad for p in tparams)
    # the teacher starts as a copy of the online weights
    assert all(torch.equal(t, o) for t, o in zip(tparams, oparams))
    with torch.no_grad():
        for t in tparams:
            t.copy_(torch.randn_like(t))
    t0 = [t.detach().double().clone() for t in tparams]
    m, n = 0.9, 6
    history = []
    for _ in range(n):
        with torch.no_grad():
            for o in oparams:
                o.copy_(torch.randn_like(o))
        history.append([o.detach().double().clone() for o in oparams])
        model.update_teacher(m)
    for i, t in enumerate(tparams):
        expect = m**n * t0[i] + sum((1 - m) * m ** (n - 1 - s) * history[s][i] for s in range(n))
        torch.testing.assert_close(t.double(), expect, atol=2e-6, rtol=1e-6)
    # constant online weights: t_n = m^n t0 + (1 - m^n) o
    base = [t.detach().double().clone() for t in tparams]
    for _ in range(n):
        model.update_teacher(0.5)
    for i, t in enumerate(tparams):
        expect = 0.5**n * base[i] + (1 - 0.5**n) * history[-1][i]
        torch.testing.assert_close(t.double(), expect, atol=2e-6, rtol=1e-6)


def test_encoder_teacher_stops_at_the_tap():
    model = JepaLM.from_config(small_cfg(model={"n_layers": 4, "tap_layer": 1}, jepa={"teacher": "encoder"}), V)
    enc = model.teacher.encoder
    assert len(enc.blocks) == 2
    names = {n for n, _ in model.named_parameters() if n.startswith("teacher.encoder.")}
    assert not any(n.startswith(("teacher.encoder.blocks.2", "teacher.encoder.norm_f", "teacher.encoder.lm_bridge")) for n in names)


@pytest.mark.parametrize("teacher", ["projector", "encoder"])
def test_targets_come_from_the_teacher(teacher):
    torch.manual_seed(4)
    model = JepaLM.from_config(small_cfg(jepa={"teacher": teacher}), V).eval()
    idx = torch.randint(0, V, (3, 32))
    pairs = model.sample_pairs(3, 32, "cpu", torch.Generator().manual_seed(0))
    _, h_tap = model.transformer(idx)
    z_a, z_p, z_t = model.jepa_latents(idx, h_tap, pairs)
    assert z_a.requires_grad and z_p.requires_grad and not z_t.requires_grad
    # a fresh teacher equals the online network: target = online_proj(h_tap[b, t + k])
    torch.testing.assert_close(z_t, model.jepa.online_proj(h_tap[pairs.b, pairs.tpos]), atol=1e-5, rtol=1e-5)
    # move the online weights: the targets follow the teacher's (frozen) weights, not the online ones
    with torch.no_grad():
        for p in list(model.transformer.blocks[0].parameters()) + list(model.jepa.online_proj.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    _, h_tap2 = model.transformer(idx)
    _, _, z_t2 = model.jepa_latents(idx, h_tap2, pairs)
    if teacher == "projector":
        expect = model.teacher.target_proj(h_tap2[pairs.b, pairs.tpos])
    else:
        expect = z_t  # teacher encoder and projector both unchanged
    torch.testing.assert_close(z_t2, expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tap_layer", [0, 2])
def test_encoder_teacher_at_target_rows_equals_full_pass(tap_layer):
    """The training path computes the tap block only at the targets; same values."""
    torch.manual_seed(11)
    model = JepaLM.from_config(small_cfg(model={"tap_layer": tap_layer}, jepa={"teacher": "encoder"}), V)
    with torch.no_grad():  # a teacher that differs from the online net
        for p in model.teacher_parameters():
            p.add_(0.05 * torch.randn_like(p))
    idx = torch.randint(0, V, (3, 32))
    pairs = model.sample_pairs(3, 32, "cpu", torch.Generator().manual_seed(2))
    _, h_tap = model.transformer(idx)
    full = model.jepa_latents(idx, h_tap, pairs)
    rows = model.jepa_latents(idx, h_tap, pairs, per_seq=4)
    torch.testing.assert_close(rows[2], full[2], atol=1e-5, rtol=1e-5)
    enc = model.teacher.encoder
    pos = pairs.tpos.view(3, 4)
    expect = enc(idx).gather(1, pos[:, :, None].expand(3, 4, 32))
    torch.testing.assert_close(enc(idx, pos), expect, atol=1e-5, rtol=1e-5)
    # the forward pass (which samples its own pairs) takes that path and agrees too
    out_rows = model(idx, idx, generator=torch.Generator().manual_seed(2))
    out_full = model(idx, idx, pairs=pairs)
    assert out_rows.jepa_loss.item() == pytest.approx(out_full.jepa_loss.item(), rel=1e-5)


def test_teacher_never_uses_dropout():
    model = JepaLM.from_config(small_cfg(model={"dropout": 0.5}, jepa={"teacher": "encoder", "head_dropout": 0.5}), V)
    model.train()
    assert model.transformer.training and not model.teacher.training
    assert not any(m.training for m in model.teacher.modules())


# --------------------------------------------------------------------------- loss assembly


@pytest.mark.parametrize("teacher,negatives", [("projector", "distant"), ("encoder", "distant"), ("projector", "other_sequences")])
def test_loss_is_the_weighted_sum(teacher, negatives):
    torch.manual_seed(5)
    j = {"teacher": teacher, "gamma_var": 0.7, "gamma_cov": 0.3, "gamma_var_pred": 0.2, "gamma_cov_pred": 0.1,
         "jepa_weight": 0.6, "tau": 0.2, "negatives": negatives, "pairs_per_seq": 12}
    model = JepaLM.from_config(small_cfg(jepa=j), V)
    idx, targets = torch.randint(0, V, (2, 4, 32))
    pairs = model.sample_pairs(4, 32, "cpu", torch.Generator().manual_seed(1))
    out = model(idx, targets, lm_weight=0.25, pairs=pairs)
    h, h_tap = model.transformer(idx)
    lm = F.cross_entropy(model.transformer.logits(h).reshape(-1, V).double(), targets.reshape(-1))
    z_a, z_p, z_t = model.jepa_latents(idx, h_tap, pairs)
    drop = _negatives_mask_reference(pairs.b.tolist(), pairs.tpos.tolist(), pairs.k.tolist(), pairs.k_idx.tolist(), negatives)
    if negatives == "distant":  # 12 pairs in 32 tokens: the rule bites
        assert sum(map(sum, drop)) > sum(map(sum, _negatives_mask_reference(
            pairs.b.tolist(), pairs.tpos.tolist(), pairs.k.tolist(), pairs.k_idx.tolist(), "all")))
    nce = _info_nce_reference(F.normalize(z_p.double(), dim=-1), F.normalize(z_t.double(), dim=-1), pairs.k_idx, 0.2, drop)
    jl = nce + 0.7 * variance_loss(z_a.double()) + 0.3 * covariance_loss(z_a.double())
    jl = jl + 0.2 * variance_loss(z_p.double()) + 0.1 * covariance_loss(z_p.double())
    assert out.lm_loss.item() == pytest.approx(lm.item(), rel=1e-5)
    assert out.jepa_loss.item() == pytest.approx(jl.item(), rel=1e-4)
    assert out.loss.item() == pytest.approx(0.25 * lm.item() + 0.6 * jl.item(), rel=1e-4)
    assert set(out.stats) == {"info_nce", "var_loss", "cov_loss", "std_anchor", "std_pred"}
    for v in out.stats.values():
        assert v.dim() == 0 and not v.requires_grad
    assert out.stats["info_nce"].item() == pytest.approx(nce, rel=1e-5)
    std_a = z_a.double().var(0, unbiased=False).sqrt().mean().item()
    assert out.stats["std_anchor"].item() == pytest.approx(std_a, rel=1e-5)


def test_single_pair_groups_give_a_finite_hand_computed_loss():
    """A horizon group of one pair adds 0 to InfoNCE; a micro-batch of one pair skips var/cov (no N-1 = 0)."""
    torch.manual_seed(8)
    j = {"gamma_var": 0.5, "gamma_cov": 2.0, "gamma_var_pred": 0.3, "gamma_cov_pred": 0.4, "jepa_weight": 0.7, "tau": 0.3}
    model = JepaLM.from_config(small_cfg(jepa=j), V)
    idx = torch.randint(0, V, (2, 32))
    # three pairs: two of horizon 2 (different sequences), one of horizon 4
    pairs = Pairs(torch.tensor([0, 1, 1]), torch.tensor([3, 10, 5]), torch.tensor([0, 0, 1]), torch.tensor([2, 2, 4]))
    out = model(idx, idx, lm_weight=1.0, pairs=pairs)
    _, h_tap = model.transformer(idx)
    z_a, z_p, z_t = (z.double() for z in model.jepa_latents(idx, h_tap, pairs))
    p, y = F.normalize(z_p, dim=-1), F.normalize(z_t, dim=-1)
    s = (p @ y.T / 0.3).tolist()
    # rows 0, 1 compete with each other; row 2 alone has CE = 0
    ce0 = -s[0][0] + math.log(math.exp(s[0][0]) + math.exp(s[0][1]))
    ce1 = -s[1][1] + math.log(math.exp(s[1][0]) + math.exp(s[1][1]))
    nce = (ce0 + ce1 + 0.0) / 3
    jl = nce + 0.5 * variance_loss(z_a) + 2.0 * covariance_loss(z_a) + 0.3 * variance_loss(z_p) + 0.4 * covariance_loss(z_p)
    assert math.isfinite(out.loss.item())
    assert out.stats["info_nce"].item() == pytest.approx(nce, rel=1e-5)
    assert out.jepa_loss.item() == pytest.approx(jl.item(), rel=1e-4)
    # one pair in all: InfoNCE 0, var/cov skipped: the JEPA loss is exactly 0, not NaN
    one = Pairs(*(x[:1] for x in pairs))
    out1 = model(idx, idx, lm_weight=1.0, pairs=one)
    assert out1.jepa_loss.item() == 0.0
    assert out1.loss.item() == pytest.approx(out1.lm_loss.item(), rel=1e-6)
    out1.loss.backward()
    assert all(torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None)


def test_var_cov_skip_below_two_rows():
    z = torch.randn(1, 4, dtype=torch.float64)
    assert variance_loss(z).item() == 0.0 and covariance_loss(z).item() == 0.0
    assert variance_loss(z[:0]).item() == 0.0 and covariance_loss(z[:0]).item() == 0.0


def test_forward_pairs_follow_the_generator():
    model = JepaLM.from_config(small_cfg(), V)
    idx = torch.randint(0, V, (2, 32))
    a = model(idx, idx, generator=torch.Generator().manual_seed(9)).loss
    b = model(idx, idx, generator=torch.Generator().manual_seed(9)).loss
    c = model(idx, idx, generator=torch.Generator().manual_seed(10)).loss
    assert a.item() == b.item() and a.item() != c.item()


# --------------------------------------------------------------------------- grad barrier


def _lm_grads(barrier: bool):
    torch.manual_seed(6)
    cfg = small_cfg(model={"n_layers": 4, "tap_layer": 1, "grad_barrier": barrier, "weight_tying": False})
    model = JepaLM.from_config(cfg, V)
    idx, targets = torch.randint(0, V, (2, 2, 32))
    out = model(idx, targets)
    out.lm_loss.backward()
    grads = {n: (p.grad.abs().sum().item() if p.grad is not None else 0.0) for n, p in model.named_parameters()}
    return model, grads


def test_grad_barrier_stops_lm_gradients_below_the_tap():
    model, g = _lm_grads(True)
    below = [n for n in g if n.startswith(("transformer.blocks.0.", "transformer.blocks.1.", "transformer.tok_emb"))]
    above = [n for n in g if n.startswith(("transformer.blocks.2.", "transformer.blocks.3.", "transformer.lm_bridge"))]
    assert len(below) == 13 and len(above) == 17
    assert all(g[n] == 0.0 for n in below)
    assert all(g[n] > 0 for n in above)
    # the JEPA loss still trains the layers under the tap (and only them)
    model.zero_grad()
    idx = torch.randint(0, V, (2, 32))
    model(idx, idx).jepa_loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in below)
    assert all(grads[n] is None or grads[n].abs().sum() == 0 for n in above)


def test_without_grad_barrier_lm_reaches_every_block():
    _, g = _lm_grads(False)
    for n in ("transformer.blocks.0.attn.qkv.weight", "transformer.blocks.1.mlp.w3.weight", "transformer.tok_emb.weight"):
        assert g[n] > 0
    assert all(g[n] == 0.0 for n in g if n.startswith(("teacher.", "jepa.")))


# --------------------------------------------------------------------------- baseline


def test_baseline_has_no_jepa_parts_and_same_stack():
    base = JepaLM.from_config(small_cfg(jepa={"run_baseline": True, "teacher": "encoder"}), V)
    jepa = JepaLM.from_config(small_cfg(jepa={"teacher": "encoder"}), V)
    assert base.is_baseline and not jepa.is_baseline
    bkeys, jkeys = base.state_dict(), jepa.state_dict()
    extra = {k for k in jkeys if k.startswith(("jepa.", "teacher.", "transformer.lm_bridge", "transformer.tap_norm"))}
    extra |= {"transformer.bridge_gate"}
    assert set(bkeys) == set(jkeys) - extra
    assert all(bkeys[k].shape == jkeys[k].shape for k in bkeys)
    assert base.teacher_parameters() == [] and base.jepa is None
    counts = base.param_counts()
    assert counts["jepa_heads"] == 0 and counts["teacher"] == 0
    assert counts["total_trainable"] == sum(p.numel() for p in base.parameters())
    base.update_teacher(0.5)  # a no-op, not an error


def test_baseline_loss_is_the_lm_loss():
    torch.manual_seed(7)
    model = JepaLM.from_config(small_cfg(jepa={"run_baseline": True}), V)
    idx, targets = torch.randint(0, V, (2, 3, 32))
    out = model(idx, targets, lm_weight=0.3)  # lm_weight is 1 for the baseline
    ref = F.cross_entropy(model.lm_logits(idx).reshape(-1, V).double(), targets.reshape(-1))
    assert torch.equal(out.loss, out.lm_loss)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert out.jepa_loss is None and out.stats == {}


def test_param_counts_partition_the_parameters():
    model = JepaLM.from_config(small_cfg(jepa={"teacher": "encoder"}, model={"weight_tying": False}), V)
    c = model.param_counts()
    total = sum(p.numel() for p in model.parameters())
    assert c["backbone"] + c["lm_head"] + c["jepa_heads"] + c["teacher"] == total
    assert c["total_trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert c["lm_head"] == V * 32 + 1 + V
    # tied: the embedding is the head's weight, so it counts with the head (as `jepa inspect` counts it)
    t = JepaLM.from_config(small_cfg(model={"weight_tying": True}), V).param_counts()
    assert t["lm_head"] == V * 32 + 1 + V and t["backbone"] == c["backbone"] - V * 32
    assert c["teacher"] == sum(p.numel() for p in model.teacher_parameters())
