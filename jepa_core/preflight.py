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

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import Config, load_config, validate
from .errors import ConfigError, JepaError
from .units import fmt_bytes

FAULT_ENV = "JEPA_PREFLIGHT_FAULT"
DEFAULT_PROFILE = "tiny"

# Reduced-model caps: a forward/backward at this size takes well under a second on 2 cores.
CAP_D_MODEL = 128
CAP_LAYERS = 4
CAP_BLOCK = 128
CAP_LATENT = 64
SMALL_BATCH = 4

# The memory estimate may use this fraction of the device's memory (the rest: CUDA
# context, allocator fragmentation, the OS and other processes on a CPU box).
MEMORY_BUDGET_FRACTION = 0.9


class Skip(Exception):
    """Raised by a check that does not apply here; the message says why."""


class Warn(Exception):
    """Raised by a check that passed with a caveat worth reading (preflight still succeeds)."""


# Passes over the training split above which a run is likely to overfit: `tiny` plans 4.8 and
# still improves at its last eval, while a 466 kB text at ~10 passes peaked at about 6.7.
EPOCHS_WARN = 5.0


@dataclass
class CheckResult:
    name: str
    status: str  # "pass" | "warn" | "fail" | "skip"
    seconds: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    name: str
    title: str  # what it verifies, one line (for --help-like listings and the table)
    fn: Callable[["PreflightContext"], str]


@dataclass
class PreflightContext:
    profile: str
    overrides: tuple[str, ...]
    cfg: Config  # the resolved profile
    small: Config  # reduced copy for model checks (the profile's own variant)
    small_jepa: Config  # reduced copy with run_baseline = false (mechanism checks)
    reduced: list[str]  # what was reduced, e.g. ["d_model 768->128", ...]
    _cache: dict[str, Any] = field(default_factory=dict)

    def runtime(self):
        """The profile's resolved device and precision (raises ConfigError like `jepa train` would)."""
        if "runtime" not in self._cache:
            from .train.device import resolve_runtime

            try:
                self._cache["runtime"] = resolve_runtime(self.cfg.train.device, self.cfg.train.precision)
            except JepaError as e:
                self._cache["runtime"] = e
        rt = self._cache["runtime"]
        if isinstance(rt, Exception):
            raise rt
        return rt

    def device(self) -> torch.device:
        """The profile's device, or the CPU when it cannot be resolved (the runtime check says why)."""
        try:
            return self.runtime().device
        except JepaError:
            return torch.device("cpu")

    @property
    def reduced_note(self) -> str:
        return f" (reduced: {', '.join(self.reduced)})" if self.reduced else ""


# --------------------------------------------------------------------------- the reduced config


