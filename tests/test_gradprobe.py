"""The LM/JEPA gradient probe of log steps (train/gradprobe.py): right values, and no effect on training."""

from __future__ import annotations

import math

import pytest
import torch

from jepa_core.train.step import build_trainee, plan_step, train_step
from model_helpers import small_cfg

V = 53
HEAD = ("transformer.lm_head.weight", "transformer.logit_scale", "transformer.out_bias")


def _trainee(accum: int = 1, **model):
    cfg = small_cfg(
        model={"weight_tying": False, **model},
        jepa={"jepa_weight": 0.5, "lm_weight": 0.8, "head_dropout": 0.1},
        train={"batch_size": 4, "compile": False, "max_steps": 10, "grad_accum_steps": accum},
    )
    cfg.optim.warmup_steps = 0
    cpu = torch.device("cpu")
    return build_trainee(cfg, V, cpu, plan_step(cfg, cpu, "fp32", compile=False), seed=0)


def _batches(n: int):
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, V, (4, 32), generator=g), torch.randint(0, V, (4, 32), generator=g)) for _ in range(n)]


def _expected(model, x, y):
    """Norms and cosine from two separate backward passes, the backbone chosen by name."""
    bb = [p for n, p in model.named_parameters() if n.startswith("transformer.") and n not in HEAD]
    out = model(x, y, 0.8, jepa_weight=0.5)
    g_lm = torch.autograd.grad(0.8 * out.lm_loss, bb, retain_graph=True, allow_unused=True)
    g_j = torch.autograd.grad(0.5 * out.jepa_loss, bb, allow_unused=True)
    flat = [torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(bb, gs)]).double() for gs in (g_lm, g_j)]
    n_lm, n_j = flat[0].norm().item(), flat[1].norm().item()
    return n_lm, n_j, (flat[0] @ flat[1]).item() / (n_lm * n_j)


@pytest.mark.parametrize("accum, exact_lm", [(1, False), (2, False), (2, True)])
def test_logged_norms_and_cosine_match_separate_backward_passes(one_thread, monkeypatch, accum, exact_lm):
    """Both ways of getting the LM part: by difference (fp32) and by its own backward (what bf16 uses)."""
    from jepa_core.train.gradprobe import GradProbe

    orig = GradProbe.before_backward.__func__
    monkeypatch.setattr(GradProbe, "before_backward", classmethod(lambda cls, *a, exact_lm: orig(cls, *a, exact_lm=want_exact)))
    want_exact = exact_lm
    tr = _trainee(accum)
    batches = _batches(accum)
    rng = torch.get_rng_state()  # pair sampling and dropout draw from it: the step must redraw the same
    want = _expected(tr.model, *batches[0])  # the probe reads the first micro-batch
    tr.model.zero_grad(set_to_none=True)
    torch.set_rng_state(rng)
    it = iter(batches)
    got = train_step(tr, lambda: next(it), 1, 10, probe_grads=True).grads
    assert got is not None
    assert [got["grad_norm_lm"], got["grad_norm_jepa"], got["grad_cos"]] == pytest.approx(list(want), rel=1e-4, abs=1e-6)
    assert got["grad_norm_lm"] > 0 and got["grad_norm_jepa"] > 0 and abs(got["grad_cos"]) < 1


def test_training_is_bit_identical_with_and_without_the_probe(one_thread):
    """The probe adds a backward but must not touch .grad, the RNG or anything the step updates.
    Dropout (model and heads) and gradient accumulation make any extra RNG draw or stray gradient show."""
    runs = []
    for probe in (False, True):
        torch.manual_seed(0)
        tr = _trainee(2, dropout=0.1)
        it = iter(_batches(8))
        for step in range(1, 5):
            res = train_step(tr, lambda: next(it), step, 10, probe_grads=probe)
            assert (res.grads is not None) == probe
        runs.append({k: v.detach().clone() for k, v in tr.model.state_dict().items()})
    plain, probed = runs
    assert plain.keys() == probed.keys()
    changed = [k for k in plain if not torch.equal(plain[k], probed[k])]
    assert not changed, f"the probe changed training: {changed[:5]}"


def test_baseline_and_zero_weight(one_thread):
    cfg = small_cfg(jepa={"run_baseline": True}, train={"batch_size": 4, "compile": False, "max_steps": 10})
    cpu = torch.device("cpu")
    tr = build_trainee(cfg, V, cpu, plan_step(cfg, cpu, "fp32", compile=False), seed=0)
    batch = _batches(1)[0]
    res = train_step(tr, lambda: batch, 1, 10, probe_grads=True)
    assert res.grads is None and res.jepa_weight is None
    # a JEPA stack at weight 0 (the study's lambda = 0 arm): no JEPA gradient, so no cosine
    tr = _trainee()
    tr.cfg.jepa.jepa_weight = 0.0
    got = train_step(tr, lambda: batch, 1, 10, probe_grads=True).grads
    assert got["grad_norm_jepa"] == 0.0 and got["grad_cos"] is None and math.isfinite(got["grad_norm_lm"]) and got["grad_norm_lm"] > 0
