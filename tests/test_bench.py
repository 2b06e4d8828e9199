"""`jepa bench`: the engine's structure and arithmetic, the device-dependent step choices, the CLI."""

from __future__ import annotations

import json
import os
import statistics
from unittest import mock

import pytest
import torch
from typer.testing import CliRunner

from jepa_core.tools import bench
from jepa_core.tools.bench import ArmResult, BenchReport, MatmulPeak, arm_config, measure_matmul_peak, move_batch, plan_step, run_bench
from jepa_core.config import load_config, validate
from jepa_core.errors import ConfigError
from jepa_core.model import estimate_flops_per_token
from jepa_core.train.allocator import retain_freed_memory
from jepa_core.train.device import resolve_precision

SMALL = [
    "train.compile=false",
    "model.d_model=32",
    "model.n_layers=2",
    "model.n_heads=2",
    "model.tap_layer=-1",
    "train.batch_size=4",
    "data.block_size=32",
    "data.vocab_size=300",
    "jepa.latent_dim=16",
    "jepa.horizons=[2,8]",
    "jepa.horizon_probs=[0.5,0.5]",
]


@pytest.fixture(scope="module")
def report():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # keep the shared cores free; the numbers are not checked for speed
    try:
        cfg = load_config("tiny", SMALL)
        yield run_bench(cfg, steps=2, repeats=2, warmup=1, matmul_sizes=(32, 64), matmul_repeats=2)
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the report


def test_report_structure(report):
    assert [a.name for a in report.arms] == ["baseline", "projector", "encoder"]
    # tiny's precision is "auto": bf16 where this CPU has native bf16 matmul, and the report says why
    assert (report.device, report.precision) == ("cpu", resolve_precision("auto", torch.device("cpu"))[0])
    assert report.precision_why.startswith("auto: the CPU has") and report.to_dict()["precision_why"] == report.precision_why
    assert report.to_dict()["plan"]["allocator"] == retain_freed_memory()  # applied by the CPU arms' build
    assert report.shape["d_model"] == 32 and report.shape["vocab_size"] == 300
    assert report.shape["batch_size"] == 4 and report.shape["block_size"] == 32
    for a in report.arms:
        assert len(a.ms_per_step) == 2 and all(ms > 0 for ms in a.ms_per_step)
        assert a.tokens_per_step == 4 * 32
        assert a.peak_mem_bytes and a.peak_mem_bytes > 0
    base, proj, enc = report.arms
    assert base.params_teacher == 0 and proj.params_teacher > 0
    # the encoder teacher holds the stack up to the tap on top of the projector's copy
    assert enc.params_teacher > proj.params_teacher
    assert proj.params_trainable == enc.params_trainable > base.params_trainable
    assert set(report.matmul.by_size) == {32, 64}
    assert report.datasheet_peak is None  # CPU: no datasheet entry


def test_ratios_and_mfu_follow_from_the_reported_timings(report):
    d = report.to_dict()
    base = d["arms"][0]
    peak = d["matmul_peak"]["flops_per_s"]
    assert peak == max(d["matmul_peak"]["by_size"].values())
    for a in d["arms"]:
        reps = a["ms_per_step"]["repeats"]
        med = statistics.median(reps)
        assert a["ms_per_step"]["median"] == pytest.approx(med)
        assert a["ms_per_step"]["spread"] == pytest.approx((max(reps) - min(reps)) / med)
        tok_s = a["tokens_per_step"] / (med / 1000)
        assert a["tok_per_s"] == pytest.approx(tok_s)
        assert a["mfu_measured"] == pytest.approx(tok_s * a["flops_per_token"] / peak)
        if a["name"] != "baseline":
            assert d["ratios_vs_baseline"][a["name"]] == pytest.approx(med / statistics.median(base["ms_per_step"]["repeats"]))
    json.dumps(d, allow_nan=False)  # plain JSON, nothing exotic


def test_flops_per_token_is_the_models_estimate(report):
    cfg = load_config("tiny", SMALL)
    for a in report.arms:
        assert a.flops_per_token == estimate_flops_per_token(arm_config(cfg, a.name), 300)


