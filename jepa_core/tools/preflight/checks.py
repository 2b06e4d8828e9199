"""The preflight checks: each a function of a `PreflightContext` returning a one-line detail,
raising `Skip` when it does not apply, `Warn` for a caveat, anything else to fail."""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import torch

from jepa_core.config import load_config
from jepa_core.errors import JepaError
from jepa_core.model.memory import estimate_memory, memory_verdict
from jepa_core.train.device import device_memory
from jepa_core.units import fmt_bytes
from .context import PreflightContext, Skip, Warn, _build, _tokens, _with

# Passes over the training split above which a run is likely to overfit: `tiny` plans 4.8 and
# still improves at its last eval, while a 466 kB text at ~10 passes peaked at about 6.7.
EPOCHS_WARN = 5.0

# --------------------------------------------------------------------------- checks


def check_profiles(ctx: PreflightContext) -> str:
    from jepa_core.profiles import list_profiles

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
    from jepa_core.model import sample_anchor_target_pairs

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
    from jepa_core.model import ema_momentum_at

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
    from jepa_core.model.transformer import RotaryEmbedding

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
    from jepa_core.model import build_param_groups, check_param_groups

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
    from jepa_core.config import config_to_toml
    from jepa_core.train.checkpoint import CheckpointMeta, load_state_into, load_weights_into, save_checkpoint
    from jepa_core.train.optimizer import optimizer_algorithm
    from jepa_core.train.step import build_trainee, plan_step, train_step

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
    from jepa_core.data import CacheMiss, load_prepared

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
    from jepa_core.data import CacheMiss, load_prepared, resolve_dataset
    from jepa_core.data.registry import TextSpec
    from jepa_core.data.sources import locate

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


def check_memory(ctx: PreflightContext) -> str:
    try:
        rt = ctx.runtime()
    except JepaError as e:
        raise Skip(f"the device does not resolve ({e.message})") from None
    world, assumed = parallel_world(ctx.cfg, rt.device)
    est = estimate_memory(ctx.cfg, precision=rt.precision, world_size=world)
    capacity, what = device_memory(rt.device)
    if est.ranks > 1 and rt.device.type == "cpu":  # ranks on one CPU share its memory
        capacity, what = capacity // world, f"{what} shared by {world} ranks"
    fits, detail = memory_verdict(est, ctx.cfg, capacity, what)
    if not fits:
        raise AssertionError(detail)
    if assumed:
        detail += f"; fsdp over {world} ranks assumed (run preflight under the same torchrun to check the real count)"
    return detail


def parallel_world(cfg, device: torch.device) -> tuple[int, bool]:
    """(ranks, assumed) the memory check shards over: torchrun's WORLD_SIZE when launched by it;
    else, for train.parallel = "fsdp", the visible GPUs (at least 2), said to be assumed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 or cfg.train.parallel != "fsdp":
        return world, False
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    return max(2, gpus), True


def check_runtime(ctx: PreflightContext) -> str:
    rt = ctx.runtime()
    name = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else os.uname().machine
    compile_note = ", torch.compile on" if ctx.cfg.train.compile else ""
    return f"{rt.device} ({name}), precision {rt.precision_label}{compile_note} (train.device={ctx.cfg.train.device!r})"


def check_bf16(ctx: PreflightContext) -> str:
    from jepa_core.model import build_param_groups
    from jepa_core.train.device import bf16_supported

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
    from jepa_core.model import estimate_flops_per_token
    from jepa_core.train.phases import PhaseClock, phase_notes, phase_shares
    from jepa_core.train.step import build_trainee, plan_step, train_step

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
