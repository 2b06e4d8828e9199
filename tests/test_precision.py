"""`train.precision`: what `auto` picks and why, attention in fp32 under CPU bf16, and
evaluation in fp32 whatever the run trains in."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jepa_core.errors import ConfigError
from jepa_core.model.transformer import attend
from jepa_core.train.device import resolve_precision, resolve_runtime
from train_helpers import _use_home, finished_run, home, read_metrics, text  # noqa: F401

CPU = torch.device("cpu")
AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
ZEN4 = AVX2 | {"avx512f", "avx512_bf16"}
SPR = AVX2 | {"avx512f", "amx_tile", "amx_bf16"}
GRAVITON3 = frozenset({"fp", "asimd", "sve", "bf16"})


@pytest.mark.parametrize(
    "setting,flags,want,why",
    [
        ("auto", ZEN4, "bf16", "auto: the CPU has native bf16 matmul (avx512_bf16)"),
        ("auto", SPR, "bf16", "auto: the CPU has native bf16 matmul (amx_bf16)"),
        ("auto", GRAVITON3, "bf16", "auto: the CPU has native bf16 matmul (bf16)"),
        ("auto", AVX2, "fp32", "auto: the CPU has no native bf16 matmul"),
        ("auto", frozenset(), "fp32", "auto: the CPU has no native bf16 matmul"),  # flags unreadable
        ("fp32", ZEN4, "fp32", 'train.precision = "fp32"'),
        ("bf16", AVX2, "bf16", 'train.precision = "bf16"'),  # asked for: allowed (slow_bf16_note warns)
    ],
)
def test_auto_picks_bf16_where_the_cpu_has_native_bf16(setting, flags, want, why):
    got, reason = resolve_precision(setting, CPU, flags)
    assert got == want and reason.startswith(why)


def test_auto_stays_fp32_where_bf16_speed_is_unknown_and_bf16_is_refused_where_unsupported():
    assert resolve_precision("auto", torch.device("mps"), ZEN4)[0] == "fp32"
    with pytest.raises(ConfigError, match="not supported on mps"):
        resolve_precision("bf16", torch.device("mps"))


def test_runtime_carries_the_reason(monkeypatch):
    import jepa_core.train.device as device

    monkeypatch.setattr(device, "cpu_flags", lambda: ZEN4)
    rt = resolve_runtime("cpu", "auto")
    assert rt.precision == "bf16" and rt.precision_label == "bf16 (auto: the CPU has native bf16 matmul (avx512_bf16))"
    monkeypatch.setattr(device, "cpu_flags", lambda: AVX2)
    assert resolve_runtime("cpu", "auto").precision == "fp32"


def _qkv(dtype, seed=0, shape=(2, 3, 16, 8)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to(dtype).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize("under_autocast", [False, True])
def test_cpu_bf16_attention_runs_in_fp32(under_autocast):
    """bf16 q, k, v on CPU: the result is fp32 SDPA of the same values, rounded once to bf16
    (autocast, which lists SDPA as a bf16 op, must not cast the fp32 inputs back down)."""
    q, k, v = _qkv(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=under_autocast):
        y = attend(q, k, v, is_causal=True)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True).to(torch.bfloat16)
    assert y.dtype == torch.bfloat16 and torch.equal(y, want)
    y.float().square().sum().backward()
    assert q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad.float()).all()


def test_fp32_attention_is_plain_sdpa():
    q, k, v = _qkv(torch.float32, seed=1)
    mask = torch.ones(16, 16, dtype=torch.bool).tril()
    assert torch.equal(attend(q, k, v, attn_mask=mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_a_bf16_run_evaluates_in_fp32(tmp_path, text, monkeypatch):  # noqa: F811
    """The run trains under bf16 autocast, and every eval forward runs without it, on fp32 logits:
    the val BPB of a bf16 and an fp32 run score weights, not the evaluation's rounding."""
    import jepa_core.model as model_pkg

    seen: list[tuple[bool, torch.dtype]] = []
    real_score = model_pkg.score_lm

    def spy(logits, *args, **kwargs):
        def wrapped(x, starts):
            out = logits(x, starts)
            seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
            return out

        return real_score(wrapped, *args, **kwargs)

    monkeypatch.setattr(model_pkg, "score_lm", spy)
    run = finished_run(tmp_path, "bf16", 'train.precision="bf16"')
    start = next(r for r in read_metrics(run) if r.get("event") == "run_start")
    assert start["precision"] == "bf16" and start["precision_why"] == 'train.precision = "bf16"'
    assert seen and all(s == (False, torch.float32) for s in seen), seen


@pytest.mark.parametrize("first,then", [(AVX2, ZEN4), (ZEN4, AVX2)])
def test_a_resumed_auto_run_keeps_the_precision_and_ns_dtype_it_trained_in(tmp_path, text, monkeypatch, first, then):  # noqa: F811
    """`auto` resolved on one machine, resumed where it would resolve otherwise (or after auto's
    rule changed): the run goes on in the precision and Newton-Schulz dtype it trained with, with
    notes, and the resumed half equals the uninterrupted run bit for bit."""
    import jepa_core.train.device as device
    from jepa_core.train.loop import train
    from jepa_core.train.resume import resolve_resume
    from train_helpers import small_config

    monkeypatch.setattr(device, "cpu_flags", lambda: first)
    cfg = small_config(text, tmp_path / "runs", 'train.precision="auto"', 'optim.optimizer="muon"', 'optim.muon_ns_dtype="auto"')
    whole = train(cfg, run_dir=tmp_path / "whole", handle_signals=False)
    half = train(cfg, run_dir=tmp_path / "half", stop_after=4, handle_signals=False)
    assert whole.status == "finished" and half.step == 4
    monkeypatch.setattr(device, "cpu_flags", lambda: then)
    cfg2, ref = resolve_resume(str(tmp_path / "half"), cfg, cfg.name)
    assert train(cfg2, resume=ref, handle_signals=False).status == "finished"
    kept = "bf16" if first is ZEN4 else "fp32"
    starts = [r for r in read_metrics(tmp_path / "half") if r.get("event") == "run_start"]
    assert [s["precision"] for s in starts] == [kept, kept]
    assert starts[1]["precision_why"].startswith("auto, as the run trained so far")
    assert any(n.startswith(f"precision {kept}, as the run trained so far") for n in starts[1]["notes"])
    # Muon's Newton-Schulz dtype (`auto` too) likewise
    ns = "bfloat16" if first is ZEN4 else "float32"
    assert [s["muon_ns_dtype"].split(" ")[0] for s in starts] == [ns, ns]
    assert "as the run trained so far" in starts[1]["muon_ns_dtype"]
    assert any(n.startswith(f"Muon's Newton-Schulz in {ns}, as the run trained so far") for n in starts[1]["notes"])

    def losses(run):
        return {r["step"]: r["loss"] for r in read_metrics(run) if r.get("type") == "train"}

    assert losses(tmp_path / "half") == losses(tmp_path / "whole")
