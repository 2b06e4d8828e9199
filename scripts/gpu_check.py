"""The pipeline behind `scripts/gpu-check`: prove the CUDA path in one call.

Standard library only at import time: on a bare GPU image this runs before
pydantic and friends are installed (from `.whl/`, see `make gpu-wheels`).
Every step runs the project in a child process (the jepa CLI, pytest, torchrun
or `gpu_check_probe.py`), is timed, and records its result and figures; a
failure is recorded and the next step runs. One JSON file and a short Markdown
summary go to $GPU_CHECK_OUT (default `gpu-check-out/`), rewritten after every
step so a run cut short still leaves what it found; the children's output goes
to `gpu-check.log` beside them. Run directories, checkpoints and prepared data
live in a scratch folder ($GPU_CHECK_WORK, default a temp dir), never in the
output folder, which the device tool brings back (8 files at most).

`--cpu` runs the same pipeline on the CPU with the GPU profiles shrunk by
`--set` (d_model 64, two layers, block 128, fp32, no compile), so the check
cannot rot on machines without a GPU; the slow test suite runs it.

What "exact resume" means here (checked by the train-resume steps):
- with deterministic algorithms on (`torch.use_deterministic_algorithms`,
  `CUBLAS_WORKSPACE_CONFIG=:4096:8`, `TORCHINDUCTOR_DETERMINISTIC=1`): every
  logged figure of every resumed step (loss, lm_loss, jepa_loss, grad_norm, lr)
  and the final val_loss are bit-identical to the uninterrupted run's. This
  holds on the CPU in fp32 and is what the check demands on CUDA under bf16 +
  torch.compile too;
- without them (plain `jepa train` on CUDA): the first resumed step's loss,
  computed from the restored weights on the restored batch and pairs, within
  1e-3 relative; the learning rate identical at every step; and the mean
  |loss difference| over the resumed steps at most 10% of the uninterrupted
  run's mean step-to-step |loss change|. A resume that restored the wrong batch,
  pair stream or optimizer state differs by about that step-to-step change,
  while atomics in the backward pass drift far less over a few hundred steps.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "scripts" / "gpu_check_probe.py"
MARK = "GPU_CHECK_JSON "
JSON_NAME, SUMMARY_NAME, LOG_NAME = "gpu-check.json", "gpu-check.md", "gpu-check.log"

# The wheel groups gpu-check installs from .whl/ when their modules are missing:
# (label, top-level distributions, module that proves them, required?)
INSTALL_GROUPS = [
    ("core", ["pydantic", "tomli-w"], ["pydantic", "tomli_w"], True),
    ("tui", ["textual"], ["textual"], False),
    ("datasets", ["datasets"], ["datasets"], False),
]
# Never changed by the install: pip fails instead of replacing the image's copies.
PINNED_FROM_IMAGE = ["torch", "triton", "numpy"]

# The GPU profiles, shrunk for --cpu (same profile files, same code paths, tiny shapes).
CPU_SHRINK = [
    "model.d_model=64", "model.n_layers=2", "model.n_heads=2", "model.tap_layer=-1",
    "data.block_size=128", "jepa.latent_dim=32",
    "train.device=cpu", "train.precision=fp32", "train.compile=false",
]
# batch 4: with 8 pairs per sequence, the rarest horizon (p 0.1) still gets 3.2 pairs, above config's floor of 2;
# gpt2-small's 8192-token vocabulary would make its LM head most of the CPU time
CPU_PROFILE_SETS = {
    "gpt2-small": CPU_SHRINK + ["train.batch_size=4", "data.vocab_size=1024"],
    "shakespeare": CPU_SHRINK + ["train.batch_size=4"],
}


@dataclass
class Plan:
    """Step sizes for one mode (the GPU numbers are sized for < 8 minutes on one H100-class card)."""

    budget_s: float
    min_step_s: float
    profile_sets: dict[str, list[str]]
    bench_args: dict[str, list[str]]
    resume_steps: int  # the uninterrupted run's steps; the checkpoint is at half
    resume_sets: list[str]
    torchrun_steps: int
    caps: dict[str, float]


GPU_PLAN = Plan(
    budget_s=450.0,
    min_step_s=15.0,
    profile_sets={"gpt2-small": [], "shakespeare": []},
    bench_args={"gpt2-small": ["--steps", "10", "--repeats", "3", "--warmup", "2"], "shakespeare": ["--steps", "20", "--repeats", "3", "--warmup", "3"]},
    resume_steps=300,
    # compile on: the GPU profiles' configuration (gpt2-small compiles), so resume is checked under bf16 + compile
    resume_sets=["train.compile=true", "train.sample_tokens=16"],
    torchrun_steps=20,
    caps={"install": 150, "env": 60, "pytest": 180, "preflight": 120, "bench": 240, "resume": 240, "torchrun": 120, "nccl": 120, "memory": 150},
)
CPU_PLAN = Plan(
    budget_s=300.0,
    min_step_s=5.0,
    profile_sets=CPU_PROFILE_SETS,
    bench_args={"gpt2-small": ["--steps", "2", "--repeats", "2", "--warmup", "1"], "shakespeare": ["--steps", "2", "--repeats", "2", "--warmup", "1"]},
    resume_steps=40,
    resume_sets=["train.eval_batches=2", "train.sample_tokens=8"],
    torchrun_steps=6,
    caps={"install": 120, "env": 60, "pytest": 120, "preflight": 90, "bench": 90, "resume": 120, "torchrun": 90, "nccl": 90, "memory": 90},
)

# The first resumed step from identical weights, batch and pairs: forward-pass noise only.
FIRST_STEP_RTOL = 1e-3
# Mean |resumed - uninterrupted| loss over the run's mean step-to-step |loss change|.
DRIFT_OVER_NOISE_MAX = 0.10
COMPARED_KEYS = ("loss", "lm_loss", "jepa_loss", "grad_norm", "lr")
PROFILES = ("gpt2-small", "shakespeare")
STEP_NAMES = (
    "install", "env", *(f"preflight:{p}" for p in PROFILES), "pytest", *(f"bench:{p}" for p in PROFILES),
    "memory", "resume", "torchrun", "nccl", "fsdp", "resume-default",
)


# --------------------------------------------------------------------------- small helpers


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tail(text: str, n: int = 2000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def _gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def _flops(x: float | None) -> str:
    if not x:
        return "-"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if x >= scale:
            return f"{x / scale:.1f} {prefix}FLOP/s"
    return f"{x:.0f} FLOP/s"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def parse_marked_json(stdout: str) -> dict | None:
    """The last `GPU_CHECK_JSON {...}` line a probe printed."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return None


