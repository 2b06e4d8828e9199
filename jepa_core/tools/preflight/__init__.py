"""`jepa preflight`: fast correctness checks to run before a commit or an expensive run.

Each check is a function of a `PreflightContext` (the resolved profile and a
reduced copy of it) that returns a one-line detail on success, raises `Skip`
when it does not apply, and raises anything else to fail. `run_preflight`
runs every check in `CHECKS` in isolation: an exception in one is that check's
failure (its message becomes the detail), never a crash of the others.

Model checks run on a reduced copy of the profile (d_model <= 128,
n_layers <= 4, block_size <= 128, latent_dim <= 64) so they take a second or
two on a CPU whatever the profile; the memory estimate uses the full profile.
Mechanism checks (EMA, grad barrier, RoPE causality) exercise the JEPA model
even for a baseline profile, so the code under them is always checked.

Fault injection, for testing the plumbing end to end: the environment variable
`JEPA_PREFLIGHT_FAULT=name[,name...]` makes the named checks fail with an
"injected fault" message. Tests that break a real mechanism monkeypatch the
model code instead (see tests/test_preflight.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from jepa_core.config import load_config
from jepa_core.errors import ConfigError, JepaError

from .checks import (
    EPOCHS_WARN,
    check_bf16, check_checkpoint_roundtrip, check_data, check_ema, check_epochs, check_forward_backward,
    check_grad_barrier, check_horizon_sampling, check_memory, check_optimizer_coverage, check_profiles,
    check_rope_causality, check_runtime, check_step_phases,
)  # fmt: skip
from .context import DEFAULT_PROFILE, FAULT_ENV, Check, CheckResult, PreflightContext, Skip, Warn, reduce_config

CHECKS: list[Check] = [
    Check("profiles", "every profile on the search path resolves", check_profiles),
    Check("runtime", "the profile's device and precision resolve", check_runtime),
    Check("horizon_sampling", "pair sampling: horizon frequencies, anchors uniform, t+k < T", check_horizon_sampling),
    Check("ema", "EMA momentum schedule and teacher update match the closed form", check_ema),
    Check("rope_causality", "future tokens never change past logits; RoPE is relative", check_rope_causality),
    Check("grad_barrier", "with grad_barrier the LM loss does not reach blocks 0..tap", check_grad_barrier),
    Check("optimizer_coverage", "every trainable parameter in exactly one group, teacher in none", check_optimizer_coverage),
    Check("forward_backward", "one step: finite loss near ln V, finite gradients on every parameter", check_forward_backward),
    Check("checkpoint_roundtrip", "save/load of weights, AdamW, RNG and data position is bitwise", check_checkpoint_roundtrip),
    Check("data", "the profile's data is prepared or preparable (without downloading)", check_data),
    Check("epochs", f"the run plans at most {EPOCHS_WARN:g} passes over its training split (else a warning)", check_epochs),
    Check("memory", "estimated training memory fits the device", check_memory),
    Check("bf16", "a bf16 autocast step is finite and close to fp32", check_bf16),
    Check("step_phases", "no phase of a step (forward, backward, optimizer, teacher) takes an unusual share", check_step_phases),
]


def check_names() -> list[str]:
    return [c.name for c in CHECKS]


def _injected_faults(checks: Sequence[Check]) -> set[str]:
    raw = os.environ.get(FAULT_ENV, "").strip()
    if not raw:
        return set()
    names = {n.strip() for n in raw.split(",") if n.strip()}
    known = {c.name for c in checks}
    unknown = names - known
    if unknown:
        raise ConfigError(
            f"{FAULT_ENV} names unknown check(s): {', '.join(sorted(unknown))}.",
            hint=f"Known checks: {', '.join(c.name for c in checks)}.",
        )
    return names


def make_context(profile: str | None, overrides: Sequence[str] = ()) -> PreflightContext:
    """Resolve the profile (a ConfigError here is a user error, exit 2) and its reduced copies."""
    name = profile or DEFAULT_PROFILE
    cfg = load_config(name, list(overrides))
    small, notes = reduce_config(cfg)
    small_jepa, _ = reduce_config(cfg, baseline=False)
    return PreflightContext(profile=name, overrides=tuple(overrides), cfg=cfg, small=small, small_jepa=small_jepa, reduced=notes)


def run_check(check: Check, ctx: PreflightContext, fault: bool = False) -> CheckResult:
    t0 = time.perf_counter()
    try:
        if fault:
            raise AssertionError(f"injected fault ({FAULT_ENV} names `{check.name}`)")
        detail = check.fn(ctx)
        status = "pass"
    except Skip as e:
        status, detail = "skip", str(e)
    except Warn as e:
        status, detail = "warn", str(e)
    except JepaError as e:
        status, detail = "fail", e.message + (f" {e.hint}" if e.hint else "")
    except AssertionError as e:
        status, detail = "fail", str(e) or "assertion failed"
    except Exception as e:  # any other error is this check's failure, not preflight's crash
        status, detail = "fail", f"{type(e).__name__}: {e}"
    return CheckResult(check.name, status, time.perf_counter() - t0, detail)


def select_checks(names: Sequence[str]) -> list[Check]:
    """The checks named (in registry order); an unknown name is a ConfigError."""
    known = {c.name: c for c in CHECKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"Unknown check(s): {', '.join(unknown)}.", hint=f"Known checks: {', '.join(known)}.")
    wanted = set(names)
    return [c for c in CHECKS if c.name in wanted]


def run_preflight(
    profile: str | None = None,
    overrides: Sequence[str] = (),
    *,
    checks: Sequence[Check] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    on_start: Callable[[Check], None] | None = None,
) -> list[CheckResult]:
    """Run the checks for a profile (default `tiny`); a bad profile raises ConfigError."""
    checks = list(CHECKS if checks is None else checks)
    faults = _injected_faults(checks)
    ctx = make_context(profile, overrides)
    results = []
    for check in checks:
        if on_start:
            on_start(check)
        r = run_check(check, ctx, fault=check.name in faults)
        results.append(r)
        if on_result:
            on_result(r)
    return results


def summarize_results(results: Sequence[CheckResult]) -> dict[str, Any]:
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "warn", "fail", "skip")}
    return {
        "passed": counts["pass"],
        "warned": counts["warn"],
        "failed": counts["fail"],
        "skipped": counts["skip"],
        "seconds": round(sum(r.seconds for r in results), 3),
        "ok": counts["fail"] == 0,
    }