def _pick_heads(d_model: int, want: int) -> int:
    """The most heads <= want that divide d_model with an even head size (RoPE)."""
    for h in range(min(want, d_model // 2), 0, -1):
        if d_model % h == 0 and (d_model // h) % 2 == 0:
            return h
    return 1


def reduce_config(cfg: Config, *, baseline: bool | None = None) -> tuple[Config, list[str]]:
    """A copy of `cfg` small enough for a quick CPU step, and a list of what changed."""
    raw = cfg.to_dict()
    m, j, d, t = raw["model"], raw["jepa"], raw["data"], raw["train"]
    notes: list[str] = []
    if m["d_model"] > CAP_D_MODEL:
        notes.append(f"d_model {m['d_model']}->{CAP_D_MODEL}")
        m["d_model"] = CAP_D_MODEL
    heads = _pick_heads(m["d_model"], m["n_heads"])
    if heads != m["n_heads"]:
        notes.append(f"n_heads {m['n_heads']}->{heads}")
        m["n_heads"] = heads
    if m["n_layers"] > CAP_LAYERS:
        L, tl = m["n_layers"], cfg.tap_index
        # keep the tap at the same relative depth
        new_tl = round(tl * (CAP_LAYERS - 1) / max(1, L - 1))
        notes.append(f"n_layers {L}->{CAP_LAYERS} (tap block {tl}->{new_tl})")
        m["n_layers"], m["tap_layer"] = CAP_LAYERS, new_tl
    block = max(min(d["block_size"], CAP_BLOCK), max(j["horizons"]) + 1)
    if block != d["block_size"]:
        notes.append(f"block_size {d['block_size']}->{block}")
        d["block_size"] = block
    if j["latent_dim"] > CAP_LATENT:
        notes.append(f"latent_dim {j['latent_dim']}->{CAP_LATENT}")
        j["latent_dim"] = CAP_LATENT
    if t["batch_size"] > SMALL_BATCH:
        notes.append(f"batch {t['batch_size']}->{SMALL_BATCH}")
        t["batch_size"] = SMALL_BATCH
    if baseline is not None:
        j["run_baseline"] = baseline
    return validate(raw, source="<reduced profile>"), notes


def _with(cfg: Config, **changes: Any) -> Config:
    """A copy of cfg with dotted-key changes, e.g. _with(cfg, **{"model.grad_barrier": True})."""
    raw = cfg.to_dict()
    for key, value in changes.items():
        sec, k = key.split(".")
        raw[sec][k] = value
    return validate(raw, source="<preflight variant>")


def _build(cfg: Config, seed: int = 0, device: torch.device | str = "cpu"):
    from .model import JepaLM

    torch.manual_seed(seed)
    return JepaLM.from_config(cfg, cfg.data.vocab_size).to(device)


def _tokens(cfg: Config, batch: int, seed: int, device: torch.device | str = "cpu", length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = length or cfg.data.block_size
    ids = torch.randint(0, cfg.data.vocab_size, (batch, T + 1), generator=g)
    return ids[:, :-1].to(device), ids[:, 1:].to(device)


def _fmt_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


# --------------------------------------------------------------------------- checks


def check_profiles(ctx: PreflightContext) -> str:
    from .profiles import list_profiles

    found = list_profiles()
    bad = []
    for name in found:
        try:
            load_config(name)
        except JepaError as e:
            bad.append(f"{name}: {e.message}")
    if bad:
        raise AssertionError(f"{len(bad)} of {len(found)} profiles do not resolve: " + "; ".join(bad))
    return f"{len(found)} profiles resolve: {', '.join(found)}"


def check_horizon_sampling(ctx: PreflightContext) -> str:
    from .model import sample_anchor_target_pairs

    j, T = ctx.cfg.jepa, ctx.cfg.data.block_size
    B, P = 2000, 50
    N = B * P
    gen = torch.Generator().manual_seed(1234)
    pairs = sample_anchor_target_pairs(B, T, j.horizons, j.horizon_probs, P, "cpu", generator=gen)
    b, t, k_idx, k = pairs
    if not torch.equal(b, torch.arange(B).repeat_interleave(P)):
        raise AssertionError("sequence indices are not arange(B).repeat_interleave(pairs_per_seq)")
    horizons = torch.tensor(j.horizons)
    if not torch.equal(k, horizons[k_idx]):
        raise AssertionError("horizon values do not match their indices")
    if int(t.min()) < 0 or int(pairs.tpos.max()) > T - 1:
        raise AssertionError(f"positions out of range: t min {int(t.min())}, t+k max {int(pairs.tpos.max())} (block {T})")
    worst = 0.0
    for i, (h, p) in enumerate(zip(j.horizons, j.horizon_probs)):
        sel = k_idx == i
        n_h = int(sel.sum())
        # a binomial count: 5 standard deviations (+1 for p = 0 or 1) never trips by chance
        sd = math.sqrt(N * p * (1 - p))
        z = abs(n_h - N * p) / sd if sd > 0 else (0.0 if n_h == round(N * p) else math.inf)
        if abs(n_h - N * p) > 5 * sd + 1:
            raise AssertionError(f"horizon {h}: {n_h}/{N} = {n_h / N:.4f} sampled, expected {p} ({z:.1f} sd off)")
        worst = max(worst, z)
        if n_h == 0:
            continue
        span = T - h  # t ~ U{0 .. T-1-h}
        th = t[sel].double()
        if int(th.max()) > span - 1:
            raise AssertionError(f"horizon {h}: anchor {int(th.max())} > T-1-k = {span - 1}")
        # the mean of U{0..span-1} is (span-1)/2 with variance (span^2-1)/12
        sd_mean = math.sqrt((span * span - 1) / 12 / n_h) if span > 1 else 0.0
        if abs(float(th.mean()) - (span - 1) / 2) > 5 * sd_mean + 1e-9:
            raise AssertionError(f"horizon {h}: mean anchor {float(th.mean()):.2f}, expected {(span - 1) / 2:.2f} for U{{0..{span - 1}}}")
    return f"{N:,} pairs over horizons {j.horizons}: frequencies within {worst:.1f} sd of {j.horizon_probs}, 0 <= t, t+k < {T}"


def check_ema(ctx: PreflightContext) -> str:
    from .model import ema_momentum_at

    j = ctx.cfg.jepa
    S = j.ema_schedule_steps or ctx.cfg.train.max_steps
    if j.ema_schedule == "constant":
        for step in (0, S // 2, S):
            if ema_momentum_at(j, step, S) != j.ema_momentum:
                raise AssertionError(f"constant schedule gives {ema_momentum_at(j, step, S)} at step {step}, expected {j.ema_momentum}")
        sched = f"constant m={j.ema_momentum}"
    else:
        m0, m1 = j.ema_momentum, j.ema_momentum_final
        # the cosine schedule at 0, S/2, S and past S: m0, (m0+m1)/2, m1, m1
        want = {0: m0, S: m1, 2 * S: m1}
        if S % 2 == 0:
            want[S // 2] = (m0 + m1) / 2
        for step, m in want.items():
            got = ema_momentum_at(j, step, ctx.cfg.train.max_steps)
            if not math.isclose(got, m, rel_tol=0, abs_tol=1e-12):
                raise AssertionError(f"cosine schedule gives {got} at step {step}, expected {m}")
        sched = f"cosine {m0}->{m1} over {S} steps"

    model = _build(ctx.small_jepa, seed=1)
    teacher = model.teacher_parameters()
    online = model._online_for_teacher()
    if not teacher or any(p.requires_grad for p in teacher):
        raise AssertionError("the EMA teacher is missing or has trainable parameters")
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for tp, op in zip(teacher, online):
            tp.copy_(torch.randn(tp.shape, generator=g))
            op.copy_(torch.randn(op.shape, generator=g))
    t0 = [p.detach().double().clone() for p in teacher]
    o = [p.detach().double().clone() for p in online]
    m, n = 0.9, 10  # m^n = 0.349: the update must be applied exactly n times, with the right sign
    for _ in range(n):
        model.update_teacher(m)
    worst = 0.0
    for name_pair, tp, a, b in zip(model._ema_pairs, teacher, t0, o):
        expected = b + (m**n) * (a - b)  # t_n = o + m^n (t_0 - o) with o held fixed
        err = float((tp.detach().double() - expected).abs().max())
        worst = max(worst, err)
        if err > 1e-5:
            raise AssertionError(f"{name_pair[0]} after {n} updates differs from o + m^n (t0 - o) by {err:.2e}")
    return f"{sched}; teacher after {n} updates = o + m^n (t0 - o) within {worst:.1e} ({len(teacher)} tensors)"


def check_rope_causality(ctx: PreflightContext) -> str:
    from .model.transformer import RotaryEmbedding

    cfg = ctx.small_jepa
    model = _build(cfg, seed=3).eval()
    B, T = 2, cfg.data.block_size
    x, _ = _tokens(cfg, B, seed=4)
    s = T // 2
    x2 = x.clone()
    g = torch.Generator().manual_seed(5)
    x2[:, s:] = (x[:, s:] + 1 + torch.randint(0, cfg.data.vocab_size - 1, x[:, s:].shape, generator=g)) % cfg.data.vocab_size
    with torch.no_grad():
        h1, tap1 = model.transformer(x)
        h2, tap2 = model.transformer(x2)
        l1, l2 = model.transformer.logits(h1), model.transformer.logits(h2)
        prefix = model.lm_logits(x[:, :s])
    if not torch.equal(l1[:, :s], l2[:, :s]):
        diff = (l1[:, :s] - l2[:, :s]).abs().amax(dim=(0, 2))
        first = int(torch.nonzero(diff)[0])
        raise AssertionError(f"changing tokens {s}..{T - 1} changed the logits at position {first} (max |diff| {float(diff.max()):.2e}): attention sees the future")
    if tap1 is not None and not torch.equal(tap1[:, :s], tap2[:, :s]):
        raise AssertionError(f"changing tokens {s}..{T - 1} changed the tap activations before position {s}")
    if torch.equal(l1[:, s:], l2[:, s:]):
        raise AssertionError("changing tokens left the later logits unchanged too: the model ignores its input")
    # a shorter sequence slices the RoPE tables: its logits match the prefix of the full run
    pre_err = float((prefix - l1[:, :s]).abs().max())
    if pre_err > 1e-4:
        raise AssertionError(f"a {s}-token input gives logits {pre_err:.2e} away from the first {s} of a {T}-token input (RoPE tables)")
    # RoPE scores depend on relative position only: <R_i q, R_j k> = <R_{i+d} q, R_{j+d} k>
    hd = cfg.model.d_model // cfg.model.n_heads
    rope = RotaryEmbedding(hd, T, cfg.model.rope_base)
    gen = torch.Generator().manual_seed(6)
    q = torch.randn(1, 1, hd, dtype=torch.float64, generator=gen).expand(1, T, hd).contiguous()
    k = torch.randn(1, 1, hd, dtype=torch.float64, generator=gen).expand(1, T, hd).contiguous()
    rq, rk = rope(q)[0], rope(k)[0]
    i, j, dlt = 3, 1, T // 3
    a, b = float(rq[i] @ rk[j]), float(rq[i + dlt] @ rk[j + dlt])
    if not math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5):
        raise AssertionError(f"RoPE score at ({i},{j}) is {a:.6f} but {b:.6f} at ({i + dlt},{j + dlt}): not relative")
    return f"past logits bit-identical when tokens {s}..{T - 1} change; prefix run within {pre_err:.1e}; RoPE scores relative"


def _block_grads(model, upto: int) -> list[tuple[str, torch.Tensor | None]]:
    tr = model.transformer
    out = []
    for i in range(upto + 1):
        out += [(f"transformer.blocks.{i}.{n}", p.grad) for n, p in tr.blocks[i].named_parameters()]
    if not tr.weight_tying:
        out.append(("transformer.tok_emb.weight", tr.tok_emb.weight.grad))
    return out


def check_grad_barrier(ctx: PreflightContext) -> str:
    cfg = _with(ctx.small_jepa, **{"model.grad_barrier": True, "model.dropout": 0.0})
    tl = cfg.tap_index
    x, y = _tokens(cfg, 2, seed=7)

    model = _build(cfg, seed=8).train()
    out = model(x, y, 1.0)
    out.lm_loss.backward()
    leaked = [n for n, g in _block_grads(model, tl) if g is not None and bool(g.abs().max() > 0)]
    if leaked:
        raise AssertionError(f"with grad_barrier the LM loss still reaches blocks 0..{tl}: {', '.join(leaked[:4])}")
    n_tensors = len(_block_grads(model, tl))

    model.zero_grad(set_to_none=True)
    out = model(x, y, 1.0)
    assert out.jepa_loss is not None
    out.jepa_loss.backward()
    reached = [n for n, g in _block_grads(model, tl) if g is not None and bool(g.abs().max() > 0)]
    if not reached:
        raise AssertionError(f"with grad_barrier the JEPA loss does not reach blocks 0..{tl} either: they would never learn")

    # control: without the barrier the same LM loss does reach them, so the check above can fail
    free = _build(_with(cfg, **{"model.grad_barrier": False}), seed=8).train()
    free(x, y, 1.0).lm_loss.backward()
    if not any(g is not None and bool(g.abs().max() > 0) for _, g in _block_grads(free, tl)):
        raise AssertionError(f"without grad_barrier the LM loss does not reach blocks 0..{tl}: the check cannot tell")
    return f"LM-loss grads on blocks 0..{tl} exactly 0 with the barrier ({n_tensors} tensors), nonzero without; JEPA grads reach {len(reached)}"


def check_optimizer_coverage(ctx: PreflightContext) -> str:
    from .model import build_param_groups, check_param_groups

    model = _build(ctx.small, seed=9)
    groups = build_param_groups(model, ctx.cfg.optim)
    try:
        check_param_groups(model, groups)
    except ValueError as e:
        raise AssertionError(str(e)) from None
    # an independent count: group membership vs the model's own parameter list
    teacher = {id(p) for p in model.teacher_parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad and id(p) not in teacher}
    in_groups = [id(p) for g in groups for p in g["params"]]
    if len(in_groups) != len(set(in_groups)):
        raise AssertionError("a parameter is in more than one group")
    if set(in_groups) != trainable:
        raise AssertionError(f"{len(trainable - set(in_groups))} trainable parameters in no group, {len(set(in_groups) - trainable)} non-trainable in a group")
    if teacher & set(in_groups):
        raise AssertionError("an EMA teacher parameter is in an optimizer group")
    torch.optim.AdamW(groups)  # rejects duplicates and bad group options too
    sizes = ", ".join(f"{g['name']} {len(g['params'])}" for g in groups)
    return f"{len(in_groups)} trainable tensors each in one group ({sizes}); {len(teacher)} teacher tensors in none"


def check_forward_backward(ctx: PreflightContext) -> str:
    cfg = ctx.small
    device = ctx.device()
    model = _build(cfg, seed=10, device=device).train()
    x, y = _tokens(cfg, cfg.train.batch_size, seed=11, device=device)
    t0 = time.perf_counter()
    out = model(x, y, 1.0)
    out.loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    loss, lm = out.loss.item(), out.lm_loss.item()
    if not math.isfinite(loss):
        raise AssertionError(f"loss is {loss}")
    ln_v = math.log(cfg.data.vocab_size)
    if abs(lm - ln_v) > 1.0:
        raise AssertionError(f"initial LM loss {lm:.3f} is far from ln(vocab) = {ln_v:.3f}: the init or the logits are off")
    missing, bad = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            missing.append(n)
        elif not bool(torch.isfinite(p.grad).all()):
            bad.append(n)
    if bad:
        raise AssertionError(f"non-finite gradients in {', '.join(bad[:4])}")
    if missing:
        raise AssertionError(f"trainable parameters with no gradient (never trained): {', '.join(missing[:4])}")
    jepa = f", jepa {out.jepa_loss.item():.3f}" if out.jepa_loss is not None else " (baseline)"
    return f"loss {loss:.3f} (lm {lm:.3f} ~ ln V {ln_v:.2f}{jepa}), grads finite, {dt * 1000:.0f} ms on {device}{ctx.reduced_note}"


def check_checkpoint_roundtrip(ctx: PreflightContext) -> str:
    """One real training step (`train_step`, the loop's own, with the profile's optimizer), then a
    save and a load into a fresh model and optimizer: everything must come back bit-identical."""
    from .config import config_to_toml
    from .train.checkpoint import CheckpointMeta, load_state_into, load_weights_into, save_checkpoint
    from .train.optimizer import optimizer_algorithm
    from .train.step import build_trainee, plan_step, train_step

    cfg = _with(ctx.small, **{"train.grad_accum_steps": 1})
    cpu = torch.device("cpu")
    plan = plan_step(cfg, cpu, "fp32", compile=False)
    tr = build_trainee(cfg, cfg.data.vocab_size, cpu, plan, seed=12)
    model, opt = tr.model, tr.optimizer
    x, y = _tokens(cfg, 2, seed=13)
    train_step(tr, lambda: (x, y), 1, cfg.train.max_steps)
    model.update_teacher(0.5)  # teacher and online now differ whatever the momentum schedule says
    data_state = {"version": 1, "batches_drawn": 7, "note": "preflight"}
    meta = CheckpointMeta(config_to_toml(cfg), cfg.name, step=1, tokens_seen=32, tokenizer_sha256="0" * 64, metrics={"val_loss": 1.5}, weight_tying=cfg.model.weight_tying)
    rng_before = torch.get_rng_state().clone()
    with tempfile.TemporaryDirectory(prefix="jepa-preflight-") as tmp:
        ref = save_checkpoint(Path(tmp), model, opt, meta, data_state, keep_last=1)
        torch.rand(100)  # move the RNG so restoring it is observable
        fresh_tr = build_trainee(cfg, cfg.data.vocab_size, cpu, plan, seed=99)
        fresh, fresh_opt = fresh_tr.model, fresh_tr.optimizer
        before = {k: v.detach().clone() for k, v in fresh.state_dict().items()}
        load_weights_into(fresh, ref.weights)
        st = load_state_into(fresh, fresh_opt, ref.state)
        size = ref.weights.stat().st_size + ref.state.stat().st_size
    # compared with the live state dicts, not through the writer's own helpers
    saved, loaded = model.state_dict(), fresh.state_dict()
    if not any(not torch.equal(before[k], saved[k]) for k in saved):
        raise AssertionError("a freshly built model already equals the saved one: the check cannot tell")
    if set(saved) != set(loaded):
        raise AssertionError(f"tensor names differ: {sorted(set(saved) ^ set(loaded))[:4]}")
    for k in saved:
        if saved[k].dtype != loaded[k].dtype or not torch.equal(saved[k], loaded[k]):
            raise AssertionError(f"{k} is not bit-identical after save/load")
    names = {id(p): n for n, p in fresh.named_parameters()}
    src = dict(model.named_parameters())
    n_moments = 0
    for g in fresh_opt.param_groups:
        for p in g["params"]:
            n = names[id(p)]
            a, b = opt.state[src[n]], fresh_opt.state.get(p, {})
            for key in (k for k, v in a.items() if k != "step" and torch.is_tensor(v)):
                if key not in b or not torch.equal(a[key].cpu(), b[key].cpu()):
                    raise AssertionError(f"optimizer {key} of {n} is not bit-identical after save/load")
                n_moments += 1
            if "step" in a and float(a["step"]) != float(b.get("step", -1)):
                raise AssertionError(f"optimizer step of {n}: {float(a['step'])} saved, {float(b.get('step', -1))} loaded")
    if not torch.equal(torch.get_rng_state(), rng_before):
        raise AssertionError("the torch RNG state was not restored")
    if st["data"] != data_state or st["step"] != 1 or st["tokens_seen"] != 32:
        raise AssertionError(f"data position/step not restored: {st}")
    if n_moments == 0:
        raise AssertionError("the optimizer holds no state after a step: the check cannot tell")
    return (
        f"{len(saved)} weight tensors, {n_moments} {optimizer_algorithm(opt)} state tensors, RNG and data position "
        f"bit-identical ({fmt_bytes(size)})"
    )


def check_epochs(ctx: PreflightContext) -> str:
    """How many passes over its training split the profile plans; a warning past EPOCHS_WARN."""
    from .data import CacheMiss, load_prepared

    cfg = ctx.cfg
    try:
        n = len(load_prepared(cfg.data).train_tokens)
    except (CacheMiss, JepaError):
        raise Skip("the data is not prepared yet, so its size is unknown (`jepa data prepare` first)") from None
    tc = cfg.train
    tokens = tc.max_steps * tc.batch_size * tc.grad_accum_steps * cfg.data.block_size
    epochs = tokens / max(n, 1)
    plan = f"{tc.max_steps:,} steps x {tokens // tc.max_steps:,} tokens = {epochs:.1f} passes over {n:,} training tokens"
    if epochs > EPOCHS_WARN:
        raise Warn(
            f"{plan}: more than {EPOCHS_WARN:g}, so expect overfitting; the best checkpoint is kept "
            "(train.keep_best), or lower train.max_steps, set train.early_stop_evals, or train on more data"
        )
    return plan


def check_data(ctx: PreflightContext) -> str:
    from .data import CacheMiss, load_prepared, resolve_dataset
    from .data.registry import TextSpec
    from .data.sources import locate

    dcfg = ctx.cfg.data
    try:
        prepared = load_prepared(dcfg)
        return f"`{dcfg.dataset}` prepared: {len(prepared.train_tokens):,} train / {len(prepared.val_tokens):,} val tokens, vocab {prepared.vocab_size} ({prepared.dir})"
    except CacheMiss:
        pass
    spec = resolve_dataset(dcfg.dataset)
    if isinstance(spec, TextSpec):
        p = spec.path
        if p.is_file() or (p.is_dir() and any(p.rglob("*.txt"))):
            return f"not prepared yet; preparable from {p} (`jepa train` prepares it)"
        raise AssertionError(f"{p} does not exist or holds no .txt files")
    where = locate(spec)
    missing = {split: w for split, (origin, w) in where.items() if origin == "missing"}
    if missing:
        raise AssertionError(
            f"`{spec.name}` cannot be prepared here: " + "; ".join(f"{s}: {w}" for s, w in missing.items())
            + f". Provide it with `jepa data prepare {spec.name} --from PATH`, a mirror folder holding "
            + " and ".join(spec.files()[s].mirror_path for s in missing)
            + " (JEPA_DATA_MIRROR), or network access"
        )
    found = "; ".join(f"{s} from {origin} {w}" for s, (origin, w) in where.items())
    return f"not prepared yet; preparable ({found}); nothing was downloaded"


@dataclass(frozen=True)
class MemoryEstimate:
    """Training memory, in bytes, by the formula in `estimate_memory`."""

    params_total: int
    params_trainable: int
    weights: int
    grads: int
    optimizer: int
    activations_per_seq: int
    activations_per_batch_extra: int
    batch_size: int

    @property
    def static(self) -> int:
        return self.weights + self.grads + self.optimizer

    @property
    def activations(self) -> int:
        return self.batch_size * self.activations_per_seq + self.activations_per_batch_extra

    @property
    def total(self) -> int:
        return self.static + self.activations

    def max_batch_size(self, budget: float) -> int:
        """The largest micro-batch whose estimate fits `budget` bytes (0 when none does)."""
        extra_per_seq = self.activations_per_batch_extra / max(1, self.batch_size**2)
        lo, hi = 0, max(1, self.batch_size) * 1024
        # the pair term grows as B^2, so search instead of solving
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.static + mid * self.activations_per_seq + extra_per_seq * mid * mid <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo


def estimate_memory(cfg: Config, vocab_size: int | None = None, precision: str = "fp32") -> MemoryEstimate:
    """Training memory of one rank, by formula (an estimate, meant to catch gross misfits).

    P_total: every parameter incl. the EMA teacher; P_train: trainable ones
    (exact counts, from the model built on the meta device: no memory used).
      weights    = 4 * P_total            fp32 master weights (autocast keeps them fp32)
      grads      = 4 * P_train
      optimizer  = 8 * P_train            AdamW exp_avg and exp_avg_sq, fp32
      activations per sequence = T * (L * (10 d + 4 h) * a + [JEPA] 4 d * a + d * a + V * (a + 12))
        saved per block and token: ~10 d (norm inputs/outputs, q/k/v, attention
        output, projections) + 4 h (SwiGLU u, v, silu(u), product), h the SwiGLU
        width; 4 d for the lm_bridge; d for the embedding output; the logits in
        the compute dtype plus their fp32 copy, log-softmax and gradient (3 x 4 bytes);
        a = 2 bytes under bf16, 4 under fp32. SDPA is assumed flash/memory-efficient
        (no T^2 attention matrix stored).
      pairs      = 12 * (B * P)^2 per micro-batch: the InfoNCE logits, mask and softmax.
    total = weights + grads + optimizer + B * activations_per_sequence + pairs
    """
    from .model import JepaLM
    from .model.transformer import swiglu_hidden

    V = vocab_size or cfg.data.vocab_size
    with torch.device("meta"):
        model = JepaLM.from_config(cfg, V)
    p_total = sum(p.numel() for p in model.parameters())
    teacher = {id(p) for p in model.teacher_parameters()}
    p_train = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in teacher)
    m = cfg.model
    d, L, T, B = m.d_model, m.n_layers, cfg.data.block_size, cfg.train.batch_size
    h = swiglu_hidden(d, m.ff_multiplier, m.ff_round)
    a = 2 if precision == "bf16" else 4
    per_token = L * (10 * d + 4 * h) * a + d * a + V * (a + 12)
    pairs = 0
    if not cfg.jepa.run_baseline:
        per_token += 4 * d * a if m.lm_bridge else 0
        n_pairs = B * cfg.jepa.pairs_per_seq
        pairs = 12 * n_pairs * n_pairs
    return MemoryEstimate(
        params_total=p_total,
        params_trainable=p_train,
        weights=4 * p_total,
        grads=4 * p_train,
        optimizer=8 * p_train,
        activations_per_seq=T * per_token,
        activations_per_batch_extra=pairs,
        batch_size=B,
    )


def device_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are) of the device the run would use."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(props.total_memory), f"{props.name} memory"
    pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return int(pages * page), "physical RAM"


def memory_verdict(est: MemoryEstimate, cfg: Config, capacity: int, what: str) -> tuple[bool, str]:
    """(fits, detail) of an estimate against `capacity` bytes, with a batch-size suggestion."""
    budget = MEMORY_BUDGET_FRACTION * capacity
    B, accum = cfg.train.batch_size, cfg.train.grad_accum_steps
    head = (
        f"params {_fmt_count(est.params_total)} ({_fmt_count(est.params_trainable)} trainable): weights {fmt_bytes(est.weights)} + grads "
        f"{fmt_bytes(est.grads)} + AdamW {fmt_bytes(est.optimizer)} + activations {fmt_bytes(est.activations)} "
        f"(batch {B} x {cfg.data.block_size}) = {fmt_bytes(est.total)} of {fmt_bytes(capacity)} {what}"
    )
    if est.total <= budget:
        return True, f"{head} ({100 * est.total / capacity:.0f}%)"
    b = est.max_batch_size(budget)
    if b >= 1:
        new_accum = math.ceil(B * accum / b)
        hint = f"suggest --set train.batch_size={b} --set train.grad_accum_steps={new_accum} (same tokens per step)"
    else:
        hint = f"the weights and optimizer alone need {fmt_bytes(est.static)}: use a smaller model (d_model, n_layers) or vocab"
    return False, f"does not fit: {head}; {hint}"


def check_memory(ctx: PreflightContext) -> str:
    try:
        rt = ctx.runtime()
    except JepaError as e:
        raise Skip(f"the device does not resolve ({e.message})") from None
    est = estimate_memory(ctx.cfg, precision=rt.precision)
    capacity, what = device_memory(rt.device)
    fits, detail = memory_verdict(est, ctx.cfg, capacity, what)
    if not fits:
        raise AssertionError(detail)
    return detail


def check_runtime(ctx: PreflightContext) -> str:
    rt = ctx.runtime()
    name = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else os.uname().machine
    compile_note = ", torch.compile on" if ctx.cfg.train.compile else ""
    return f"{rt.device} ({name}), precision {rt.precision}{compile_note} (train.device={ctx.cfg.train.device!r}, precision={ctx.cfg.train.precision!r})"


def check_bf16(ctx: PreflightContext) -> str:
    from .model import build_param_groups
    from .train.device import bf16_supported

    device = ctx.device()
    if not bf16_supported(device):
        if device.type == "cuda":
            raise Skip(f"{torch.cuda.get_device_name(device)} has no bf16 support (torch.cuda.is_bf16_supported() is False)")
        raise Skip(f"no bf16 autocast on {device.type}")
    cfg = _with(ctx.small, **{"model.dropout": 0.0, "jepa.head_dropout": 0.0})
    model = _build(cfg, seed=14, device=device).train()
    x, y = _tokens(cfg, 2, seed=15, device=device)
    pairs = None if model.is_baseline else model.sample_pairs(2, x.shape[1], device, torch.Generator(device=device).manual_seed(16))
    with torch.no_grad():
        ref = model(x, y, 1.0, pairs=pairs).loss.item()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            dtype = model.lm_logits(x[:, :8]).dtype
    if dtype != torch.bfloat16:
        raise AssertionError(f"autocast bf16 produced {dtype} logits: the step would not run in bf16")
    opt = torch.optim.AdamW(build_param_groups(model, cfg.optim))
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        out = model(x, y, 1.0, pairs=pairs)
    out.loss.backward()
    loss = out.loss.item()
    if not math.isfinite(loss):
        raise AssertionError(f"bf16 loss is {loss}")
    if abs(loss - ref) > max(0.05, 0.02 * abs(ref)):
        raise AssertionError(f"bf16 loss {loss:.4f} is far from the fp32 loss {ref:.4f}")
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    if bad:
        raise AssertionError(f"non-finite bf16 gradients in {', '.join(bad[:4])}")
    opt.step()
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise AssertionError("parameters became non-finite after a bf16 step")
    return f"autocast bf16 on {device}: loss {loss:.5f} vs fp32 {ref:.5f}, grads and updated params finite"


# The step_phases check times the profile's real shape; past this many FLOPs per step on a CPU
# (about a second a step at ~100 GFLOP/s) it skips and leaves the timing to `jepa bench`.
PHASES_MAX_CPU_FLOPS = 1e11
PHASES_WARMUP, PHASES_STEPS = 2, 3


def check_step_phases(ctx: PreflightContext) -> str:
    """A few eager steps of the profile's own shape, timed by phase; an unusual split is a warning."""
    from .model import estimate_flops_per_token
    from .train.phases import PhaseClock, phase_notes, phase_shares
    from .train.step import build_trainee, plan_step, train_step

    try:
        rt = ctx.runtime()
    except JepaError as e:
        raise Skip(f"the device does not resolve ({e.message})") from None
    cfg, V = ctx.cfg, ctx.cfg.data.vocab_size
    B, T = cfg.train.batch_size, cfg.data.block_size
    flops = estimate_flops_per_token(cfg, V) * B * T * cfg.train.grad_accum_steps
    if rt.device.type == "cpu" and flops > PHASES_MAX_CPU_FLOPS:
        raise Skip(f"a step of this profile is {flops / 1e9:,.0f} GFLOP, too long to time here: `jepa bench --profile {ctx.profile}` shows the split")
    tr = build_trainee(cfg, V, rt.device, plan_step(cfg, rt.device, rt.precision, compile=False), seed=0)
    x, y = _tokens(cfg, B, seed=17, device=rt.device)
    clock = PhaseClock(rt.device)
    for i in range(PHASES_WARMUP + PHASES_STEPS):
        train_step(tr, lambda: (x, y), i + 1, cfg.train.max_steps, clock=clock if i >= PHASES_WARMUP else None)
    ms = clock.per_step()
    notes = phase_notes(ms, cfg, rt.device)
    if notes:
        raise Warn("; ".join(notes))
    share = phase_shares(ms)
    split = ", ".join(f"{k} {v:.0f} ms ({share[k]:.0%})" for k, v in ms.items())
    return f"{split} per step (eager, {PHASES_STEPS} steps at the profile's shape)"


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