def test_mfu_hand_computed():
    arm = ArmResult(
        name="baseline", label="b", params_trainable=1, params_teacher=0, flops_per_token=1e6,
        tokens_per_step=4096, ms_per_step=[30.0, 10.0, 20.0],
    )
    # median 20 ms -> 4096 / 0.020 = 204800 tok/s -> 2.048e11 FLOP/s; over a 4e11 peak: 51.2%
    assert arm.median_ms == 20.0
    assert arm.tok_per_s == pytest.approx(204800.0)
    assert arm.achieved_flops == pytest.approx(2.048e11)
    assert arm.mfu(4e11) == pytest.approx(0.512)
    assert arm.mfu(None) is None
    assert arm.spread == pytest.approx(1.0)
    jepa = ArmResult(name="projector", label="p", params_trainable=1, params_teacher=1, flops_per_token=1e6,
                     tokens_per_step=4096, ms_per_step=[25.0, 24.0, 26.0])
    rep = BenchReport(
        profile="x", device="cpu", device_name="cpu", precision="fp32", threads=1, torch_version="", shape={},
        steps=1, repeats=3, warmup=0, plan={}, matmul=MatmulPeak("float32", {64: 4e11}), datasheet_peak=None,
        arms=[arm, jepa],
    )
    assert rep.ratios == {"projector": pytest.approx(25.0 / 20.0)}


def test_flops_hand_count_at_the_tiny_shape():
    """The tiny profile's shape, counted by hand (d 128, 4 layers, T 128, V 1024, SwiGLU 8/3*128 -> 384)."""
    cfg = load_config("tiny", ["model.d_model=128", "model.n_layers=4", "data.block_size=128", "model.ff_multiplier=2.6666666666666665",
                               "model.ff_round=64", "model.tap_layer=-2", "jepa.latent_dim=64", "jepa.hidden_mult=2",
                               "jepa.pairs_per_seq=4", "train.batch_size=32", "jepa.gamma_cov_pred=0"])
    d, L, T, V, H = 128, 4, 128, 1024, 384
    per_block = 3 * d * d + d * d + 2 * d * H + H * d  # qkv, proj, w12, w3
    base = 6 * (L * per_block + V * d) + 12 * L * d * T
    assert base == 6 * (4 * 212992 + 131072) + 786432 == 6684672
    b = arm_config(cfg, "baseline")
    assert estimate_flops_per_token(b, V) == base
    lat, hid, P, B = 64, 128, 4, 32
    heads = (P / T) * (6 * (d * hid + hid * lat + 2 * lat * hid + hid * lat) + 2 * (d * hid + hid * lat)
                       + 4 * (B * P) * lat + 6 * lat * lat)
    proj = base + 6 * 2 * d * d + heads
    assert estimate_flops_per_token(arm_config(cfg, "projector"), V) == pytest.approx(proj)
    # teacher forward: blocks 0..1 over every token, block 2's keys and values over every
    # token, the rest of block 2 (and its attention) only at the P target rows per sequence
    enc = (proj + 2 * 2 * per_block + 4 * 2 * d * T + 2 * 2 * d * d
           + (P / T) * 2 * (per_block - 2 * d * d) + 4 * (P / T) * T * d)
    assert estimate_flops_per_token(arm_config(cfg, "encoder"), V) == pytest.approx(enc)


def test_peak_memory_is_a_real_high_water_mark(report):
    # Not compared with ru_maxrss: resetting VmHWM between arms can lower what getrusage
    # reports later, so the bound is physical memory, and the floor the arm's own weights.
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for a in report.arms:
        assert a.peak_mem_kind in ("cpu_rss_hwm", "cpu_ru_maxrss")
        assert 4 * (a.params_trainable + a.params_teacher) < a.peak_mem_bytes <= physical


def test_arm_config_keeps_the_shape_and_switches_the_objective():
    cfg = load_config("tiny-baseline")
    assert cfg.jepa.run_baseline
    proj, enc, base = arm_config(cfg, "projector"), arm_config(cfg, "encoder"), arm_config(cfg, "baseline")
    assert not proj.jepa.run_baseline and proj.jepa.teacher == "projector"
    assert not enc.jepa.run_baseline and enc.jepa.teacher == "encoder"
    assert base.jepa.run_baseline
    assert proj.model == enc.model == base.model == cfg.model
    with pytest.raises(ConfigError):
        arm_config(cfg, "nope")


def test_bad_arguments_are_user_errors():
    cfg = load_config("tiny", SMALL)
    with pytest.raises(ConfigError):
        run_bench(cfg, steps=0)
    with pytest.raises(ConfigError):
        run_bench(cfg, arms=())


# --------------------------------------------------------------------------- matmul peak


def test_matmul_peak_formula_with_a_fake_clock(monkeypatch):
    """Each product 'takes' exactly 1 ms on a fake clock: FLOP/s must be 2 n^3 / 1e-3."""
    clock = [0.0]
    real_mm = torch.mm

    def fake_mm(a, b, out=None):
        clock[0] += 1e-3
        return real_mm(a, b, out=out)

    monkeypatch.setattr(bench.torch, "mm", fake_mm)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    peak = measure_matmul_peak(torch.device("cpu"), torch.float32, (8, 16), repeats=3, min_time_s=0.01)
    assert peak.by_size == {8: pytest.approx(2 * 8**3 / 1e-3), 16: pytest.approx(2 * 16**3 / 1e-3)}
    assert peak.flops_per_s == pytest.approx(2 * 16**3 / 1e-3)
    assert peak.dtype == "float32"


