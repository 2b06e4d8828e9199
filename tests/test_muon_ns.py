"""Muon's Newton-Schulz dtype: bf16 is torch's Muon exactly, fp32 is closer to float64,
and `auto` picks from the device's capability flags."""

from __future__ import annotations

import pytest
import torch

from jepa_core.config import validate
from jepa_core.model import JepaLM, build_param_groups
from jepa_core.train.device import fast_bf16_matmul, resolve_ns_dtype
from jepa_core.train.optimizer import NsMuon, build_optimizer, newton_schulz, newton_schulz_many

COEFFS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's defaults
CPU = torch.device("cpu")

# shapes of both orientations (tall ones are transposed inside Newton-Schulz), as in the model
SHAPES = [(24, 24), (16, 40), (40, 16)]


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]


def _grads(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=g) for s in SHAPES]


@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_bf16_mode_is_torch_muon(adjust_lr_fn, nesterov):
    """Same gradients, 4 steps (momentum built up), weight decay and both LR rules: the bf16 mode
    matches torch.optim.Muon, momentum buffers bit for bit and parameters to bf16 rounding (on
    the CPUs tried so far bit for bit too, but a batched bmm may sum in another order than mm)."""
    ours, ref = _params(0), _params(0)
    kw = dict(lr=0.05, weight_decay=0.1, momentum=0.9, nesterov=nesterov, ns_steps=3, adjust_lr_fn=adjust_lr_fn)
    opt = NsMuon(ours, ns_dtype=torch.bfloat16, **kw)
    ref_opt = torch.optim.Muon(ref, **kw)
    for step in range(4):
        for p, q, g in zip(ours, ref, _grads(step)):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref):
        # a step moves an element by about lr * scale = 0.05-0.08; a wrong momentum, Nesterov, decay or
        # LR factor moves it by a sizeable part of that, bf16 rounding of the update by well under 1e-3
        assert torch.allclose(p, q, rtol=0, atol=1e-3), (p - q).abs().max()
        assert torch.equal(opt.state[p]["momentum_buffer"], ref_opt.state[q]["momentum_buffer"])
    # the state format is torch's: our state dict loads into torch's Muon and back
    assert set(opt.state[ours[0]]) == {"momentum_buffer"}
    torch.optim.Muon(_params(1), **kw).load_state_dict(opt.state_dict())


def test_fp32_mode_moves_like_torch_muon_but_orthogonalises_in_fp32():
    """fp32 mode: the same step as torch's up to the Newton-Schulz rounding (a bf16-sized
    difference, not a different algorithm)."""
    ours, ref = _params(0), _params(0)
    kw = dict(lr=0.05, weight_decay=0.1, momentum=0.9, nesterov=True, ns_steps=5)
    opt, ref_opt = NsMuon(ours, ns_dtype=torch.float32, **kw), torch.optim.Muon(ref, **kw)
    for step in range(3):
        for p, q, g in zip(ours, ref, _grads(step)):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref):
        assert not torch.equal(p, q)  # the dtype really changed
        # each step moves a parameter by at most lr * scale * |NS| ~ 0.05 * 1.6 * 1.5: a bf16 NS
        # differs by ~1% of that per element
        assert torch.allclose(p, q, atol=5e-3), (p - q).abs().max()
        assert torch.equal(opt.state[p]["momentum_buffer"], ref_opt.state[q]["momentum_buffer"])


@pytest.mark.parametrize("shape", SHAPES + [(128, 512)])
def test_fp32_newton_schulz_is_closer_to_float64_than_bf16(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    exact = newton_schulz(g.double(), COEFFS, 5, 1e-7, torch.float64)
    err = {dt: (newton_schulz(g, COEFFS, 5, 1e-7, dt).double() - exact).abs().max().item() for dt in (torch.float32, torch.bfloat16)}
    assert err[torch.float32] < 1e-4
    assert err[torch.float32] < err[torch.bfloat16] / 50, err


def test_newton_schulz_matches_torch_and_orthogonalises():
    """Our iteration is torch's (private) one in bf16, and it does what Muon wants: the
    singular values squeezed towards 1."""
    from torch.optim._muon import _zeropower_via_newtonschulz  # private: the reference only

    for shape in SHAPES:
        g = torch.randn(shape, generator=torch.Generator().manual_seed(4))
        assert torch.equal(newton_schulz(g, COEFFS, 5, 1e-7, torch.bfloat16), _zeropower_via_newtonschulz(g, COEFFS, 5, 1e-7))
        s_in = torch.linalg.svdvals(g.double())
        s = torch.linalg.svdvals(newton_schulz(g.double(), COEFFS, 5, 1e-7, torch.float64))
        assert s.max() < 1.5, s
        # well-conditioned inputs land in [0.5, 1.5]; a near-singular square one is not fixed in
        # 5 steps, but its condition number still falls by an order of magnitude
        assert s.min() > 0.5 or s.max() / s.min() < (s_in.max() / s_in.min()) / 10, (s, s_in)
    # a matrix that is already orthogonal-ish is not mangled: U V^T stays near itself
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5)))
    assert (newton_schulz(q, COEFFS, 5, 1e-7, torch.float64) - q).abs().max() < 0.35