def read_jsonl(path: Path) -> list[dict]:
    """Records of a metrics stream; a half-written last line is skipped, as any reader must."""
    out = []
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def data_mirror() -> Path | None:
    """Where the offline data comes from: $JEPA_DATA_MIRROR, then `.whl/data` (made by
    `make gpu-wheels`, travels with the wheels), then `shared/data` in the checkout, then
    `../shared/data` beside it."""
    env = os.environ.get("JEPA_DATA_MIRROR")
    cands = [Path(env)] if env else []
    cands += [ROOT / ".whl" / "data", ROOT / "shared" / "data", ROOT.parent / "shared" / "data"]
    for c in cands:
        if (c / "tiny_shakespeare" / "input.txt").is_file():
            return c.resolve()
    return None


# --------------------------------------------------------------------------- resume comparison


def compare_resume(full: list[dict], resumed: list[dict], resume_step: int, *, exact: bool) -> dict[str, Any]:
    """Compare the resumed run's records after `resume_step` with the uninterrupted run's.

    `full`: the uninterrupted run's records; `resumed`: the resumed run's (the lines
    copied from before the checkpoint included). Returns figures and `ok` under the
    rule for `exact` (bit-identical) or the tolerance rule (module docstring)."""
    def by_step(recs: list[dict], kind: str, after_resume: bool) -> dict[int, dict]:
        out: dict[int, dict] = {}
        seen_resume = not after_resume
        for r in recs:
            if r.get("type") == "event" and r.get("event") == "resume":
                seen_resume = True
            if seen_resume and r.get("type") == kind and isinstance(r.get("step"), int) and r["step"] > resume_step:
                out[r["step"]] = r
        return out

    u_train, r_train = by_step(full, "train", False), by_step(resumed, "train", True)
    u_eval, r_eval = by_step(full, "eval", False), by_step(resumed, "eval", True)
    steps = sorted(u_train)
    missing = [s for s in steps if s not in r_train]
    fig: dict[str, Any] = {"resume_step": resume_step, "steps_compared": len(steps) - len(missing), "missing_steps": missing[:10]}
    if not steps:
        return dict(fig, ok=False, why="the uninterrupted run logged no train step after the checkpoint")
    if missing:
        return dict(fig, ok=False, why=f"the resumed run lacks {len(missing)} of {len(steps)} steps (first: {missing[0]})")

    max_abs: dict[str, float] = {}
    first_diff: dict[str, int] = {}
    for key in COMPARED_KEYS:
        worst = 0.0
        for s in steps:
            a, b = u_train[s].get(key), r_train[s].get(key)
            if a is None and b is None:
                continue
            if a is None or b is None:
                worst = float("inf")
                first_diff.setdefault(key, s)
                continue
            if a != b:
                first_diff.setdefault(key, s)
                worst = max(worst, abs(float(a) - float(b)))
        max_abs[key] = worst
    fig["max_abs_diff"] = max_abs
    fig["first_differing_step"] = first_diff
    bit_exact = not first_diff
    evals = sorted(set(u_eval) & set(r_eval))
    if evals:
        last = evals[-1]
        fig["val_loss"] = {"step": last, "uninterrupted": u_eval[last].get("val_loss"), "resumed": r_eval[last].get("val_loss")}
        if u_eval[last].get("val_loss") != r_eval[last].get("val_loss"):
            bit_exact = False
    fig["bit_exact"] = bit_exact

    losses_u = [float(u_train[s]["loss"]) for s in steps]
    losses_r = [float(r_train[s]["loss"]) for s in steps]
    first = steps[0]
    fig["first_step"] = {"step": first, "uninterrupted": losses_u[0], "resumed": losses_r[0]}
    first_rel = abs(losses_u[0] - losses_r[0]) / max(abs(losses_u[0]), 1e-12)
    fig["first_step_rel_diff"] = first_rel
    mean_drift = sum(abs(a - b) for a, b in zip(losses_u, losses_r)) / len(steps)
    prev = {s: float(u_train[s - 1]["loss"]) for s in steps if (s - 1) in u_train}
    noise_terms = [abs(float(u_train[s]["loss"]) - prev[s]) for s in steps if s in prev]
    noise = sum(noise_terms) / len(noise_terms) if noise_terms else None
    fig["mean_abs_loss_diff"] = mean_drift
    fig["step_to_step_noise"] = noise
    fig["drift_over_noise"] = (mean_drift / noise) if noise else None
    lr_same = all(u_train[s].get("lr") == r_train[s].get("lr") for s in steps)
    fig["lr_identical"] = lr_same
    within = (
        first_rel <= FIRST_STEP_RTOL
        and lr_same
        and (mean_drift == 0.0 or (noise is not None and mean_drift <= DRIFT_OVER_NOISE_MAX * noise))
    )
    fig["within_tolerance"] = within
    fig["rule"] = "bit-exact" if exact else f"first step rel <= {FIRST_STEP_RTOL:g}, lr identical, drift <= {DRIFT_OVER_NOISE_MAX:g} x noise"
    ok = bit_exact if exact else within
    if not ok:
        if exact:
            k, s = min(first_diff.items(), key=lambda kv: kv[1]) if first_diff else ("val_loss", fig["val_loss"]["step"])
            why = f"not bit-exact: `{k}` first differs at step {s} (max |diff| {max_abs.get(k, float('nan')):.3g})"
        elif not lr_same:
            why = "the learning rate differs after resume (the step count or schedule was not restored)"
        elif first_rel > FIRST_STEP_RTOL:
            why = f"the first resumed step's loss differs by {first_rel:.2e} relative (> {FIRST_STEP_RTOL:g}): different weights, batch or pairs"
        else:
            why = f"mean |loss diff| {mean_drift:.3g} is {fig['drift_over_noise']:.2f} x the step-to-step noise {noise:.3g} (> {DRIFT_OVER_NOISE_MAX:g})"
        fig["why"] = why
    return dict(fig, ok=ok)


# --------------------------------------------------------------------------- the runner


@dataclass
class CmdResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


@dataclass
class StepRecord:
    name: str
    title: str
    status: str = "pending"  # pass | fail | skip
    seconds: float = 0.0
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    output_tail: str = ""
    optional: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        if not d["output_tail"]:
            d.pop("output_tail")
        return d


class StepFailed(Exception):
    """A step's verdict: failed, with a one-line reason (figures are kept)."""


class OutOfTime(Exception):
    """A child was stopped by the run's budget rather than by its step's own cap."""


class NotApplicable(Exception):
    """The step does not apply in this mode (recorded as skip, with the reason)."""


