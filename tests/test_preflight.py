"""`jepa preflight`: the checks pass on a healthy tree, and each one fails, readably, when
the mechanism it guards is broken on purpose."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from jepa_cli.main import app
from jepa_core.tools import preflight as pf
from jepa_core.model.memory import MEMORY_BUDGET_FRACTION, estimate_memory, memory_verdict
from jepa_core.tools.preflight import checks as pf_checks
from jepa_core.config import load_config
from jepa_core.errors import ConfigError

runner = CliRunner()


def _one(name: str, profile: str | None = None, overrides=()) -> pf.CheckResult:
    (res,) = pf.run_preflight(profile, overrides, checks=pf.select_checks([name]))
    return res


# --------------------------------------------------------------------------- the whole run


def test_default_profile_passes_every_check(mirror):
    torch.set_num_threads(2)
    results = pf.run_preflight()
    by_name = {r.name: r for r in results}
    # a fresh JEPA_HOME has no prepared data: the data check says so, and the epochs check
    # (which needs the split's size) is skipped; everything else must pass
    unprepared = "not prepared yet" in by_name["data"].detail
    # step_phases times real steps: on a loaded machine a phase's share can drift past its
    # threshold, and a warning (not a failure) is then the honest answer
    excused = {("epochs", "skip")} if unprepared else set()
    excused.add(("step_phases", "warn"))
    bad = [(r.name, r.status, r.detail) for r in results if r.status != "pass" and (r.name, r.status) not in excused]
    assert not bad, bad
    assert [r.name for r in results] == pf.check_names()
    summary = pf.summarize_results(results)
    assert summary["ok"] and summary["failed"] == 0
    assert summary["passed"] + summary["skipped"] + summary["warned"] == len(pf.CHECKS)


# --------------------------------------------------------------------------- broken on purpose


def test_noncausal_attention_fails_rope_causality(monkeypatch):
    import jepa_core.model.transformer as tr

    real = tr.F.scaled_dot_product_attention

    def leaky(q, k, v, is_causal=False, **kw):
        return real(q, k, v, is_causal=False, **kw)  # every position sees the future

    monkeypatch.setattr(tr.F, "scaled_dot_product_attention", leaky)
    r = _one("rope_causality")
    assert r.status == "fail"
    assert "attention sees the future" in r.detail and "position 0" in r.detail


def test_missing_detach_fails_grad_barrier(monkeypatch):
    from jepa_core.model.transformer import DecoderOnlyTransformer

    init = DecoderOnlyTransformer.__init__

    def no_barrier(self, *a, **kw):
        init(self, *a, **kw)
        self.grad_barrier = False  # the config asks for a barrier; the model ignores it

    monkeypatch.setattr(DecoderOnlyTransformer, "__init__", no_barrier)
    r = _one("grad_barrier")
    assert r.status == "fail"
    assert "still reaches blocks 0.." in r.detail and "transformer.blocks.0." in r.detail


def test_wrong_ema_direction_fails_ema(monkeypatch):
    from jepa_core.model import JepaLM

    @torch.no_grad()
    def swapped(self, momentum):  # t = (1-m) t + m o: the classic swapped-momentum bug
        for t, o in zip(self.teacher_parameters(), self._online_for_teacher()):
            t.mul_(1 - momentum).add_(o, alpha=momentum)

    monkeypatch.setattr(JepaLM, "update_teacher", swapped)
    r = _one("ema")
    assert r.status == "fail"
    assert "differs from o + m^n (t0 - o)" in r.detail


def test_forgotten_parameter_fails_optimizer_coverage(monkeypatch):
    import jepa_core.model as model_pkg

    real = model_pkg.build_param_groups

    def drop_one(model, ocfg):
        groups = real(model, ocfg)
        groups[2]["params"] = groups[2]["params"][1:]  # lose a norm gain
        return groups

    monkeypatch.setattr(model_pkg, "build_param_groups", drop_one)
    r = _one("optimizer_coverage")
    assert r.status == "fail"
    assert "is in no optimizer group" in r.detail


def test_uniform_horizons_fail_sampling_statistics(monkeypatch):
    import jepa_core.model as model_pkg

    real = model_pkg.sample_anchor_target_pairs

    def ignores_probs(B, T, horizons, probs, P, device, generator=None):
        return real(B, T, horizons, [1 / len(horizons)] * len(horizons), P, device, generator)

    monkeypatch.setattr(model_pkg, "sample_anchor_target_pairs", ignores_probs)
    r = _one("horizon_sampling")
    assert r.status == "fail"
    assert "horizon 2:" in r.detail and "expected 0.5" in r.detail


def test_lossy_checkpoint_fails_roundtrip(monkeypatch):
    import jepa_core.train.checkpoint as ck

    real = ck.model_tensors

    def half(model):  # a writer that silently stores bf16-rounded weights
        return {k: v.to(torch.bfloat16).to(v.dtype) if v.is_floating_point() else v for k, v in real(model).items()}

    monkeypatch.setattr(ck, "model_tensors", half)
    r = _one("checkpoint_roundtrip")
    assert r.status == "fail"
    assert "not bit-identical" in r.detail


def test_exception_in_one_check_is_its_failure_only():
    def boom(ctx):
        raise RuntimeError("kaboom")

    checks = [pf.Check("boom", "raises", boom), *pf.select_checks(["ema"])]
    results = pf.run_preflight(None, checks=checks)
    assert [(r.name, r.status) for r in results] == [("boom", "fail"), ("ema", "pass")]
    assert results[0].detail == "RuntimeError: kaboom"


def test_skip_is_reported_with_reason():
    def not_here(ctx):
        raise pf.Skip("needs a GPU")

    (r,) = pf.run_preflight(None, checks=[pf.Check("gpu_only", "x", not_here)])
    assert (r.status, r.detail) == ("skip", "needs a GPU")


@pytest.mark.parametrize("flags,want", [(frozenset({"avx2", "amx_bf16"}), "bf16 (auto: the CPU has native bf16 matmul (amx_bf16))"),
                                         (frozenset({"avx2"}), "fp32 (auto: the CPU has no native bf16 matmul")])
def test_runtime_check_says_what_auto_chose_and_why(monkeypatch, flags, want):
    import jepa_core.train.device as device

    monkeypatch.setattr(device, "cpu_flags", lambda: flags)
    (r,) = pf.run_preflight("tiny", checks=pf.select_checks(["runtime"]))
    assert r.status == "pass" and f"precision {want}" in r.detail, r.detail


def test_fault_injection_env(monkeypatch):
    monkeypatch.setenv(pf.FAULT_ENV, "ema")
    r = _one("ema")
    assert r.status == "fail" and "injected fault" in r.detail
    monkeypatch.setenv(pf.FAULT_ENV, "emma")
    with pytest.raises(ConfigError, match="emma"):
        _one("ema")


def test_bad_profile_is_a_config_error():
    with pytest.raises(ConfigError, match="No profile named"):
        pf.run_preflight("no-such-profile")


# --------------------------------------------------------------------------- data


def test_data_preparable_from_mirror(mirror):
    r = _one("data")
    assert r.status == "pass" and "mirror" in r.detail and "nothing was downloaded" in r.detail


def test_data_wikitext2_offline_fails_with_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("JEPA_DATA_MIRROR", str(tmp_path))  # an empty mirror
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = _one("data", "wikitext2")
    assert r.status == "fail"
    assert "wikitext-2/train.txt" in r.detail and "HF_HUB_OFFLINE" in r.detail and "--from" in r.detail


def test_data_missing_text_file_fails(tmp_path):
    r = _one("data", "tiny", [f'data.dataset="text:{tmp_path / "nope.txt"}"'])
    assert r.status == "fail" and "nope.txt" in r.detail


# --------------------------------------------------------------------------- memory


def test_memory_estimate_formula_by_hand():
    cfg = load_config("tiny", ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.tap_layer=-1", "jepa.latent_dim=16",
                               "data.vocab_size=300", "data.block_size=40", "train.batch_size=3", "jepa.pairs_per_seq=4"])
    est = estimate_memory(cfg)
    from jepa_core.model import JepaLM

    m = JepaLM.from_config(cfg, 300)
    total = sum(p.numel() for p in m.parameters())
    teacher = sum(p.numel() for p in m.teacher_parameters())
    assert est.params_total == total and est.params_trainable == total - teacher
    assert (est.weights, est.grads, est.optimizer) == (4 * total, 4 * (total - teacher), 8 * (total - teacher))
    # SwiGLU width: ceil(8/3 * 32) = 86 -> rounded up to 128 (ff_round 64)
    h, d, L, T, V, a = 128, 32, 2, 40, 300, 4
    per_token = L * (10 * d + 4 * h) * a + d * a + V * (a + 12) + 4 * d * a
    assert est.activations_per_seq == T * per_token == 40 * 12_096
    assert est.activations_per_batch_extra == 12 * (3 * 4) ** 2
    assert est.total == est.static + 3 * est.activations_per_seq + 12 * 144
    bf = estimate_memory(cfg, precision="bf16")
    assert bf.activations_per_seq == T * (L * (10 * d + 4 * h) * 2 + d * 2 + V * 14 + 4 * d * 2)


def test_memory_verdict_suggests_a_batch_that_fits():
    cfg = load_config("tiny")
    est = estimate_memory(cfg)
    capacity = int((est.static + 5.5 * est.activations_per_seq) / MEMORY_BUDGET_FRACTION)
    fits, detail = memory_verdict(est, cfg, capacity, "test memory")
    assert not fits
    b = est.max_batch_size(MEMORY_BUDGET_FRACTION * capacity)
    assert b == 5  # 5.5 sequences' worth of activations minus the small pair term
    assert f"train.batch_size={b}" in detail and f"grad_accum_steps={math.ceil(cfg.train.batch_size / b)}" in detail
    fits, detail = memory_verdict(est, cfg, 10 * est.total, "test memory")
    assert fits and "of" in detail
    fits, detail = memory_verdict(est, cfg, est.static // 2, "test memory")
    assert not fits and "weights and optimizer alone" in detail


# --------------------------------------------------------------------------- reduced models


def test_reduce_config_caps_big_profiles():
    cfg = load_config("gpt2-small")
    small, notes = pf.reduce_config(cfg)
    assert (small.model.d_model, small.model.n_layers, small.data.block_size, small.jepa.latent_dim) == (128, 4, 128, 64)
    assert 0 <= small.tap_index < 4 and (small.model.d_model // small.model.n_heads) % 2 == 0
    assert any("d_model 768->128" in n for n in notes) and any("block_size 1024->128" in n for n in notes)
    tiny = load_config("tiny")
    same, notes = pf.reduce_config(tiny)
    assert same.model == tiny.model and same.data == tiny.data and notes == [f"batch {tiny.train.batch_size}->4"]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_checkpoint_roundtrip_covers_the_profiles_optimizer(optimizer, monkeypatch):
    r = _one("checkpoint_roundtrip", "tiny", [f"optim.optimizer={optimizer}"])
    assert r.status == "pass", r.detail
    assert ("muon+adamw state tensors" if optimizer == "muon" else "adamw state tensors") in r.detail
    # a writer that drops Muon's momentum (or AdamW's second moment) is caught
    import jepa_core.train.checkpoint as ck

    real = ck.optimizer_tensors
    dropped = "momentum_buffer" if optimizer == "muon" else "exp_avg_sq"

    def lossy(model, opt):
        tensors, meta = real(model, opt)
        meta["param_state"] = {n: [k for k in keys if k != dropped] for n, keys in meta["param_state"].items()}
        return {k: v for k, v in tensors.items() if not k.endswith(dropped)}, meta

    monkeypatch.setattr(ck, "optimizer_tensors", lossy)
    r = _one("checkpoint_roundtrip", "tiny", [f"optim.optimizer={optimizer}"])
    assert r.status == "fail" and dropped in r.detail


def test_forward_backward_on_baseline_profile():
    r = _one("forward_backward", "tiny-baseline")
    assert r.status == "pass" and "(baseline)" in r.detail


# --------------------------------------------------------------------------- CLI


def test_cli_json_and_exit_codes(monkeypatch):
    res = runner.invoke(app, ["preflight", "--json", "-c", "ema", "-c", "profiles"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [c["name"] for c in doc["checks"]] == ["profiles", "ema"]
    assert doc["summary"]["ok"] is True and all(c["status"] == "pass" for c in doc["checks"])
    assert set(doc["checks"][0]) == {"name", "status", "seconds", "detail"}

    monkeypatch.setenv(pf.FAULT_ENV, "ema")
    res = runner.invoke(app, ["preflight", "-c", "ema", "-c", "profiles"], env={"COLUMNS": "160"})
    assert res.exit_code == 1
    assert "injected fault" in res.stdout and "1 check(s) failed" in res.stdout


def test_cli_bad_profile_exit_2():
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "jepa_cli", "preflight", "--profile", "no-such-profile", "-c", "ema"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="120"),
    )
    assert r.returncode == 2
    assert "No profile named" in r.stderr and "Traceback" not in r.stderr + r.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: checks the device memory, bf16 and a step on the GPU")
def test_cuda_checks_on_gpt2_small():
    results = pf.run_preflight("gpt2-small", ["train.device=\"cuda\""], checks=pf.select_checks(["runtime", "forward_backward", "memory", "bf16"]))
    by = {r.name: r for r in results}
    assert all(r.status == "pass" for r in results), [(r.name, r.detail) for r in results]
    assert "cuda" in by["forward_backward"].detail and "memory" in by["memory"].detail


# --------------------------------------------------------------------------- step phases


def test_step_phases_warns_in_benchs_words(monkeypatch):
    """An optimizer-bound split (as bf16 Newton-Schulz gives on a CPU without native bf16) is a
    warning whose text is phase_notes' own, the line `jepa bench` prints."""
    import jepa_core.train.device as device
    from jepa_core.train import phases

    split = {"forward": 20.0, "backward": 30.0, "optimizer": 74.0, "teacher": 1.0}
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(phases.PhaseClock, "per_step", lambda self: dict(split))
    sets = ["optim.muon_ns_dtype=bf16", "train.batch_size=4", "optim.muon_ns_steps=1"]
    r = _one("step_phases", overrides=sets)
    assert r.status == "warn"
    assert r.detail == "; ".join(phases.phase_notes(split, load_config("tiny", sets), torch.device("cpu")))
    assert "--set optim.muon_ns_dtype=auto" in r.detail


def test_step_phases_reports_the_split_and_skips_big_cpu_profiles(monkeypatch):
    from jepa_core.train import phases

    # the steps really run; the split is fixed, since a loaded machine can skew a real one
    split = {"forward": 40.0, "backward": 50.0, "optimizer": 8.0, "teacher": 2.0}
    monkeypatch.setattr(phases.PhaseClock, "per_step", lambda self: dict(split))
    r = _one("step_phases")
    assert r.status == "pass", r.detail
    assert r.detail.startswith("forward 40 ms (40%), backward 50 ms (50%), optimizer 8 ms (8%), teacher 2 ms (2%) per step")
    monkeypatch.setattr(pf_checks, "PHASES_MAX_CPU_FLOPS", 1.0)
    r = _one("step_phases")
    assert r.status == "skip" and "jepa bench --profile tiny" in r.detail