def test_matmul_peak_is_plausible_on_this_machine():
    peak = measure_matmul_peak(torch.device("cpu"), torch.float32, (64,), repeats=2, min_time_s=0.005)
    # any CPU from the last 20 years does more than 10 MFLOP/s and less than 100 TFLOP/s in fp32
    assert 1e7 < peak.flops_per_s < 1e14


# --------------------------------------------------------------------------- device-dependent choices


def test_plan_selects_cuda_paths_by_device_type():
    cfg = load_config("tiny", SMALL)
    p = plan_step(cfg, torch.device("cuda", 0), "bf16")
    assert p.fused_adamw and p.pin_memory
    assert not p.sync_every_step  # no host sync per step on CUDA
    assert p.autocast_dtype == torch.bfloat16
    assert p.adamw_kwargs() == {"fused": True}
    c = plan_step(cfg, torch.device("cpu"), "fp32", fused_cpu=False)
    assert not c.fused_adamw and not c.pin_memory and c.sync_every_step
    assert c.autocast_dtype is None and "fused" not in c.adamw_kwargs()
    assert plan_step(cfg, torch.device("cpu"), "fp32", fused_cpu=True).adamw_kwargs() == {"fused": True}
    assert not plan_step(cfg, torch.device("mps"), "fp32", fused_cpu=True).fused_adamw
    compiled = load_config("tiny", SMALL + ["train.compile=true"])
    assert plan_step(compiled, torch.device("cuda"), "bf16").compile
    assert not plan_step(cfg, torch.device("cuda"), "bf16").compile


def test_move_batch_pins_and_copies_non_blocking_on_cuda():
    cfg = load_config("tiny", SMALL)
    dev = torch.device("cuda", 0)
    plan = plan_step(cfg, dev, "bf16")
    x, y = mock.MagicMock(), mock.MagicMock()
    move_batch(x, y, dev, plan)
    for t in (x, y):
        t.pin_memory.assert_called_once_with()
        t.pin_memory.return_value.to.assert_called_once_with(dev, non_blocking=True)
    cpu_plan = plan_step(cfg, torch.device("cpu"), "fp32")
    x, y = mock.MagicMock(), mock.MagicMock()
    move_batch(x, y, torch.device("cpu"), cpu_plan)
    x.pin_memory.assert_not_called()
    x.to.assert_called_once_with(torch.device("cpu"))


def test_fused_adamw_and_compile_reach_the_optimizer_and_model(monkeypatch):
    """With a CUDA-like plan on CPU tensors: AdamW gets fused=True, torch.compile wraps the model,
    and the first (compiling) step's time is reported apart as compile_s."""
    cfg = load_config("tiny", SMALL + ["train.compile=true"])
    seen: dict = {}
    real_adamw = torch.optim.AdamW

    def spy_adamw(groups, **kw):
        seen["adamw"] = dict(kw)
        kw.pop("fused", None)  # run it unfused: CPU tensors
        return real_adamw(groups, **kw)

    compiled = []
    monkeypatch.setattr(bench.torch.optim, "AdamW", spy_adamw)
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or m)
    plan = bench.StepPlan("cpu", fused_adamw=True, compile=True, pin_memory=False, sync_every_step=True, autocast_dtype=None)
    arm = bench._Arm("projector", arm_config(cfg, "projector"), 300, torch.device("cpu"), plan, seed=0)
    assert seen["adamw"]["fused"] is True
    assert compiled == [arm.model]
    monkeypatch.setattr(bench, "plan_step", lambda *a, **k: plan)
    rep = run_bench(cfg, steps=1, repeats=1, warmup=0, arms=("baseline",), matmul_sizes=(16,), matmul_repeats=1)
    a = rep.arms[0]
    assert a.first_step_ms is not None and a.compile_s is not None
    assert a.compile_s == pytest.approx(max(0.0, (a.first_step_ms - a.median_ms) / 1e3))