class Checker:
    def __init__(self, cpu: bool, out_dir: Path, work_dir: Path, plan: Plan, only: set[str] | None):
        self.cpu, self.out_dir, self.work, self.plan, self.only = cpu, out_dir, work_dir, plan, only
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + plan.budget_s
        self.started = _now()
        self.steps: list[StepRecord] = []
        self.env_info: dict[str, Any] = {}
        self.install: dict[str, Any] = {}
        self.figs: dict[str, Any] = {}  # cross-step figures (preflight estimates, bench peaks)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.out_dir / LOG_NAME, "w", encoding="utf-8")
        self.child_env = self._child_env()
        self.current: StepRecord | None = None

    # -- environment for every child
    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PYTHONUNBUFFERED"] = "1"
        env["JEPA_HOME"] = str(self.work / "jepa_home")
        env["XDG_CONFIG_HOME"] = str(self.work / "config")  # the shipped profiles, not a user's copies of them
        env["HF_HOME"] = str(self.work / "hf")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("HF_DATASETS_OFFLINE", "1")
        env["TORCHINDUCTOR_CACHE_DIR"] = str(self.work / "inductor")
        mirror = data_mirror()
        if mirror is not None:
            env["JEPA_DATA_MIRROR"] = str(mirror)
        if self.cpu:
            # a shared 2-core box: two OpenMP threads under load spin against each other (10x slower steps)
            env.setdefault("OMP_NUM_THREADS", "1")
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def say(self, msg: str) -> None:
        print(f"[gpu-check {time.perf_counter() - self.t0:6.1f}s] {msg}", flush=True)

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    # -- running children
    def run(self, argv: list[str], cap: float, env_extra: dict[str, str] | None = None) -> CmdResult:
        budget_bound = self.remaining() < cap
        timeout = max(1.0, min(cap, self.remaining()))
        env = dict(self.child_env, **(env_extra or {}))
        shown = " ".join(argv).replace(sys.executable, "python")
        if self.current is not None:
            self.current.commands.append(shown)
        self.log.write(f"\n===== [{self.current.name if self.current else '-'}] $ {shown}\n")
        self.log.flush()
        t0 = time.perf_counter()
        # a session of its own, so a timeout ends torchrun's workers too (by process group id)
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
        secs = time.perf_counter() - t0
        self.log.write(out or "")
        if err:
            self.log.write("----- stderr\n" + err)
        self.log.write(f"----- rc {proc.returncode}{' (timed out after %.0f s)' % timeout if timed_out else ''}, {secs:.1f} s\n")
        self.log.flush()
        if timed_out and budget_bound:
            raise OutOfTime(f"stopped after {secs:.0f} s: the {self.plan.budget_s:.0f} s budget ran out")
        return CmdResult(argv, proc.returncode, out or "", err or "", secs, timed_out)

    def jepa(self, args: list[str], cap: float, deterministic: bool | None = None, env_extra: dict[str, str] | None = None) -> CmdResult:
        if deterministic is None:
            return self.run([sys.executable, "-m", "jepa_cli", *args], cap, env_extra)
        argv = [sys.executable, str(PROBE), "jepa"] + (["--deterministic"] if deterministic else []) + ["--", *args]
        return self.run(argv, cap, env_extra)

    def expect_ok(self, r: CmdResult, what: str) -> None:
        if r.timed_out:
            raise StepFailed(f"{what} timed out after {r.seconds:.0f} s")
        if r.rc != 0:
            text = " ".join((r.stderr.strip() or r.stdout.strip() or "no output").split())
            raise StepFailed(f"{what} exited {r.rc}: {_tail(text, 400)}")

    # -- steps
    def step(self, name: str, title: str, fn: Callable[[StepRecord], None], *, optional: bool = False) -> StepRecord:
        rec = StepRecord(name=name, title=title, optional=optional)
        self.steps.append(rec)
        if self.only is not None and not any(name == o or name.startswith(o + ":") for o in self.only):
            rec.status, rec.detail = "skip", "not selected (--only)"
            return rec
        if self.remaining() < self.plan.min_step_s:
            rec.status, rec.detail = "skip", f"out of time: the {self.plan.budget_s:.0f} s budget is spent"
            rec.figures["out_of_time"] = True
            self.say(f"{name}: skipped (out of time)")
            self.write_outputs()
            return rec
        self.say(f"{name}: {title}")
        self.current = rec
        t0 = time.perf_counter()
        try:
            fn(rec)
            if rec.status == "pending":
                rec.status = "pass"
        except StepFailed as e:
            rec.status, rec.detail = "fail", str(e)
        except OutOfTime as e:
            rec.status, rec.detail = "skip", f"out of time: {e}"
            rec.figures["out_of_time"] = True
        except NotApplicable as e:
            rec.status, rec.detail = "skip", str(e)
        except Exception as e:  # a bug in this script is that step's failure, not the end of the check
            import traceback

            rec.status, rec.detail = "fail", f"gpu-check error: {type(e).__name__}: {e}"
            rec.output_tail = _tail(traceback.format_exc())
        rec.seconds = round(time.perf_counter() - t0, 2)
        self.current = None
        self.say(f"{name}: {rec.status.upper()} in {rec.seconds:.1f} s{(' - ' + rec.detail) if rec.detail else ''}")
        self.write_outputs()
        return rec

    def cap(self, key: str) -> float:
        return self.plan.caps[key]

    def sets_for(self, profile: str) -> list[str]:
        out: list[str] = []
        for s in self.plan.profile_sets.get(profile, []):
            out += ["--set", s]
        return out

    # ------------------------------------------------------------------ 0. install
    def do_install(self, rec: StepRecord) -> None:
        wheels = ROOT / ".whl"
        # one interpreter start for all the import probes (each start costs seconds on a busy box)
        code = "import importlib.util as u\n" + "".join(
            f"print({label!r}, all(u.find_spec(m) for m in {modules!r}))\n" for label, _, modules, _ in INSTALL_GROUPS
        )
        r = self.run([sys.executable, "-c", code], 60)
        present = {line.split()[0] for line in r.stdout.splitlines() if line.endswith(" True")}
        missing = [(label, dists, required) for label, dists, _, required in INSTALL_GROUPS if label not in present]
        rec.figures["missing_before"] = [m[0] for m in missing]
        if not missing:
            rec.detail = "nothing missing: pydantic, tomli-w, textual and datasets import"
            self.install = {"installed": [], "note": rec.detail}
            return
        if not any(wheels.glob("*.whl")):
            if any(req for _, _, req in missing):
                raise StepFailed(f"{', '.join(m[0] for m in missing)} missing and no .whl/ folder: run `make gpu-wheels` where PyPI is reachable and carry .whl/")
            rec.detail = f"optional groups missing ({', '.join(m[0] for m in missing)}) and no .whl/ folder"
            return
        # pin what the image has that must not change (torch above all)
        pins = []
        probe = self.run([sys.executable, "-c", "import importlib.metadata as m\nfor n in %r:\n    try: print(n + '==' + m.version(n))\n    except m.PackageNotFoundError: pass" % PINNED_FROM_IMAGE], 60)
        pins = [l.strip() for l in probe.stdout.splitlines() if "==" in l]
        constraints = self.work / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        rec.figures["pinned"] = pins
        base = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", "--no-index", "--find-links", str(wheels), "-c", str(constraints)]
        done, failed = [], []
        for label, dists, required in missing:
            r = self._pip(base + dists, rec)
            if r.rc == 0:
                done.append(label)
            else:
                failed.append(label)
                rec.figures[f"pip_{label}"] = _tail(r.stderr.strip(), 600)
        # the project's own wheel: never its dependencies (the image's torch stays)
        proj = sorted(wheels.glob("jepa-*.whl"))
        if proj:
            r = self._pip([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", "--no-index", "--no-deps", "--force-reinstall", str(proj[-1])], rec)
            (done if r.rc == 0 else failed).append("jepa wheel")
        rec.figures["installed"], rec.figures["failed"] = done, failed
        self.install = {"installed": done, "failed": failed, "pinned": pins}
        req_failed = [l for l, _, req in missing if req and l in failed]
        if req_failed:
            raise StepFailed(f"installing {', '.join(req_failed)} from .whl/ failed (see figures)")
        rec.detail = f"installed {', '.join(done)}" + (f"; optional group(s) not installable here: {', '.join(failed)}" if failed else "")

    def _pip(self, argv: list[str], rec: StepRecord) -> CmdResult:
        """pip install into the interpreter's environment, or, where that is read-only, into a
        folder of the scratch space put on every child's PYTHONPATH."""
        r = self.run(argv, self.cap("install"))
        if r.rc != 0 and re.search(r"Permission denied|Read-only file system|Errno 13|Errno 30", r.stderr):
            site = self.work / "site"
            rec.figures["target"] = str(site)
            parts = self.child_env["PYTHONPATH"].split(os.pathsep)
            if str(site) not in parts:
                self.child_env["PYTHONPATH"] = os.pathsep.join([parts[0], str(site), *parts[1:]])
            r = self.run(argv + ["--target", str(site), "--upgrade"], self.cap("install"))
        return r

    # ------------------------------------------------------------------ 1. environment
    def do_env(self, rec: StepRecord) -> None:
        r = self.run([sys.executable, str(PROBE), "env"], self.cap("env"))
        self.expect_ok(r, "the environment probe")
        info = parse_marked_json(r.stdout) or {}
        self.env_info = info
        rec.figures = info
        if not self.cpu:
            if not info.get("cuda_available"):
                raise StepFailed("torch sees no CUDA device (torch.cuda.is_available() is False); use --cpu on a machine without a GPU")
            rec.detail = f"{info.get('device_name')}, driver {info.get('driver')}, torch {info.get('torch')} (CUDA {info.get('torch_cuda')})"
        else:
            rec.detail = f"CPU: {info.get('cpu_name')}, torch {info.get('torch')}, {info.get('torch_threads')} thread(s)"
        if data_mirror() is None:
            rec.detail += "; NO data mirror found (JEPA_DATA_MIRROR, .whl/data, shared/data): training steps will fail"

    # ------------------------------------------------------------------ 2. pytest
    def do_pytest(self, rec: StepRecord) -> None:
        junit = self.work / "pytest-gpu.xml"
        gpu_files = _files_with_gpu_tests()
        rec.figures["files"] = gpu_files
        if not gpu_files:
            raise StepFailed("no test file under tests/ holds a gpu-marked test")
        # only the files that hold gpu tests: collecting the whole suite costs more than the tests
        r = self.run(
            [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider", "--continue-on-collection-errors",
             f"--junitxml={junit}", *gpu_files],
            self.cap("pytest"),
        )
        if r.timed_out:
            raise StepFailed(f"pytest timed out after {r.seconds:.0f} s")
        if not junit.is_file():
            raise StepFailed(f"pytest wrote no report (exit {r.rc}): {_tail(r.stdout.strip(), 300)}")
        cases = []
        for tc in ET.parse(junit).getroot().iter("testcase"):
            outcome = "passed"
            msg = ""
            for child in tc:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                    msg = (child.get("message") or "")[:200]
                    break
            cases.append({"test": f"{tc.get('classname')}::{tc.get('name')}", "outcome": outcome, "seconds": float(tc.get("time") or 0), "message": msg})
        counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
        rec.figures.update(counts=counts, tests=cases, exit_code=r.rc)
        # a file holding gpu tests that failed to import hides them: that is a failure
        bad_collect = [c for c in cases if c["outcome"] == "error" and any(c["test"].startswith(f.replace("/", ".").removesuffix(".py")) for f in gpu_files)]
        problems = [c for c in cases if c["outcome"] == "failed" or (c["outcome"] == "error" and c in bad_collect)]
        other_errors = [c for c in cases if c["outcome"] == "error" and c not in bad_collect]
        if other_errors:
            rec.figures["collection_errors_elsewhere"] = [c["test"] for c in other_errors]
        ran = len(cases) - len(other_errors)
        if ran == 0:
            raise StepFailed(f"pytest -m gpu selected no test (exit {r.rc})")
        if problems:
            raise StepFailed(f"{len(problems)} failed: " + "; ".join(f"{c['test']} ({c['message'][:80]})" for c in problems[:4]))
        if not self.cpu:
            if counts["passed"] == 0:
                raise StepFailed("no gpu-marked test ran")
            if counts["skipped"]:
                skipped = [c for c in cases if c["outcome"] == "skipped"]
                raise StepFailed(f"{counts['skipped']} gpu test(s) skipped on the GPU: " + "; ".join(f"{c['test']} ({c['message'][:80]})" for c in skipped[:4]))
            rec.detail = f"{counts['passed']} passed"
        else:
            rec.detail = f"{ran} gpu test(s) collected, {counts['passed']} passed, {counts['skipped']} skipped (no CUDA here)"
        if other_errors:
            rec.detail += f"; {len(other_errors)} collection error(s) in files without gpu tests"

    # ------------------------------------------------------------------ 3. preflight
    def do_preflight(self, rec: StepRecord, profile: str) -> None:
        args = ["preflight", "--profile", profile, "--json", *self.sets_for(profile)]
        r = self.jepa(args, self.cap("preflight"))
        if r.timed_out:
            raise StepFailed(f"preflight timed out after {r.seconds:.0f} s")
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            raise StepFailed(f"preflight printed no JSON (exit {r.rc}): {_tail(r.stderr.strip(), 300)}") from None
        checks = {c["name"]: c for c in doc.get("checks", [])}
        rec.figures.update(summary=doc.get("summary"), checks={n: {"status": c["status"], "seconds": round(c["seconds"], 2), "detail": c["detail"]} for n, c in checks.items()})
        self.figs.setdefault("preflight_memory", {})[profile] = checks.get("memory", {}).get("detail")
        failed = [n for n, c in checks.items() if c["status"] == "fail"]
        if profile == "gpt2-small" and "data" in failed and "cannot be prepared" in checks["data"]["detail"]:
            # gpt2-small trains on WikiText-2, whose train split the offline mirror lacks (shared/data/README.md);
            # nothing here trains it (bench and the memory probe use random tokens), so that alone is expected
            failed.remove("data")
            rec.figures["expected_failure"] = {"data": "WikiText-2's train split is not in the offline mirror"}
        if failed:
            raise StepFailed("failed: " + "; ".join(f"{n}: {checks[n]['detail'][:160]}" for n in failed))
        runtime = checks.get("runtime", {}).get("detail", "")
        if not self.cpu:
            if not runtime.startswith("cuda"):
                raise StepFailed(f"the profile resolved to {runtime.split(' ')[0] or '?'}, not CUDA")
            if checks.get("bf16", {}).get("status") != "pass":
                raise StepFailed(f"bf16 check did not pass: {checks.get('bf16', {}).get('detail', 'absent')}")
        s = doc.get("summary", {})
        rec.detail = f"{s.get('passed')} passed, {s.get('skipped')} skipped in {s.get('wall_s', 0):.1f} s; {runtime}"
        if rec.figures.get("expected_failure"):
            rec.detail += "; data: WikiText-2 train split not offline (expected)"

    # ------------------------------------------------------------------ 4. bench
    def do_bench(self, rec: StepRecord, profile: str) -> None:
        r = self.jepa(["bench", "--profile", profile, "--json", *self.plan.bench_args[profile], *self.sets_for(profile)], self.cap("bench"))
        self.expect_ok(r, "jepa bench")
        try:
            d = json.loads(r.stdout)
        except ValueError:
            raise StepFailed("jepa bench --json printed no JSON") from None
        arms = {}
        for a in d["arms"]:
            arms[a["name"]] = {
                "ms_per_step": round(a["ms_per_step"]["median"], 3),
                "spread": round(a["ms_per_step"]["spread"], 3),
                "tok_per_s": round(a["tok_per_s"], 1),
                "mfu_measured": a["mfu_measured"],
                "mfu_datasheet": a["mfu_datasheet"],
                "compile_s": a["compile_s"],
                "first_step_ms": a["first_step_ms"],
                "peak_mem_bytes": a["peak_mem_bytes"],
                "params_trainable": a["params_trainable"],
            }
        rec.figures = {
            "device": d["device"], "device_name": d["device_name"], "precision": d["precision"], "plan": d["plan"],
            "matmul_peak_flops": d["matmul_peak"]["flops_per_s"], "matmul_dtype": d["matmul_peak"]["dtype"],
            "datasheet_peak_flops": d["datasheet_peak_flops_per_s"], "ratios_vs_baseline": d["ratios_vs_baseline"],
            "shape": d["shape"], "arms": arms, "notes": d.get("notes", []), "wall_s": d.get("wall_s"),
        }
        problems = []
        for name, a in arms.items():
            m = a["mfu_measured"]
            if m is None or not (0 < m < 1.0):
                problems.append(f"{name}: MFU vs the measured peak is {m} (outside (0, 1): a FLOP count or timing bug)")
        if not self.cpu:
            plan = d["plan"]
            if not d["device"].startswith("cuda"):
                problems.append(f"ran on {d['device']}, not CUDA")
            if plan.get("autocast") != "bfloat16":
                problems.append(f"autocast is {plan.get('autocast')}, not bfloat16")
            if not plan.get("fused_adamw"):
                problems.append("fused AdamW is off on CUDA")
            if not plan.get("pin_memory"):
                problems.append("pinned host memory is off on CUDA")
            if plan.get("compile") and any(a["compile_s"] is None for a in arms.values()):
                problems.append("compile is on but no compile time was reported")
            if d["datasheet_peak_flops_per_s"] is None:
                rec.figures["notes"].append(f"{d['device_name']} is not in the datasheet table: no datasheet MFU")
        if problems:
            raise StepFailed("; ".join(problems))
        jepa = arms.get("projector") or next(iter(arms.values()))
        comp = [a["compile_s"] for a in arms.values() if a["compile_s"] is not None]
        rec.detail = (
            f"projector arm {jepa['ms_per_step']:.1f} ms/step, {jepa['tok_per_s']:,.0f} tok/s, MFU {_pct(jepa['mfu_measured'])} of the measured "
            f"{_flops(d['matmul_peak']['flops_per_s'])}" + (f", {_pct(jepa['mfu_datasheet'])} of the datasheet's" if jepa["mfu_datasheet"] else "")
            + (f"; compile {sum(comp):.1f} s over {len(comp)} arms" if comp else "")
        )

    # ------------------------------------------------------------------ 5. train, checkpoint, resume
    def do_resume(self, rec: StepRecord, deterministic: bool) -> None:
        if self.cpu and not deterministic:
            raise NotApplicable("CPU: fp32 CPU kernels are deterministic either way, so the deterministic run covers it")
        profile = "shakespeare"
        n = self.plan.resume_steps
        half = n // 2
        tag = "det" if deterministic else "default"
        full_dir = self.work / "runs" / f"resume-{tag}-full"
        part_dir = self.work / "runs" / f"resume-{tag}-part"
        for d in (full_dir, part_dir):
            shutil.rmtree(d, ignore_errors=True)
        sets = self.sets_for(profile)
        for s in [f"train.max_steps={n}", f"train.checkpoint_every={half}", f"train.eval_every={half}", "log.every=1", "train.keep_last=5", *self.plan.resume_sets]:
            sets += ["--set", s]
        env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "TORCHINDUCTOR_DETERMINISTIC": "1"} if deterministic else {}
        rec.figures["deterministic"] = deterministic
        rec.figures["steps"] = n

        r = self.jepa(["train", "--profile", profile, "--no-tui", "--run-dir", str(full_dir), *sets], self.cap("resume"), deterministic=deterministic, env_extra=env)
        self.expect_ok(r, f"the uninterrupted {n}-step run")
        full = read_jsonl(full_dir / "metrics.jsonl")
        rec.figures["uninterrupted"] = _run_figures(full, r.seconds)
        rec.figures["determinism_warnings"] = _count_det_warnings(r.stderr)

        # the state a run stopped right after its midway checkpoint would leave
        ckpt = _checkpoint_at(full_dir, half)
        if ckpt is None:
            raise StepFailed(f"no checkpoint at step {half} in {full_dir / 'checkpoints'}")
        (part_dir / "checkpoints").mkdir(parents=True)
        for f in ("config.toml", "tokenizer.json"):
            if (full_dir / f).is_file():
                shutil.copyfile(full_dir / f, part_dir / f)
        for p in ckpt:
            shutil.copyfile(p, part_dir / "checkpoints" / p.name)
        with open(part_dir / "metrics.jsonl", "w", encoding="utf-8") as fh:
            for line in (full_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= half:
                        fh.write(line + "\n")
                except ValueError:
                    pass
        weights = next(p for p in ckpt if not p.name.endswith(".state.safetensors"))
        r2 = self.jepa(["train", "--resume", str(part_dir / "checkpoints" / weights.name), "--no-tui"], self.cap("resume"), deterministic=deterministic, env_extra=env)
        self.expect_ok(r2, f"the resume from step {half}")
        resumed = read_jsonl(part_dir / "metrics.jsonl")
        rec.figures["resumed"] = _run_figures(resumed, r2.seconds)
        rec.figures["determinism_warnings"] += _count_det_warnings(r2.stderr)
        end = [x for x in resumed if x.get("event") == "run_end"]
        if not end or end[-1].get("status") != "finished":
            raise StepFailed(f"the resumed run ended {end[-1].get('status') if end else 'without a run_end event'}")
        # bit-exactness can only be demanded when every op had a deterministic kernel
        warned = rec.figures["determinism_warnings"]
        exact = deterministic and warned == 0
        if deterministic and not exact:
            rec.figures["rule_note"] = f"{warned} op(s) without a deterministic implementation ran: the tolerance rule applies"
        cmp = compare_resume(full, resumed, half, exact=exact)
        rec.figures["comparison"] = cmp
        if not cmp["ok"]:
            raise StepFailed(cmp.get("why", "comparison failed"))
        u = rec.figures["uninterrupted"]
        rec.detail = (
            f"{cmp['steps_compared']} resumed steps {'bit-exact' if cmp['bit_exact'] else 'within tolerance (drift/noise %.3f)' % (cmp['drift_over_noise'] or 0)}; "
            f"{u.get('tok_per_s') or 0:,.0f} tok/s" + (f", compile {u['compile_s']:.1f} s" if u.get("compile_s") else "")
        )

    # ------------------------------------------------------------------ 6. torchrun
    def do_torchrun(self, rec: StepRecord) -> None:
        profile = "shakespeare"
        n = self.plan.torchrun_steps
        run_dir = self.work / "runs" / "torchrun"
        shutil.rmtree(run_dir, ignore_errors=True)
        sets = self.sets_for(profile)
        for s in [f"train.max_steps={n}", f"train.eval_every={n}", f"train.checkpoint_every={n}", "log.every=5", "train.sample_tokens=0"]:
            sets += ["--set", s]
        r = self.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "jepa_cli",
                      "train", "--profile", profile, "--no-tui", "--run-dir", str(run_dir), *sets], self.cap("torchrun"))
        self.expect_ok(r, "torchrun ... jepa_cli train")
        recs = read_jsonl(run_dir / "metrics.jsonl")
        end = [x for x in recs if x.get("event") == "run_end"]
        start = [x for x in recs if x.get("event") == "run_start"]
        rec.figures = _run_figures(recs, r.seconds)
        world = start[-1].get("world_size") if start else None
        rec.figures["world_size"] = world
        if not end or end[-1].get("status") != "finished":
            raise StepFailed(f"the run ended {end[-1].get('status') if end else 'without a run_end event'}")
        rec.detail = f"{n} steps under torchrun, status finished, world size {world}"
        if world == 1:
            rec.detail += " (jepa train starts no process group for one rank; the nccl step covers the collectives)"

    def do_nccl(self, rec: StepRecord) -> None:
        profile = "shakespeare"
        r = self.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", str(PROBE), "nccl",
                      "--profile", profile, *self.sets_for(profile)], self.cap("nccl"))
        self.expect_ok(r, "the torchrun collectives probe")
        doc = parse_marked_json(r.stdout)
        if doc is None:
            raise StepFailed("the probe printed no result")
        rec.figures = doc
        want = "gloo" if self.cpu else "nccl"
        if doc["backend"] != want:
            raise StepFailed(f"backend {doc['backend']}, expected {want}")
        bad = [k for k, v in doc["checks"].items() if not v]
        if bad:
            raise StepFailed("failed: " + ", ".join(bad))
        rec.detail = f"{doc['backend']} on {doc['device']}: all_reduce, broadcast, DDP grads = plain grads ({doc['precision']}), {doc['seconds']:.1f} s"

    def do_fsdp(self, rec: StepRecord) -> None:
        """Two GPUs: train.parallel = "fsdp" over both under torchrun, a checkpoint at half, a resume to the end."""
        gpus = int(self.env_info.get("device_count") or 0)
        if self.cpu or gpus < 2:
            raise NotApplicable(
                f"needs 2 GPUs ({'CPU mode' if self.cpu else f'{gpus} here'}); FSDP on CPU with 2 gloo ranks is tests/test_fsdp.py (pytest -m slow)"
            )
        profile = "shakespeare"
        n = self.plan.torchrun_steps
        run_dir = self.work / "runs" / "fsdp"
        shutil.rmtree(run_dir, ignore_errors=True)
        sets = self.sets_for(profile)
        for s in ['train.parallel="fsdp"', 'optim.optimizer="adamw"', f"train.eval_every={n}", f"train.checkpoint_every={n // 2}",
                  "log.every=5", "train.sample_tokens=8"]:
            sets += ["--set", s]
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "jepa_cli", "train", "--no-tui"]
        r = self.run([*launch, "--profile", profile, "--run-dir", str(run_dir), *sets, "--set", f"train.max_steps={n // 2}"], self.cap("torchrun"))
        self.expect_ok(r, "torchrun --nproc-per-node 2 ... train.parallel=fsdp")
        r = self.run([*launch, "--resume", str(run_dir), "--set", f"train.max_steps={n}"], self.cap("torchrun"))
        self.expect_ok(r, "the fsdp resume")
        recs = read_jsonl(run_dir / "metrics.jsonl")
        start = [x for x in recs if x.get("event") == "run_start"]
        end = [x for x in recs if x.get("event") == "run_end"]
        rec.figures = _run_figures(recs, r.seconds)
        if not end or end[-1].get("status") != "finished" or end[-1].get("step") != n:
            raise StepFailed(f"the resumed run ended {end[-1].get('status') if end else 'without a run_end event'}")
        if start[-1].get("parallel") != "fsdp" or start[-1].get("world_size") != 2:
            raise StepFailed(f"run_start says {start[-1].get('parallel')} x{start[-1].get('world_size')}, expected fsdp x2")
        if end[-1].get("ranks_in_sync") is not True:
            raise StepFailed("the ranks' gathered weights (EMA teacher included) differ at the end")
        rec.detail = f"fsdp over 2 GPUs: {n // 2} steps, checkpoint, resume to {n}; ranks in sync"

    # ------------------------------------------------------------------ 7. memory
    def do_memory(self, rec: StepRecord, profiles: tuple[str, ...]) -> None:
        argv = [sys.executable, str(PROBE), "memory"]
        for p in profiles:
            argv += ["--profile", p, "--sets", json.dumps(self.plan.profile_sets.get(p, []))]
        # one process for all profiles: run_bench resets the peak statistics per arm and frees the arm
        r = self.run(argv, self.cap("memory"))
        self.expect_ok(r, "the memory probe")
        docs = parse_marked_json(r.stdout)
        if not docs or set(docs) != set(profiles):
            raise StepFailed("the memory probe printed no result for " + ", ".join(p for p in profiles if p not in (docs or {})))
        details, problems = [], []
        for profile in profiles:
            doc = docs[profile]
            est, peak = doc["estimate"]["total"], doc["peak_bytes"]
            ratio = doc["peak_over_estimate"] = (peak / est) if (peak and est) else None
            doc["preflight_detail"] = self.figs.get("preflight_memory", {}).get(profile)
            rec.figures[profile] = doc
            if doc["peak_kind"] != "cuda_max_allocated":
                details.append(f"{profile}: estimate {_gib(est)}, CPU peak RSS {_gib(peak)} (includes the interpreter and torch: not compared)")
                continue
            limit = 1.0 / doc["budget_fraction"]
            line = f"{profile}: peak {_gib(peak)} vs estimate {_gib(est)} = {ratio:.2f} x"
            if ratio is not None and ratio > limit:
                problems.append(f"{line}, over {limit:.2f} x: a run preflight lets through (estimate <= {doc['budget_fraction']:.0%} of the card) could run out of memory")
            elif ratio is not None and ratio < 0.5:
                line += " (estimate over twice the peak: preflight may turn down batch sizes that fit)"
            details.append(line)
        rec.detail = "; ".join(details)
        if problems:
            raise StepFailed("; ".join(problems))

    # ------------------------------------------------------------------ the pipeline
    def run_all(self) -> int:
        self.say(f"mode {'cpu' if self.cpu else 'gpu'}, budget {self.plan.budget_s:.0f} s, output {self.out_dir}, scratch {self.work}")
        self.step("install", "install what the image lacks from .whl/ (never its torch)", self.do_install)
        self.step("env", "card, driver, torch", self.do_env)
        if not self.cpu and self.env_info and not self.env_info.get("cuda_available"):
            # every later step would fail the same way: say so once
            self.write_outputs(final=True)
            self.log.close()
            print("gpu-check: torch sees no CUDA device here. Run `scripts/gpu-check --cpu` for the CPU stand-in run, "
                  "or check the driver and torch's CUDA build on this machine.", file=sys.stderr)
            return 2
        for p in PROFILES:
            self.step(f"preflight:{p}", f"jepa preflight --profile {p} --json", lambda rec, p=p: self.do_preflight(rec, p))
        self.step("pytest", "pytest -m gpu (the tests that skip without CUDA)", self.do_pytest)
        for p in PROFILES:
            self.step(f"bench:{p}", f"jepa bench --profile {p} --json", lambda rec, p=p: self.do_bench(rec, p))
        # right after bench: gpt2-small's compiled graphs are in the inductor cache by then
        self.step("memory", "peak memory of each profile's training step vs preflight's estimate",
                  lambda rec: self.do_memory(rec, PROFILES))
        self.step("resume", f"train {self.plan.resume_steps} steps, resume from step {self.plan.resume_steps // 2}, compare (deterministic algorithms: bit-exact)",
                  lambda rec: self.do_resume(rec, True))
        # the cheapest steps last, where a run that went long has the least time left
        self.step("torchrun", "torchrun --nproc-per-node 1 -m jepa_cli train", self.do_torchrun)
        self.step("nccl", "torchrun: process group, collectives and a DDP step", self.do_nccl)
        self.step("fsdp", "torchrun --nproc-per-node 2, train.parallel=fsdp: train, checkpoint, resume (2 GPUs)", self.do_fsdp)
        self.step("resume-default", "the same resume without deterministic algorithms (tolerance rule)",
                  lambda rec: self.do_resume(rec, False), optional=True)
        self.write_outputs(final=True)
        self.log.close()
        ok = self.ok()
        self.say(f"{'PASSED' if ok else 'FAILED'} in {time.perf_counter() - self.t0:.0f} s; {self.out_dir / JSON_NAME}, {self.out_dir / SUMMARY_NAME}")
        return 0 if ok else 1

    def ok(self) -> bool:
        for s in self.steps:
            if s.status == "fail":
                return False
            if s.status == "skip" and s.figures.get("out_of_time") and not s.optional:
                return False
            if s.status == "pending":
                return False
        return True

    # ------------------------------------------------------------------ outputs
    def document(self, final: bool) -> dict[str, Any]:
        env = self.env_info
        return {
            "schema": 1,
            "mode": "cpu" if self.cpu else "gpu",
            "started": self.started,
            "finished": _now() if final else None,
            "wall_s": round(time.perf_counter() - self.t0, 1),
            "budget_s": self.plan.budget_s,
            "ok": self.ok() if final else None,
            "card": env.get("device_name") if not self.cpu else None,
            "driver": env.get("driver"),
            "torch": env.get("torch"),
            "torch_cuda": env.get("torch_cuda"),
            "environment": env,
            "install": self.install,
            "data_mirror": self.child_env.get("JEPA_DATA_MIRROR"),
            "resume_rules": {
                "deterministic": "bit-identical loss, lm_loss, jepa_loss, grad_norm, lr at every resumed step and the final val_loss",
                "default": f"first resumed step's loss within {FIRST_STEP_RTOL:g} relative; lr identical; mean |loss diff| <= {DRIFT_OVER_NOISE_MAX:g} x the mean step-to-step |loss change|",
            },
            "steps": [s.to_dict() for s in self.steps],
        }

    def write_outputs(self, final: bool = False) -> None:
        doc = self.document(final)
        tmp = self.out_dir / (JSON_NAME + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(self.out_dir / JSON_NAME)
        (self.out_dir / SUMMARY_NAME).write_text(render_summary(doc), encoding="utf-8")


def _files_with_gpu_tests() -> list[str]:
    out = []
    for p in sorted((ROOT / "tests").glob("test_*.py")):
        if "mark.gpu" in p.read_text(encoding="utf-8", errors="replace"):
            out.append(f"tests/{p.name}")
    return out


def _count_det_warnings(stderr: str) -> int:
    return len(re.findall(r"does not have a deterministic implementation", stderr))


def _checkpoint_at(run_dir: Path, step: int) -> list[Path] | None:
    """The weights and state files of the checkpoint at `step` (names as in docs/architecture.md, "The run directory")."""
    found = []
    for p in sorted((run_dir / "checkpoints").glob("step-*.safetensors")):
        m = re.match(r"step-(\d+)\.(state\.)?safetensors$", p.name)
        if m and int(m.group(1)) == step:
            found.append(p)
    return found if len(found) == 2 else None


def _run_figures(recs: list[dict], wall: float) -> dict[str, Any]:
    train = [r for r in recs if r.get("type") == "train"]
    evals = [r for r in recs if r.get("type") == "eval"]
    start = next((r for r in recs if r.get("event") == "run_start"), {})
    end = [r for r in recs if r.get("event") == "run_end"]
    fig: dict[str, Any] = {"wall_s": round(wall, 2), "device": start.get("device"), "precision": start.get("precision"), "compile": start.get("compile")}
    if train:
        last = train[-1]
        fig.update(last_step=last.get("step"), last_loss=last.get("loss"), tok_per_s=last.get("tok_per_s"), mfu=last.get("mfu"), compile_s=last.get("compile_s"))
    if evals:
        fig.update(val_loss=evals[-1].get("val_loss"), val_bpb=evals[-1].get("val_bpb"))
    if end:
        fig.update(status=end[-1].get("status"), train_time=end[-1].get("train_time"))
    return fig


# --------------------------------------------------------------------------- the Markdown summary


def render_summary(doc: dict[str, Any]) -> str:
    env = doc.get("environment") or {}
    lines = [f"# gpu-check ({doc['mode']}): {'PASSED' if doc.get('ok') else ('FAILED' if doc.get('ok') is False else 'running')}", ""]
    if doc["mode"] == "gpu":
        lines.append(
            f"- card: {env.get('device_name', '?')} ({_gib(env.get('memory_bytes'))}, {env.get('sm_count', '?')} SMs, capability {env.get('capability', '?')})"
        )
        lines.append(f"- driver {env.get('driver', '?')}, torch {env.get('torch', '?')} (CUDA {env.get('torch_cuda', '?')}, NCCL {env.get('nccl', '?')})")
    else:
        lines.append(f"- CPU stand-in run: {env.get('cpu_name', '?')}, torch {env.get('torch', '?')}, {env.get('torch_threads', '?')} thread(s); GPU profiles shrunk with --set")
    lines.append(f"- started {doc['started']}, {doc['wall_s']:.0f} s of a {doc['budget_s']:.0f} s budget")
    lines += ["", "| step | result | time | detail |", "| --- | --- | ---: | --- |"]
    for s in doc["steps"]:
        detail = (s.get("detail") or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} s | {detail[:300]} |")

    bench = [s for s in doc["steps"] if s["name"].startswith("bench:") and s.get("figures", {}).get("arms")]
    if bench:
        lines += ["", "## bench", "", "| profile | arm | ms/step | tok/s | MFU (measured peak) | MFU (datasheet) | compile s |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for s in bench:
            f = s["figures"]
            for name, a in f["arms"].items():
                comp = "-" if a["compile_s"] is None else f"{a['compile_s']:.1f}"
                lines.append(f"| {s['name'][6:]} | {name} | {a['ms_per_step']:.2f} | {a['tok_per_s']:,.0f} | {_pct(a['mfu_measured'])} | {_pct(a['mfu_datasheet'])} | {comp} |")
            ds = f["datasheet_peak_flops"]
            lines.append(f"| {s['name'][6:]} | matmul peak ({f['matmul_dtype']}) | {_flops(f['matmul_peak_flops'])} measured |  |  | {'datasheet ' + _flops(ds) if ds else ''} |  |")

    for s in doc["steps"]:
        c = s.get("figures", {}).get("comparison")
        if s["name"].startswith("resume") and c:
            lines += ["", f"## {s['name']} ({'deterministic algorithms' if s['figures'].get('deterministic') else 'default algorithms'})", ""]
            lines.append(f"- rule: {c.get('rule')}; result: {'ok' if c.get('ok') else 'FAILED: ' + str(c.get('why'))}")
            lines.append(f"- steps {c.get('resume_step', 0) + 1}..{c.get('resume_step', 0) + c.get('steps_compared', 0)} compared; bit-exact: {c.get('bit_exact')}")
            if c.get("first_step"):
                fs = c["first_step"]
                lines.append(f"- first resumed step {fs['step']}: loss {fs['uninterrupted']} vs {fs['resumed']}")
            if c.get("max_abs_diff"):
                lines.append("- max |diff|: " + ", ".join(f"{k} {v:.3g}" for k, v in c["max_abs_diff"].items()))
            if c.get("drift_over_noise") is not None:
                lines.append(f"- mean |loss diff| {c['mean_abs_loss_diff']:.3g}, step-to-step noise {c['step_to_step_noise']:.3g} (ratio {c['drift_over_noise']:.3f})")
            if s["figures"].get("determinism_warnings"):
                lines.append(f"- {s['figures']['determinism_warnings']} warning(s): an op without a deterministic implementation ran")

    mem = [(p, f) for s in doc["steps"] if s["name"] == "memory" for p, f in s.get("figures", {}).items() if isinstance(f, dict) and "estimate" in f]
    if mem:
        lines += ["", "## memory", "", "| profile | arm | batch x block | estimate | peak | peak / estimate |", "| --- | --- | --- | ---: | ---: | ---: |"]
        for p, f in mem:
            ratio = f.get("peak_over_estimate") if f.get("peak_kind") == "cuda_max_allocated" else None
            lines.append(
                f"| {p} | {f['arm']} | {f['batch_size']} x {f['block_size']} | {_gib(f['estimate']['total'])} | {_gib(f['peak_bytes'])} ({f['peak_kind']}) | "
                f"{'-' if ratio is None else '%.2f' % ratio} |"
            )

    fails = [s for s in doc["steps"] if s["status"] == "fail"]
    if fails:
        lines += ["", "## failures", ""]
        for s in fails:
            lines.append(f"- **{s['name']}**: {s['detail']}")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="gpu-check",
        description="Prove the CUDA path in one call: tests, preflight, bench, train + resume, torchrun, memory. "
        "Writes gpu-check.json and gpu-check.md to $GPU_CHECK_OUT (default gpu-check-out/).",
    )
    ap.add_argument("--cpu", action="store_true", help="the same pipeline on the CPU with shrunk stand-ins of the GPU profiles")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: $GPU_CHECK_OUT or gpu-check-out/)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run; later steps are skipped past it (default: 450 GPU, 300 CPU, or $GPU_CHECK_BUDGET_S)")
    ap.add_argument("--only", default=None, help="comma-separated step names or prefixes to run (e.g. env,bench,resume); the rest are skipped")
    ap.add_argument("--keep-work", action="store_true", help="keep the scratch folder (run directories, checkpoints) even when the check passes")
    args = ap.parse_args(argv)

    out = args.out or Path(os.environ.get("GPU_CHECK_OUT") or "gpu-check-out")
    plan = CPU_PLAN if args.cpu else GPU_PLAN
    budget = args.budget if args.budget is not None else os.environ.get("GPU_CHECK_BUDGET_S")
    if budget is not None:
        try:
            plan = dataclasses.replace(plan, budget_s=float(budget))
        except ValueError:
            print(f"gpu-check: the budget must be a number of seconds, got {budget!r}.", file=sys.stderr)
            return 2
        if plan.budget_s <= 0:
            print(f"gpu-check: the budget must be positive, got {budget!r}.", file=sys.stderr)
            return 2
    only = {o.strip() for o in args.only.split(",") if o.strip()} if args.only else None
    unknown = sorted(o for o in (only or ()) if o not in STEP_NAMES and not any(n.startswith(o + ":") for n in STEP_NAMES))
    if unknown:
        print(f"gpu-check: unknown step(s) in --only: {', '.join(unknown)}. Steps: {', '.join(STEP_NAMES)}.", file=sys.stderr)
        return 2
    work_env = os.environ.get("GPU_CHECK_WORK")
    if work_env:
        work = Path(work_env)
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    checker = Checker(args.cpu, out.resolve(), work.resolve(), plan, only)
    try:
        rc = checker.run_all()
    except KeyboardInterrupt:
        checker.write_outputs(final=True)
        print("gpu-check: interrupted; partial results written", file=sys.stderr)
        return 130
    if rc == 0 and not args.keep_work and not work_env:
        shutil.rmtree(work, ignore_errors=True)
    elif not work_env:
        print(f"gpu-check: scratch kept at {work}", flush=True)
    return rc
