"""train_step, the one step behind train, bench and preflight."""

from __future__ import annotations

import pytest
import torch

from jepa_core.config import load_config
from jepa_core.train.step import build_trainee, plan_step, train_step
from train_helpers import small_overrides, small_text


@pytest.mark.timeout(300)
def test_ramping_loss_weights_compile_once(tmp_path, monkeypatch, one_thread):
    """The LM weight (lm_weight_use_scheduler) and the annealed JEPA weight change every step;
    passed as Python floats, dynamo would guard on their values and compile the forward again at
    each step. Frames compiled after the first step must stay the same over the next five."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    real_compile = torch.compile
    # the eager backend: the same dynamo guards and recompiles, without inductor's C++ builds
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real_compile(m, backend="eager"))
    cfg = load_config("tiny", small_overrides(small_text(tmp_path), "train.compile=true", "jepa.lm_weight_use_scheduler=true",
                                              "jepa.lm_warmup_steps=0", "jepa.lm_ramp_steps=6", "train.max_steps=6",
                                              "jepa.jepa_weight_schedule='anneal'", "jepa.jepa_weight_anneal_frac=1.0"))
    cpu = torch.device("cpu")
    tr = build_trainee(cfg, cfg.data.vocab_size, cpu, plan_step(cfg, cpu, "fp32"), seed=0)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, cfg.data.vocab_size, (cfg.train.batch_size, cfg.data.block_size + 1), generator=g)
    x, y = batch[:, :-1], batch[:, 1:]
    counters.clear()
    weights, frames = [], []
    for step in range(1, 7):
        res = train_step(tr, lambda: (x, y), step, 6)
        weights.append((res.lm_weight, res.jepa_weight))
        frames.append(sum(counters["frames"].values()))
    assert all(len({w[i] for w in weights}) == 6 for i in (0, 1))  # both weights really changed at every step
    assert frames[0] > 0 and frames[-1] == frames[0], f"compiled frames per step: {frames}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_gradient_probe_runs_on_a_compiled_model(tmp_path, monkeypatch, one_thread, backend):
    """The probe's extra backward keeps the graph (retain_graph); AOTAutograd's donated buffers
    forbid that unless turned off. aot_eager runs the same AOTAutograd wrappers as inductor
    without its C++ builds (inductor itself: slow suite)."""
    torch._dynamo.reset()
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real_compile(m, backend=backend))
    cfg = load_config("tiny", small_overrides(small_text(tmp_path), "train.compile=true", "train.max_steps=3"))
    cpu = torch.device("cpu")
    tr = build_trainee(cfg, cfg.data.vocab_size, cpu, plan_step(cfg, cpu, "fp32"), seed=0)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, cfg.data.vocab_size, (cfg.train.batch_size, cfg.data.block_size + 1), generator=g)
    for step in (1, 2, 3):
        res = train_step(tr, lambda: (batch[:, :-1], batch[:, 1:]), step, 3, probe_grads=step != 1)
        assert torch.isfinite(res.loss)
    assert res.grads is not None and res.grads["grad_norm_jepa"] > 0


@pytest.mark.parametrize("max_norm", [float("inf"), 1e9, 0.5, 1e-3])
def test_host_clipping_is_torchs_clip_bit_for_bit(max_norm):
    """_clip_on_host skips torch's multiply by 1.0 when the norm is under the limit: parameters'
    gradients and the returned norm equal torch.nn.utils.clip_grad_norm_'s exactly, clipping or not."""
    from jepa_core.train.step import _clip_on_host

    gen = torch.Generator().manual_seed(3)
    ours = [torch.nn.Parameter(torch.zeros(s)) for s in [(7, 5), (5,), (3, 3)]]
    ref = [torch.nn.Parameter(torch.zeros(s)) for s in [(7, 5), (5,), (3, 3)]]
    for p, q in zip(ours, ref):
        p.grad = torch.randn(p.shape, generator=gen)
        q.grad = p.grad.clone()
    got, want = _clip_on_host(ours, max_norm), torch.nn.utils.clip_grad_norm_(ref, max_norm)
    assert torch.equal(got, want)
    for p, q in zip(ours, ref):
        assert torch.equal(p.grad, q.grad)
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours]))
    assert float(after) == pytest.approx(min(max_norm, float(want)), rel=1e-5)  # clipped only when over the limit


def test_host_clipping_spreads_a_nan_norm_like_torch():
    from jepa_core.train.step import _clip_on_host

    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([1.0, float("nan"), 2.0, 3.0])
    assert torch.isnan(_clip_on_host([p], 1.0)) and torch.isnan(p.grad).all()


def test_a_cpu_step_clips_on_the_host(monkeypatch, tmp_path):
    """train_step on CPU clips through _clip_on_host (the branch that skips the multiply by 1.0)."""
    import jepa_core.train.step as step_mod

    calls = []
    real = step_mod._clip_on_host
    monkeypatch.setattr(step_mod, "_clip_on_host", lambda params, max_norm: calls.append(max_norm) or real(params, max_norm))
    cfg = load_config("tiny", small_overrides(small_text(tmp_path), "optim.grad_clip=0.7"))
    tr = build_trainee(cfg, cfg.data.vocab_size, torch.device("cpu"), plan_step(cfg, torch.device("cpu"), "fp32"), seed=0)
    x = torch.randint(0, cfg.data.vocab_size, (cfg.train.batch_size, cfg.data.block_size))
    train_step(tr, lambda: (x, x), 1, 10)
    assert calls == [0.7]
