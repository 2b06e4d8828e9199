"""A tiny JEPA model memorises one batch: the whole objective trains end to end."""

from __future__ import annotations

import contextlib

import pytest
import torch


pytestmark = pytest.mark.usefixtures("one_thread")

from jepa_core.config import validate
from jepa_core.model import JepaLM, build_param_groups, check_param_groups, ema_momentum_at

V, B, T = 64, 4, 32


def _bf16_autocast_works() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
        return y.dtype == torch.bfloat16
    except (RuntimeError, TypeError):  # pragma: no cover - depends on the build
        return False


def _overfit(teacher: str, precision: str, max_steps: int = 200) -> tuple[list[float], JepaLM]:
    torch.manual_seed(0)
    cfg = validate(
        {
            "model": {"d_model": 64, "n_layers": 2, "n_heads": 2, "tap_layer": -1},
            "jepa": {"teacher": teacher, "latent_dim": 32, "horizons": [1, 4], "horizon_probs": [0.5, 0.5],
                     "pairs_per_seq": 4, "ema_momentum": 0.99, "jepa_weight": 0.5},
            "data": {"block_size": T},
            "optim": {"lr": 1e-2, "lr_head": 1e-2, "weight_decay": 0.0},
        }
    )
    model = JepaLM.from_config(cfg, V)
    groups = build_param_groups(model, cfg.optim)
    check_param_groups(model, groups)
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.95))
    data = torch.randint(0, V, (B, T + 1))
    idx, targets = data[:, :-1], data[:, 1:]
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    losses = []
    for step in range(max_steps):
        with ctx:
            out = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        model.update_teacher(ema_momentum_at(cfg.jepa, step, max_steps))
        losses.append(out.lm_loss.item())
        assert torch.isfinite(out.loss)
        if losses[-1] < 0.5:
            break
    return losses, model


@pytest.mark.parametrize("teacher", ["projector", "encoder"])
def test_tiny_model_overfits_one_batch_fp32(teacher):
    losses, model = _overfit(teacher, "fp32")
    assert losses[0] > 3.5  # starts near ln 64 = 4.16
    assert min(losses) < 0.5, f"LM loss only reached {min(losses):.3f} in {len(losses)} steps"
    # the teacher moved with the online weights (EMA), without ever getting a gradient
    assert all(p.grad is None for p in model.teacher_parameters())


@pytest.mark.skipif(not _bf16_autocast_works(), reason="bf16 autocast is not supported on this CPU build")
def test_tiny_model_overfits_one_batch_bf16_autocast():
    losses, _ = _overfit("projector", "bf16")
    assert min(losses) < 0.5, f"LM loss only reached {min(losses):.3f} in {len(losses)} steps"