def test_bench_and_training_call_the_same_train_step(monkeypatch, tmp_path):
    """By construction, not by comparison with a copy: the one `train_step` function object is what
    `jepa bench` times and what `jepa train` runs (both resolve it from jepa_core.train.step)."""
    import jepa_core.train.loop as loop
    import jepa_core.train.step as step_mod
    from train_helpers import small_config, small_text

    assert bench.train_step is step_mod.train_step and loop.train_step is step_mod.train_step
    calls = {"bench": 0, "train": 0}
    who = {"now": "bench"}
    real = step_mod.train_step

    def counting(*a, **k):
        calls[who["now"]] += 1
        return real(*a, **k)

    monkeypatch.setattr(bench, "train_step", counting)
    monkeypatch.setattr(loop, "train_step", counting)
    cfg = load_config("tiny", SMALL)
    run_bench(cfg, steps=2, repeats=2, warmup=1, arms=("baseline", "projector"), matmul_sizes=(16,), matmul_repeats=1)
    # arms x (warm-up + repeats x steps + clocked phase steps): every timed step is train_step
    assert calls["bench"] == 2 * (1 + 2 * 2 + 2)
    who["now"] = "train"
    text = small_text(tmp_path)
    res = loop.train(small_config(text, tmp_path / "runs", "train.max_steps=3"), run_dir=tmp_path / "r", handle_signals=False)
    assert res.status == "finished" and calls["train"] == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (datasheet MFU, bf16 matmul peak)")
def test_cuda_bench_reports_datasheet_mfu():  # pragma: no cover - no GPU here
    cfg = load_config("tiny", SMALL + ["train.device=cuda", "train.precision=bf16"])
    rep = run_bench(cfg, steps=2, repeats=2, warmup=1, matmul_sizes=(256,))
    assert rep.matmul.dtype == "bfloat16"
    for a in rep.arms:
        assert a.peak_mem_kind == "cuda_max_allocated" and a.peak_mem_bytes > 0
        if rep.datasheet_peak:
            assert a.mfu(rep.datasheet_peak) == pytest.approx(a.achieved_flops / rep.datasheet_peak)


# --------------------------------------------------------------------------- CLI


def test_cli_json_and_table():
    from jepa_cli.main import app

    runner = CliRunner()
    args = ["bench", "--steps", "1", "--repeats", "1", "--warmup", "0"]
    for s in SMALL:
        args += ["--set", s]
    with mock.patch.object(bench, "CPU_MATMUL_SIZES", (32,)):
        r = runner.invoke(app, args + ["--json"], env={"COLUMNS": "100"})
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)
        assert [a["name"] for a in d["arms"]] == ["baseline", "projector", "encoder"]
        assert set(d["ratios_vs_baseline"]) == {"projector", "encoder"}
        for a in d["arms"]:
            assert list(a["phase_ms"]) == ["forward", "backward", "optimizer", "teacher"]
            assert sum(a["phase_share"].values()) == pytest.approx(1.0)
        r = runner.invoke(app, args, env={"COLUMNS": "100"})
        assert r.exit_code == 0, r.output
        for word in ("baseline", "JEPA proj", "JEPA enc", "matmul peak", "MFU", "where a step goes", "optimizer ms"):
            assert word in r.stdout


def test_cli_bad_profile_is_a_clean_error():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "jepa_cli", "bench", "--profile", "no-such-profile"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no-such-profile" in r.stderr and "Traceback" not in r.stderr


def test_compile_needs_a_cpp_compiler_on_cpu(monkeypatch):
    import shutil

    import torch._inductor.cpp_builder as cpp_builder

    from jepa_core.train.device import compile_unavailable_reason

    assert compile_unavailable_reason(torch.device("cuda")) is None
    if shutil.which("g++") or shutil.which("c++"):
        assert compile_unavailable_reason(torch.device("cpu")) is None

    def no_compiler():
        raise RuntimeError("no compiler")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    reason = compile_unavailable_reason(torch.device("cpu"))
    assert reason and "C++ compiler" in reason
    # the bench then runs eagerly and says why
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or m)
    cfg = load_config("tiny", SMALL + ["train.compile=true"])
    rep = run_bench(cfg, steps=1, repeats=1, warmup=0, arms=("baseline",), matmul_sizes=(16,), matmul_repeats=1)
    assert compiled == [] and rep.plan["compile"] is False
    assert rep.notes == [reason] and rep.arms[0].compile_s is None


def test_train_log_mfu_divides_by_every_device_whose_tokens_it_counts():
    from jepa_core.model.flops import model_flops_utilization

    # 100k tok/s of all ranks at 6e6 FLOP/token = 6e11 FLOP/s, over two cards of 1e12: 30%, not 60%
    assert model_flops_utilization(1e5, 6e6, 1e12, devices=2) == pytest.approx(0.3)
    assert model_flops_utilization(1e5, 6e6, 1e12) == pytest.approx(0.6)
