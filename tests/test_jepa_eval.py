"""Eval helpers (whole-split BPB, retrieval and its copy control, effective rank, the fixed pair set) and the FLOPs estimate."""

from __future__ import annotations

import math

import numpy as np
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
    eval_pair_set,
    jepa_eval_metrics,
    retrieval_metrics,
    score_lm,
)
from jepa_core.model.eval import eval_latents

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


def test_eval_pair_set_is_fixed_spread_and_leaves_the_global_rng_alone():
    j = small_cfg(jepa={"pairs_per_seq": 4}).jepa
    state = torch.get_rng_state()
    a = eval_pair_set(10_000, 32, j, 50, seed=123)
    b = eval_pair_set(10_000, 32, j, 50, seed=123)
    c = eval_pair_set(10_000, 32, j, 50, seed=124)
    assert torch.equal(state, torch.get_rng_state())
    # ceil(50 / 4) = 13 full blocks of the 312 the split holds, spread over it, 52 >= 50 pairs
    assert len(a.starts) == 13 and a.pairs.b.numel() == 52
    assert (a.starts % 32 == 0).all() and a.starts[0] == 0 and a.starts[-1] > 10_000 // 2
    assert (a.starts + 32 <= 10_000).all() and len(set(a.starts.tolist())) == 13
    assert np.array_equal(a.starts, b.starts) and all(torch.equal(x, y) for x, y in zip(a.pairs, b.pairs))
    assert not all(torch.equal(x, y) for x, y in zip(a.pairs, c.pairs))
    assert (a.pairs.tpos < 32).all() and (a.pairs.b < 13).all()


def test_eval_pair_set_on_a_short_split_packs_more_pairs_per_block():
    j = small_cfg(jepa={"pairs_per_seq": 4}).jepa
    s = eval_pair_set(100, 32, j, 64, seed=0)  # 3 full blocks: 22 pairs each (66 >= 64)
    assert s.starts.tolist() == [0, 32, 64] and s.pairs.b.numel() == 66
    key = torch.stack((s.pairs.b, s.pairs.t, s.pairs.k_idx), 1)
    assert torch.unique(key, dim=0).shape[0] == 66  # still without replacement
    # a block holds at most min_k (T - k) / p_k = 56 pairs: a huge ask is capped, not refused
    s = eval_pair_set(100, 32, j, 10_000, seed=0)
    assert s.pairs.b.numel() == 3 * 56
    with pytest.raises(ValueError, match="no full block"):
        eval_pair_set(31, 32, j, 64, seed=0)


def _reference_latents(model, idx, pairs):
    """The training path's latents for all blocks at once, plus the copy query by hand."""
    with torch.no_grad():
        _, h_tap = model.transformer(idx)
        z_a, z_p, z_t = model.jepa_latents(idx, h_tap, pairs)
        h_teacher = model.teacher.encoder(idx) if model.teacher.encoder is not None else h_tap
        z_c = model.teacher.target_proj(h_teacher[pairs.b, pairs.t])
    return z_a, z_p, z_t, z_c


@pytest.mark.parametrize("teacher", ["projector", "encoder"])
def test_jepa_eval_metrics_on_a_model(teacher):
    torch.manual_seed(1)
    model = JepaLM.from_config(small_cfg(jepa={"teacher": teacher}, model={"dropout": 0.3}), V)
    with torch.no_grad():  # a teacher that differs from the online net
        for q in model.teacher_parameters():
            q.add_(0.05 * torch.randn_like(q))
    model.train()
    tokens = np.random.default_rng(0).integers(0, V, 20 * 32 + 5)
    pset = eval_pair_set(len(tokens), 32, model.jcfg, 64, seed=0)
    idx = torch.from_numpy(tokens[pset.starts[:, None] + np.arange(32)]).long()
    got = jepa_eval_metrics(model, idx, pset.pairs, batch_size=3)  # 16 blocks in chunks of 3
    assert model.training  # mode restored
    model.eval()
    z_a, z_p, z_t, z_c = _reference_latents(model, idx, pset.pairs)
    ref = _retrieval_reference(F.normalize(z_p, dim=-1), F.normalize(z_t, dim=-1), pset.pairs.k_idx, [2, 4])
    copy = _retrieval_reference(F.normalize(z_c, dim=-1), F.normalize(z_t, dim=-1), pset.pairs.k_idx, [2, 4])
    assert set(got) == set(ref) | {"eff_rank", "retrieval_pairs", "retrieval_copy_top1_h2", "retrieval_copy_top1_h4"}
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-5), key
    for k in (2, 4):
        assert got[f"retrieval_copy_top1_h{k}"] == pytest.approx(copy[f"retrieval_top1_h{k}"], abs=1e-6)
    assert got["retrieval_pairs"] == 64
    assert got["eff_rank"] == pytest.approx(effective_rank(z_a), rel=1e-6)
    assert 1.0 <= got["eff_rank"] <= 16.0
    # the same pairs give the same numbers (fixed eval), in one chunk or many
    assert jepa_eval_metrics(model, idx, pset.pairs) == pytest.approx(got, abs=1e-6)


