"""`train_step` against two loop bugs that earlier tests let through (each was tried):
(a) updating the EMA teacher before the optimizer step, (b) dropping the LM-weight schedule
between the loop and the model; and (c) the same for the JEPA-weight schedule. Each test fails on the bug named in its docstring."""

from __future__ import annotations

import pytest
import torch

from jepa_core.model import jepa_weight_at, lm_weight_at
from jepa_core.train.step import build_trainee, plan_step, train_step
from model_helpers import small_cfg

V = 53


def _trainee(**jepa):
    cfg = small_cfg(
        model={"weight_tying": False},
        jepa={"ema_momentum": 0.9, **jepa},
        train={"batch_size": 4, "compile": False, "max_steps": 10},
    )
    cfg.optim.warmup_steps = 0
    cfg.optim.lr = cfg.optim.lr_head = 1e-2
    device = torch.device("cpu")
    return build_trainee(cfg, V, device, plan_step(cfg, device, "fp32", compile=False), seed=0)


def _batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (4, 32), generator=g)
    return x, torch.randint(0, V, (4, 32), generator=g)


def test_teacher_moves_toward_the_online_weights_after_the_optimizer_step(one_thread):
    """Bug (a): updating the EMA teacher before `optimizer.step()` (toward the old online weights)."""
    tr = _trainee()
    model = tr.model
    online0 = [o.detach().clone() for o in model._online_for_teacher()]
    teacher0 = [t.detach().clone() for t in model.teacher_parameters()]
    batch = _batch()
    res = train_step(tr, lambda: batch, 1, 10)
    m = res.ema_momentum
    assert m == pytest.approx(0.9)
    online1 = [o.detach() for o in model._online_for_teacher()]
    assert any(not torch.equal(a, b) for a, b in zip(online0, online1))  # the step moved the online net
    for t, t0, o1 in zip(model.teacher_parameters(), teacher0, online1):
        torch.testing.assert_close(t, m * t0 + (1 - m) * o1, atol=1e-6, rtol=1e-6)
    # a second step: the same rule from the new teacher
    teacher1 = [t.detach().clone() for t in model.teacher_parameters()]
    train_step(tr, lambda: batch, 2, 10)
    for t, t1, o2 in zip(model.teacher_parameters(), teacher1, model._online_for_teacher()):
        torch.testing.assert_close(t, m * t1 + (1 - m) * o2.detach(), atol=1e-6, rtol=1e-6)


def test_the_lm_weight_schedule_reaches_the_model(one_thread):
    """Bug (b): the loop computes lm_weight(step) but the model gets its default (1.0)."""
    tr = _trainee(lm_weight=0.8, lm_weight_use_scheduler=True, lm_warmup_steps=2, lm_ramp_steps=6)
    jcfg, jw = tr.cfg.jepa, tr.cfg.jepa.jepa_weight
    batch = _batch()
    head0 = tr.model.transformer.lm_head.weight.detach().clone()
    seen = []
    for step in range(1, 8):
        res = train_step(tr, lambda: batch, step, 10)
        want = lm_weight_at(jcfg, step, 10)
        seen.append(want)
        assert res.lm_weight == pytest.approx(want)
        out = res.out
        # the loss that was backpropagated is the scheduled mix
        assert out.loss.item() == pytest.approx(want * out.lm_loss.item() + jw * out.jepa_loss.item(), rel=1e-5)
        if step == 1:
            # LM weight 0: nothing reaches the (untied) LM head, which has no weight decay
            torch.testing.assert_close(tr.model.transformer.lm_head.weight, head0, atol=0, rtol=0)
    assert seen[0] == 0.0 and 0.0 < seen[3] < 0.8 and seen[-1] == pytest.approx(0.8)  # warmup, ramp, plateau


def test_the_jepa_weight_schedule_reaches_the_model(one_thread):
    """(c): the annealed JEPA weight is computed but the model keeps using the config's constant."""
    tr = _trainee(jepa_weight=0.6, jepa_weight_schedule="anneal", jepa_weight_anneal_frac=0.5)
    batch = _batch()
    seen = []
    for step in range(1, 11):
        res = train_step(tr, lambda: batch, step, 10)
        want = jepa_weight_at(tr.cfg.jepa, step, 10)
        assert res.jepa_weight == pytest.approx(want)
        out = res.out
        assert out.loss.item() == pytest.approx(out.lm_loss.item() + want * out.jepa_loss.item(), rel=1e-5)
        seen.append(want)
    assert seen[:5] == [0.6] * 5 and seen[6] == pytest.approx(0.36) and seen[-1] == 0.0
