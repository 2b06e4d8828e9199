"""torch.compile and CUDA paths of the model (slow / GPU-only; skipped otherwise)."""

from __future__ import annotations

import pytest
import torch


pytestmark = pytest.mark.usefixtures("one_thread")

from jepa_core.config import validate
from jepa_core.model import JepaLM, sample_anchor_target_pairs

V = 50


def _cfg(teacher="encoder"):
    return validate(
        {
            "model": {"d_model": 32, "n_layers": 2, "n_heads": 2},
            "data": {"block_size": 32},
            "jepa": {"latent_dim": 16, "horizons": [2, 4], "horizon_probs": [0.5, 0.5], "pairs_per_seq": 4,
                     "teacher": teacher},
        }
    )


@pytest.mark.slow
def test_compiled_model_matches_eager():
    """No graph breaks, and the compiled forward/backward gives the eager numbers (CPU inductor)."""
    torch.manual_seed(0)
    model = JepaLM.from_config(_cfg(), V)
    idx = torch.randint(0, V, (4, 32))
    explain = torch._dynamo.explain(model)(idx, idx)
    assert explain.graph_break_count == 0
    pairs = model.sample_pairs(4, 32, "cpu", torch.Generator().manual_seed(0))
    ref = model(idx, idx, pairs=pairs)
    ref.loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model)
    out = compiled(idx, idx, pairs=pairs)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-4)
    for n, g in ref_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, atol=1e-4, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("teacher", ["projector", "encoder"])
def test_cuda_bf16_matches_cpu_fp32(teacher):
    torch.manual_seed(1)
    model = JepaLM.from_config(_cfg(teacher), V)
    idx = torch.randint(0, V, (4, 32))
    pairs = model.sample_pairs(4, 32, "cpu", torch.Generator().manual_seed(0))
    ref = model(idx, idx, pairs=pairs)
    model = model.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(idx.cuda(), idx.cuda(), pairs=pairs.to("cuda"))
    out.loss.backward()
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=3e-2)
    assert all(p.grad is None for p in model.teacher_parameters())
    # sampling on the device draws from the CUDA RNG and stays there
    torch.cuda.manual_seed(3)
    a = sample_anchor_target_pairs(4, 32, [2, 4], [0.5, 0.5], 4, "cuda")
    torch.cuda.manual_seed(3)
    b = sample_anchor_target_pairs(4, 32, [2, 4], [0.5, 0.5], 4, "cuda")
    assert a.t.is_cuda and all(torch.equal(x, y) for x, y in zip(a, b))
    # the sampled-pairs path (encoder teacher at target rows only) runs on CUDA too
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(idx.cuda(), idx.cuda()).loss.backward()