def test_copy_control_query_is_the_teachers_latent_at_the_anchor():
    torch.manual_seed(2)
    model = JepaLM.from_config(small_cfg(), V).eval()  # fresh: the teacher equals the online projector
    idx = torch.randint(0, V, (3, 32))
    pairs = model.sample_pairs(3, 32, "cpu", torch.Generator().manual_seed(0))
    lat = eval_latents(model, idx, pairs)
    torch.testing.assert_close(lat.z_c, lat.z_a, atol=1e-6, rtol=1e-6)  # target_proj == online_proj at t
    with torch.no_grad():
        for q in model.teacher.target_proj.parameters():
            q.mul_(-1.0)
        lat2 = eval_latents(model, idx, pairs)
        _, h_tap = model.transformer(idx)
    torch.testing.assert_close(lat2.z_c, model.teacher.target_proj(h_tap[pairs.b, pairs.t]))
    assert not torch.allclose(lat2.z_c, lat2.z_a)


def test_jepa_eval_metrics_baseline_is_empty():
    model = JepaLM.from_config(small_cfg(jepa={"run_baseline": True}), V)
    pset = eval_pair_set(64, 32, small_cfg().jepa, 8, seed=0)
    assert jepa_eval_metrics(model, torch.randint(0, V, (2, 32)), pset.pairs) == {}


# --------------------------------------------------------------------------- whole-split LM scoring

# A hand-made tokenizer: 4 tokens of 1, 2, 2 and 3 UTF-8 bytes.
HAND_VOCAB = ["a", "bb", "\u00e9", "ccc"]
HAND_BYTES = np.array([len(t.encode("utf-8")) for t in HAND_VOCAB], dtype=np.int64)


def _hand_encode(text: str) -> np.ndarray:
    ids, i = [], 0
    while i < len(text):
        for tid, tok in enumerate(HAND_VOCAB):
            if text.startswith(tok, i):
                ids.append(tid)
                i += len(tok)
                break
        else:
            raise ValueError(text[i:])
    return np.array(ids, dtype=np.int64)


def _fixed_distribution_logits(x: torch.Tensor) -> torch.Tensor:
    # whatever the context: P = (1/2, 1/4, 1/8, 1/8) -> 1, 2, 3 and 3 bits
    logp = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125]))
    return logp.expand(*x.shape, 4).clone()


@pytest.mark.parametrize("block_size,batch_size,stride", [(4, 1, 0), (2, 2, 0), (3, 5, 0), (4, 2, 1), (3, 1, 3), (8, 1, 0)])
def test_bpb_hand_computed(block_size, batch_size, stride):
    text = "abb\u00e9ccca\u00e9bb"
    ids = _hand_encode(text)
    assert ids.tolist() == [0, 1, 2, 3, 0, 2, 1]
    got = score_lm(_fixed_distribution_logits, ids, block_size, batch_size, stride, 0, HAND_BYTES)
    # targets bb é ccc a é bb: 2 + 3 + 3 + 1 + 3 + 2 = 14 bits over 2 + 2 + 3 + 1 + 2 + 2 = 12 bytes
    assert got.n_tokens == 6
    assert got.n_bytes == 12 == len(text.encode("utf-8")) - 1  # the text after the first token
    assert got.nats == pytest.approx(14 * math.log(2), rel=1e-6)
    assert bits_per_byte(got.nats, got.n_bytes) == pytest.approx(14 / 12, rel=1e-6)
    # the inputs' bytes would be a + bb + é + ccc + a + é = 11: the count must be over the targets
    assert int(HAND_BYTES[ids[:-1]].sum()) == 11


class _PositionModel:
    """Fake model over the stream ids 0..n-1 (id = position): the target at input position j is
    x[j] + 1. CE is 1 nat where the window holds fewer than `need` tokens up to the input, else ~0;
    every call's inputs are recorded."""

    def __init__(self, vocab: int, need: int):
        self.V, self.need, self.calls = vocab, need, []
        # logit a on the target, 0 elsewhere: CE = log(e^a + V - 1) - a
        self.a_one = -math.log((math.e - 1) / (vocab - 1))  # CE = 1
        self.a_zero = 60.0  # CE ~ (V - 1) e^-60

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.clone())
        b, L = x.shape
        logits = torch.zeros(b, L, self.V, dtype=torch.float64)
        context = torch.arange(1, L + 1).expand(b, L)
        a = torch.where(context < self.need, self.a_one, self.a_zero)
        logits.scatter_(2, (x + 1).clamp(max=self.V - 1)[..., None], a[..., None].double())
        return logits