def test_newton_schulz_leaves_its_input_alone():
    # in fp32 `.to(float32)` is no copy: an in-place normalisation would scale the momentum buffer
    g = torch.randn(8, 12, generator=torch.Generator().manual_seed(6))
    before = g.clone()
    newton_schulz(g, COEFFS, 3, 1e-7, torch.float32)
    assert torch.equal(g, before)


FLAGS_AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})  # AMD Zen 3, Intel before Cooper Lake
FLAGS_ZEN4 = FLAGS_AVX2 | {"avx512f", "avx512_bf16"}
FLAGS_SPR = FLAGS_AVX2 | {"avx512f", "amx_tile", "amx_bf16"}
FLAGS_GRAVITON3 = frozenset({"fp", "asimd", "sve", "bf16", "i8mm"})


@pytest.mark.parametrize(
    "setting,flags,want",
    [
        ("auto", FLAGS_AVX2, torch.float32),
        ("auto", FLAGS_AVX2 | {"avx512f", "avx512bw"}, torch.float32),  # Skylake-X: AVX-512 but no bf16
        ("auto", FLAGS_ZEN4, torch.bfloat16),
        ("auto", FLAGS_SPR, torch.bfloat16),
        ("auto", FLAGS_GRAVITON3, torch.bfloat16),
        ("auto", frozenset(), torch.float32),  # flags unreadable: the safe choice
        ("bf16", FLAGS_AVX2, torch.bfloat16),  # an explicit setting wins
        ("fp32", FLAGS_ZEN4, torch.float32),
    ],
)
def test_ns_dtype_resolution(setting, flags, want):
    dtype, why = resolve_ns_dtype(setting, CPU, flags)
    assert dtype == want
    assert why


def test_auto_is_fp32_on_devices_of_unknown_bf16_speed():
    assert fast_bf16_matmul(torch.device("mps"), frozenset({"avx512_bf16"}))[0] is False


def _muon_cfg(ns: str):
    return validate(
        {
            "model": {"d_model": 16, "n_layers": 2, "n_heads": 2, "tap_layer": 0},
            "jepa": {"latent_dim": 8, "horizons": [2], "horizon_probs": [1.0]},
            "data": {"block_size": 16},
            "optim": {"optimizer": "muon", "muon_ns_dtype": ns},
        }
    )


@pytest.mark.parametrize("flags,want", [(FLAGS_AVX2, torch.float32), (FLAGS_ZEN4, torch.bfloat16)])
def test_build_optimizer_resolves_auto_from_the_cpu(monkeypatch, flags, want):
    import jepa_core.train.device as device

    monkeypatch.setattr(device, "cpu_flags", lambda: flags)
    cfg = _muon_cfg("auto")
    opt = build_optimizer(build_param_groups(JepaLM.from_config(cfg, 40), cfg.optim), cfg.optim, CPU)
    assert opt.muon.ns_dtype == want


def test_ns_dtype_is_validated():
    from jepa_core.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="muon_ns_dtype"):
        _muon_cfg("fp16")


@pytest.mark.parametrize("flags", [FLAGS_AVX2, FLAGS_ZEN4])
def test_run_start_label_and_the_slow_bf16_autocast_note(monkeypatch, flags):
    import jepa_core.train.device as device

    monkeypatch.setattr(device, "cpu_flags", lambda: flags)
    native = flags is FLAGS_ZEN4
    label = device.ns_dtype_label("muon", "auto", CPU)
    assert label.startswith("bfloat16 (auto: " if native else "float32 (auto: ")
    assert device.ns_dtype_label("adamw", "auto", CPU) is None
    note = device.slow_bf16_note(device.Runtime(CPU, "bf16"))
    assert (note is None) if native else ("--set train.precision=fp32" in note)
    assert device.slow_bf16_note(device.Runtime(CPU, "fp32")) is None


def test_batched_newton_schulz_is_each_matrix_on_its_own():
    """newton_schulz_many stacks same-shape matrices (both orientations) into one bmm: each result
    equals newton_schulz of that matrix alone, in fp32 and bf16, with its own norm (one matrix
    1000x larger changes nothing for the others)."""
    gen = torch.Generator().manual_seed(11)
    shapes = [(24, 40), (40, 24), (24, 24), (24, 40), (8, 40), (24, 24)]
    gs = [torch.randn(s, generator=gen) for s in shapes]
    gs[1] = gs[1] * 1000
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        many = newton_schulz_many(gs, COEFFS, 5, 1e-7, dtype)
        for g, got in zip(gs, many, strict=True):
            want = newton_schulz(g, COEFFS, 5, 1e-7, dtype)
            assert got.shape == g.shape and got.dtype == dtype
            assert torch.allclose(got.float(), want.float(), atol=tol), (g.shape, (got.float() - want.float()).abs().max())
    exact = [newton_schulz(g.double(), COEFFS, 5, 1e-7, torch.float64) for g in gs]
    for got, ref in zip(newton_schulz_many(gs, COEFFS, 5, 1e-7, torch.float32), exact, strict=True):
        assert (got.double() - ref).abs().max() < 1e-5
