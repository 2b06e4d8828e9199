"""scripts/gpu-check: the resume rules, the wheel-set check, the gpu markers, and the
whole pipeline on the CPU (slow), so the check cannot rot before a GPU is lent."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


gc = _load("gpu_check")


# --------------------------------------------------------------------------- the resume rules


def _run(losses: list[float], lrs: list[float] | None = None, start: int = 1, resumed_from: int | None = None) -> list[dict]:
    recs: list[dict] = [{"type": "event", "step": 0, "event": "run_start"}]
    if resumed_from is not None:
        recs.append({"type": "event", "step": resumed_from, "event": "resume"})
    for i, loss in enumerate(losses):
        s = start + i
        lr = lrs[i] if lrs else 1e-3 * s
        recs.append({"type": "train", "step": s, "loss": loss, "lm_loss": loss / 2, "jepa_loss": loss / 3, "grad_norm": 1.0, "lr": lr})
    return recs


# a noisy, slowly falling loss: step-to-step changes of about 0.1
FULL = [5.0 - 0.01 * i + (0.1 if i % 2 else -0.1) for i in range(40)]


def _resumed(losses_after: list[float], lrs_after: list[float] | None = None) -> list[dict]:
    # the lines copied from before the checkpoint, then the resumed run's own
    before = [r for r in _run(FULL[:20]) if r.get("step", 0) <= 20]
    return before + _run(losses_after, lrs_after, start=21, resumed_from=20)[1:]


def test_identical_runs_are_bit_exact_under_both_rules():
    full = _run(FULL)
    for exact in (True, False):
        c = gc.compare_resume(full, _resumed(FULL[20:]), 20, exact=exact)
        assert c["ok"] and c["bit_exact"] and c["steps_compared"] == 20
        assert c["max_abs_diff"]["loss"] == 0.0


def test_small_drift_fails_bit_exact_but_passes_the_tolerance():
    drifted = [x + 1e-6 * (i + 1) for i, x in enumerate(FULL[20:])]
    full = _run(FULL)
    exact = gc.compare_resume(full, _resumed(drifted), 20, exact=True)
    assert not exact["ok"] and not exact["bit_exact"]
    assert exact["first_differing_step"]["loss"] == 21 and "step 21" in exact["why"]
    tol = gc.compare_resume(full, _resumed(drifted), 20, exact=False)
    assert tol["ok"] and tol["within_tolerance"] and tol["drift_over_noise"] < 1e-3


def test_a_resume_on_other_batches_fails_the_tolerance():
    # a wrong data position: the same trend, the noise in the other phase
    shifted = [5.0 - 0.01 * (i + 20) + (-0.1 if (i + 20) % 2 else 0.1) for i in range(20)]
    c = gc.compare_resume(_run(FULL), _resumed(shifted), 20, exact=False)
    assert not c["ok"] and c["first_step_rel_diff"] > gc.FIRST_STEP_RTOL
    assert "first resumed step" in c["why"]


def test_drift_at_noise_level_after_a_matching_first_step_fails():
    late = [FULL[20]] + [x + 0.05 for x in FULL[21:]]
    c = gc.compare_resume(_run(FULL), _resumed(late), 20, exact=False)
    assert c["first_step_rel_diff"] == 0.0
    assert not c["ok"] and c["drift_over_noise"] > gc.DRIFT_OVER_NOISE_MAX and "noise" in c["why"]


def test_a_learning_rate_off_by_one_step_fails_the_tolerance():
    lrs = [1e-3 * (s - 1) for s in range(21, 41)]  # the schedule restarted one step late
    c = gc.compare_resume(_run(FULL), _resumed(FULL[20:], lrs), 20, exact=False)
    assert not c["ok"] and not c["lr_identical"] and "learning rate" in c["why"]


def test_missing_resumed_steps_fail():
    c = gc.compare_resume(_run(FULL), _resumed(FULL[20:30]), 20, exact=False)
    assert not c["ok"] and c["missing_steps"][0] == 31


def test_copied_lines_from_before_the_resume_are_not_compared():
    # a resumed stream that re-logged step 21 before its resume event must not count it
    resumed = _resumed(FULL[20:])
    resumed.insert(1, {"type": "train", "step": 21, "loss": 99.0, "lm_loss": 1, "jepa_loss": 1, "grad_norm": 1, "lr": 1})
    assert gc.compare_resume(_run(FULL), resumed, 20, exact=True)["ok"]


# --------------------------------------------------------------------------- markers and wheels


def _skips_without_cuda(dec: ast.expr) -> bool:
    """`@pytest.mark.skipif(not ...cuda..., ...)`: a test that needs CUDA (not one that avoids it)."""
    if not (isinstance(dec, ast.Call) and "skipif" in ast.unparse(dec.func) and dec.args):
        return False
    cond = dec.args[0]
    return isinstance(cond, ast.UnaryOp) and isinstance(cond.op, ast.Not) and "cuda" in ast.unparse(cond.operand)


def test_every_test_that_skips_without_cuda_is_gpu_marked():
    """`pytest -m gpu` is how gpu-check finds the CUDA tests: one without the mark would
    stay skipped on the GPU machine too."""
    unmarked = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_gpu = "pytestmark" in path.read_text(encoding="utf-8") and any(
            isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets) and "mark.gpu" in ast.unparse(n.value)
            for n in tree.body
        )
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                decs = node.decorator_list
                if any(_skips_without_cuda(d) for d in decs) and not module_gpu and not any("mark.gpu" in ast.unparse(d) for d in decs):
                    unmarked.append(f"{path.name}::{node.name}")
    assert not unmarked, f"skip without CUDA but lack @pytest.mark.gpu: {unmarked}"


def test_wheel_check_reports_an_incomplete_folder(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_wheels.py"), "--check", "--dest", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    for what in ("pydantic", "textual", "tomli-w", "datasets", "the project's own wheel", "tiny_shakespeare"):
        assert what in r.stdout, what


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU this would run the whole GPU check")
def test_the_gpu_run_without_cuda_stops_after_env_with_a_hint(tmp_path):
    env = dict(os.environ, GPU_CHECK_OUT=str(tmp_path / "out"), GPU_CHECK_WORK=str(tmp_path / "work"))
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "--cpu" in r.stderr and "Traceback" not in r.stderr
    doc = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert [s["name"] for s in doc["steps"]] == ["install", "env"]
    assert doc["steps"][1]["status"] == "fail" and "no CUDA" in doc["steps"][1]["detail"]


@pytest.mark.parametrize("args, word", [(["--budget", "soon"], "budget"), (["--only", "benh"], "benh")])
def test_bad_arguments_are_user_errors(tmp_path, args, word):
    r = subprocess.run([sys.executable, str(SCRIPT), "--cpu", *args, "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and word in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- the pipeline on CPU


def _gpu_check(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = tmp_path / "out"
    env = dict(os.environ, GPU_CHECK_OUT=str(out), GPU_CHECK_WORK=str(tmp_path / "work"), **(env_extra or {}))
    # the budget guards a GPU lease; here the suite's timeout does, and a busy box must not skip steps
    env.setdefault("GPU_CHECK_BUDGET_S", "1200")
    r = subprocess.run([sys.executable, str(SCRIPT), "--cpu", *args], capture_output=True, text=True, env=env, timeout=1300)
    doc = json.loads((out / "gpu-check.json").read_text())
    return r, doc, (out / "gpu-check.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(1400)
def test_cpu_pipeline_passes_and_writes_json_and_summary(tmp_path, mirror):
    r, doc, md = _gpu_check(tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert doc["ok"] is True and doc["mode"] == "cpu" and doc["torch"]
    steps = {s["name"]: s for s in doc["steps"]}
    expected = {"install", "env", "preflight:gpt2-small", "preflight:shakespeare", "pytest", "bench:gpt2-small", "bench:shakespeare",
                "resume", "torchrun", "nccl", "fsdp", "memory", "resume-default"}
    assert set(steps) == expected
    for name, s in steps.items():
        if name == "resume-default":
            assert s["status"] == "skip" and "CPU" in s["detail"]
        elif name == "fsdp":  # 2 GPUs only; the CPU run of FSDP is tests/test_fsdp.py
            assert s["status"] == "skip" and "needs 2 GPUs" in s["detail"]
        else:
            assert s["status"] == "pass", (name, s["detail"])
    cmp = steps["resume"]["figures"]["comparison"]
    assert cmp["bit_exact"] and cmp["steps_compared"] == gc.CPU_PLAN.resume_steps // 2
    assert cmp["val_loss"]["uninterrupted"] == cmp["val_loss"]["resumed"]
    for p in ("gpt2-small", "shakespeare"):
        arms = steps[f"bench:{p}"]["figures"]["arms"]
        assert set(arms) == {"baseline", "projector", "encoder"}
        assert all(0 < a["mfu_measured"] < 1 for a in arms.values())
        assert steps["memory"]["figures"][p]["estimate"]["total"] > 0
    assert steps["nccl"]["figures"]["backend"] == "gloo" and steps["nccl"]["figures"]["ok"]
    assert md.startswith("# gpu-check (cpu): PASSED")
    for section in ("| resume | pass |", "## bench", "## resume", "## memory"):
        assert section in md, section
    assert (tmp_path / "out" / "gpu-check.log").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_failing_step_is_recorded_and_the_rest_still_run(tmp_path, mirror):
    r, doc, md = _gpu_check(tmp_path, "--only", "preflight:shakespeare,bench:shakespeare", env_extra={"JEPA_PREFLIGHT_FAULT": "ema"})
    assert r.returncode == 1
    steps = {s["name"]: s for s in doc["steps"]}
    assert steps["preflight:shakespeare"]["status"] == "fail" and "ema" in steps["preflight:shakespeare"]["detail"]
    assert steps["bench:shakespeare"]["status"] == "pass"
    assert steps["resume"]["status"] == "skip" and "--only" in steps["resume"]["detail"]
    assert doc["ok"] is False and "FAILED" in md and "## failures" in md


def test_wheel_check_names_a_project_wheel_without_profiles(tmp_path):
    # a .whl/ folder made before the profiles were package data: that wheel, installed, finds no profile
    with zipfile.ZipFile(tmp_path / "jepa-0.1.0-py3-none-any.whl", "w") as z:
        z.writestr("jepa_core/__init__.py", "")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_wheels.py"), "--check", "--dest", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "carries no profiles" in r.stdout and "the project's own wheel is missing" not in r.stdout