@pytest.mark.parametrize("n,block,stride,batch", [(50, 8, 0, 3), (50, 8, 3, 2), (50, 8, 8, 4), (50, 8, 1, 7), (9, 8, 5, 1), (6, 8, 2, 2), (61, 7, 4, 3)])
def test_every_token_scored_once_with_enough_context(n, block, stride, batch):
    tokens = np.arange(n, dtype=np.int64)
    token_bytes = 2 ** np.arange(n, dtype=np.int64)  # a scored set's byte sum spells the set in binary
    need = block - stride + 1 if stride else 1
    model = _PositionModel(n, need)
    got = score_lm(model, tokens, block, batch, stride, 0, token_bytes)
    # n - 1 distinct powers of two summing to 2^1 + ... + 2^(n-1): every target 1..n-1 exactly once
    assert got.n_tokens == n - 1
    assert got.n_bytes == 2**n - 2
    # instrumentation: windows are contiguous slices of the stream, at most block long, in batches <= batch
    for x in model.calls:
        assert x.shape[0] <= batch and x.shape[1] <= block
        assert torch.equal(x, x[:, :1] + torch.arange(x.shape[1]))
    covered = torch.cat([x.flatten() + 1 for x in model.calls]).unique()
    assert covered.tolist() == list(range(1, n))
    # context: only the first window's first `need - 1` targets may have less than block - stride + 1 tokens
    short = min(need - 1, n - 1)
    assert got.nats == pytest.approx(short, abs=1e-6)
    if stride == 0:
        # non-overlapping blocks: each target seen once, so forward passes cover exactly n - 1 inputs
        assert sum(x.numel() for x in model.calls) == n - 1


def test_eval_tokens_cap_scores_the_first_tokens():
    n = 50
    tokens = np.arange(n, dtype=np.int64)
    token_bytes = 2 ** np.arange(n, dtype=np.int64)
    for stride in (0, 3):
        got = score_lm(_PositionModel(n, 1), tokens, 8, 2, stride, 20, token_bytes)
        assert got.n_tokens == 20 and got.n_bytes == 2**21 - 2  # targets 1..20
        assert score_lm(_PositionModel(n, 1), tokens, 8, 2, stride, 10_000, token_bytes).n_tokens == n - 1


def test_score_lm_on_a_real_model_matches_a_direct_sum():
    """Non-overlapping blocks, the short last one included, against one cross-entropy per block."""
    torch.manual_seed(3)
    model = JepaLM.from_config(small_cfg(), V).eval()
    tokens = np.random.default_rng(1).integers(0, V, 32 * 5 + 12)  # 5 blocks of 32, then 11 targets
    lengths = np.random.default_rng(2).integers(1, 5, V)
    got = score_lm(model.lm_logits, tokens, 32, 2, 0, 0, lengths)
    nats, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(tokens) - 1, 32):
            x = torch.from_numpy(tokens[s : min(s + 32, len(tokens) - 1)]).long()[None]
            y = torch.from_numpy(tokens[s + 1 : s + 1 + x.shape[1]]).long()
            nats += F.cross_entropy(model.lm_logits(x)[0].double(), y, reduction="sum").item()
            count += y.numel()
    assert count == len(tokens) - 1 == got.n_tokens
    assert got.nats == pytest.approx(nats, rel=1e-5)
    assert got.n_bytes == int(lengths[tokens[1:]].sum())


def test_effective_rank_of_non_finite_latents_is_nan():
    z = torch.eye(4)
    z[1, 2] = float("inf")
    assert math.isnan(effective_rank(z))  # not a LinAlgError out of the eval


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
    model = JepaLM.from_config(cfg, 50)
    idx = torch.randint(0, 50, (B, T))
    counter = FlopCounterMode(display=False)
    with counter:
        model(idx, idx).loss.backward()
    counts = counter.get_flop_counts()["Global"]
    matmul = sum(v for k, v in counts.items() if str(k).split(".")[-1] in ("mm", "addmm", "bmm"))
    # SDPA is not counted: online 12*L*d*T; encoder teacher block 0 4*d*T, tap block 4 queries x T keys
    attention = 12 * 3 * 64 * T + (4 * 64 * T + 4 * 4 * 64 if teacher == "encoder" else 0)
    assert matmul / (B * T) == estimate_flops_per_token(cfg, 50) - attention
