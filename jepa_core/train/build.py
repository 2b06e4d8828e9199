"""Building a run: distributed state, device, data, model and optimizer, and the resume point.

Everything here happens before the first step and is the same on every rank,
except data preparation (rank 0 prepares while the others wait, then all
memory-map the cache) and the per-rank sampling streams.
"""

from __future__ import annotations

import dataclasses
import json
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from jepa_core import rundir as rd
from jepa_core.codeversion import code_version
from jepa_core.config import Config
from jepa_core.errors import ConfigError
from jepa_core.train.allocator import allocator_label
from jepa_core.train.device import Runtime, compile_unavailable_reason, gpu_peak_flops, ns_dtype_label, resolve_runtime, slow_bf16_note
from jepa_core.train.distributed import DistInfo, barrier, init_distributed
from jepa_core.train.fsdp import mode_label as fsdp_mode_label
from jepa_core.train.step import Trainee, build_trainee, plan_step


@dataclass
class Run:
    cfg: Config
    dist: DistInfo
    runtime: Runtime
    run_dir: Path
    prepared: Any
    trainee: Trainee
    batcher: Any  # TrainBatcher
    resume: rd.CheckpointRef | None
    start_step: int
    tokens_seen: int
    notes: list[str]
    watch_state: dict[str, Any] | None = None  # the EvalWatch saved with the resumed checkpoint
    init_digest: str | None = None  # the shared LM weights at initialisation (a source's when started from one; before any resume)
    # the `--set` values this segment was started with, as typed (None: the caller did not say)
    overrides: list[str] | None = None
    init_from: dict[str, Any] | None = None  # the weights it started from (train.init_from), as init_from.load_into recorded it
    muon_ns_dtype: str | None = None  # Muon's Newton-Schulz dtype and why (None without Muon)

    @property
    def train_tokens(self) -> int:
        """Tokens in the training split: one epoch."""
        return len(self.prepared.train_tokens)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def tokens_per_step(self) -> int:
        tc = self.cfg.train
        return tc.batch_size * self.cfg.data.block_size * tc.grad_accum_steps * self.dist.world_size

    def start_info(self) -> dict[str, Any]:
        """What run_start records and the CLI shows before the first step."""
        model = self.trainee.model
        info = {
            "run_name": self.run_dir.name,
            "run_dir": str(self.run_dir),
            "profile": self.cfg.name,
            "device": str(self.device),
            "precision": self.runtime.precision,
            "precision_why": self.runtime.why,
            "allocator": allocator_label(),
            "compile": self.trainee.plan.compile,
            "world_size": self.dist.world_size,
            "parallel": fsdp_mode_label(self.cfg, self.dist.world_size),
            "max_steps": self.cfg.train.max_steps,
            "start_step": self.start_step,
            "params": model.param_counts(),
            "vocab_size": self.prepared.vocab_size,
            "tokens_per_step": self.tokens_per_step,
            "train_tokens": self.train_tokens,
            # passes over the training split the whole run makes (windows are drawn at random, so
            # an "epoch" is a token count, not a guarantee that every window was seen)
            "epochs_planned": round(self.cfg.train.max_steps * self.tokens_per_step / max(self.train_tokens, 1), 3),
            "flops_per_token": self.flops_per_token,
            "baseline": model.is_baseline,
            "init_digest": self.init_digest,
            "code": code_version(),
        }
        if self.init_from is not None:
            info["init_from"] = self.init_from
        if self.overrides is not None:
            # recorded, so that `jepa runs` need not reconstruct them by diffing against a profile that may have changed
            info["overrides"] = [o.strip() for o in self.overrides]
        if self.muon_ns_dtype:
            info["muon_ns_dtype"] = self.muon_ns_dtype
        if self.notes:
            info["notes"] = list(self.notes)
        return info

    @functools.cached_property
    def peak_flops(self) -> float | None:
        return gpu_peak_flops(self.device)

    @functools.cached_property
    def flops_per_token(self) -> float:
        from jepa_core.model import estimate_flops_per_token

        return estimate_flops_per_token(self.cfg, self.prepared.vocab_size)


def _broadcast_run_dir(dinfo: DistInfo, path: Path | None) -> Path:
    if not dinfo.enabled:
        assert path is not None
        return path
    import torch.distributed as dist

    buf = torch.zeros(1024, dtype=torch.uint8)
    if dinfo.is_main:
        raw = str(path).encode()
        buf[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    dist.broadcast(buf, src=0)
    return Path(bytes(buf[buf != 0].tolist()).decode())


def _last_start(resume: rd.CheckpointRef | None) -> dict[str, Any]:
    """The resumed run's last `run_start` record ({} for a new run, or when there is none)."""
    if resume is None:
        return {}
    from jepa_core.rundir.summary import read_records

    starts = [r for r in read_records(resume.run_dir) if r.get("event") == "run_start"]
    return starts[-1] if starts else {}


def _keep_trained_precision(rt: Runtime, setting: str, before: dict[str, Any]) -> tuple[Runtime, str | None]:
    """A resumed `auto` run keeps the precision it trained in so far (`before`, its last run_start).

    `auto` reads the machine, so a run moved to another machine, or resumed after auto's rule
    changed (CPUs with native bf16 trained in fp32 before), would switch precision halfway: a
    different computation, and no longer a bit-exact continuation. Returns the runtime to use
    and a note when it differs from what this machine alone would choose.
    """
    was = before.get("precision")
    if setting != "auto" or was not in ("fp32", "bf16") or was == rt.precision:
        return rt, None
    from jepa_core.train.device import bf16_supported

    if was == "bf16" and not bf16_supported(rt.device):
        return rt, f"the run trained in bf16 so far; {rt.device} has no bf16 autocast, so it goes on in {rt.precision}"
    now = rt.why.removeprefix("auto: ")
    kept = Runtime(rt.device, was, f"auto, as the run trained so far (this machine alone would pick {rt.precision}: {now})")
    return kept, f"precision {was}, as the run trained so far; `auto` on this machine alone would pick {rt.precision} ({now})"


def _keep_trained_ns_dtype(trainee: Trainee, cfg: Config, device: torch.device, before: dict[str, Any]) -> tuple[str | None, str | None]:
    """Muon's `muon_ns_dtype = "auto"`, likewise: a resumed run keeps the Newton-Schulz dtype it trained
    with. Returns the label run_start records (None without Muon) and a note when it was kept."""
    from jepa_core.train.device import resolve_ns_dtype

    label = ns_dtype_label(cfg.optim.optimizer, cfg.optim.muon_ns_dtype, device)
    muon = getattr(trainee.optimizer, "muon", None)
    was = str(before.get("muon_ns_dtype") or "").split(" ", 1)[0]  # run_start's label: "bfloat16 (why)"
    if muon is None or cfg.optim.muon_ns_dtype != "auto" or was not in ("bfloat16", "float32"):
        return label, None
    dtype, why = resolve_ns_dtype("auto", device)
    now = str(dtype).removeprefix("torch.")
    if was == now:
        return label, None
    muon.ns_dtype = getattr(torch, was)  # read at each step; nothing has stepped yet
    return (f"{was} (auto, as the run trained so far; this machine alone would pick {now}: {why.removeprefix('auto: ')})",
            f"Muon's Newton-Schulz in {was}, as the run trained so far; `auto` on this machine alone would pick {now}")


def build_run(
    cfg: Config,
    *,
    run_dir: Path | None,
    resume: rd.CheckpointRef | None,
    on_prepare: Callable[[str, int, int], None] | None = None,
    force_memory: bool = False,
    overrides: list[str] | tuple[str, ...] | None = None,
) -> Run:
    from jepa_core.data import TrainBatcher, ensure_prepared, load_prepared
    from jepa_core.train import init_from
    from jepa_core.train.checkpoint import load_state_into, load_weights_into

    tc = cfg.train
    # a start from trained weights is checked (shape, tokenizer) before anything is claimed or prepared;
    # a resumed run has its weights in its checkpoint and does not read the source again
    source = init_from.check_config(cfg) if resume is None else None
    dinfo = init_distributed(tc.device)
    rt = resolve_runtime(tc.device, tc.precision, dinfo.local_rank)
    before = _last_start(resume)
    rt, precision_note = _keep_trained_precision(rt, tc.precision, before)
    if resume is not None:
        run_dir = resume.run_dir
    derived = run_dir is None  # from train.out_dir, not an explicit --run-dir
    if dinfo.is_main and run_dir is None:
        run_dir = rd.new_run_dir(tc.out_dir, cfg.name)
    if dinfo.is_main and run_dir is not None:
        from jepa_core.train.session import claim_run_dir

        if resume is None:
            rd.refuse_nested_run(run_dir, out_dir=tc.out_dir if derived else None)
        claim_run_dir(run_dir, resume)  # refuse a busy or taken directory before the slow part
    run_dir = _broadcast_run_dir(dinfo, run_dir)

    data_cfg = init_from.data_config(cfg, source, resume)
    if dinfo.is_main:
        prepared = ensure_prepared(data_cfg, progress=on_prepare)
    barrier(dinfo)
    if not dinfo.is_main:
        prepared = load_prepared(data_cfg)
    if len(prepared.train_tokens) < cfg.data.block_size + 1:
        raise ConfigError(
            f"The train split of `{cfg.data.dataset}` has {len(prepared.train_tokens)} tokens, too few for one block of {cfg.data.block_size}.",
            hint="Lower data.block_size or raise data.train_fraction.",
        )

    if not force_memory:
        check_memory_fits(cfg, prepared.vocab_size, rt, dinfo.world_size)
    # a resume fallback's note is the CLI's to print and the resume event's to record
    notes: list[str] = [precision_note] if precision_note else []
    if note := slow_bf16_note(rt):
        notes.append(note)
    plan = plan_step(cfg, rt.device, rt.precision)
    # a profile that asks for compile still trains on a machine without a C++ compiler
    why_not = compile_unavailable_reason(rt.device) if plan.compile else None
    if why_not:
        plan = dataclasses.replace(plan, compile=False)
        notes.append(why_not)
    from jepa_core.train import fsdp

    sharded = fsdp.wanted(cfg, dinfo.world_size)
    loaded: list = []
    # a source's weights go into the whole model, before it is sharded, compiled or wrapped
    trainee = build_trainee(cfg, prepared.vocab_size, rt.device, plan, seed=tc.seed, ddp=dinfo.enabled and not sharded,
                            fsdp_world=dinfo.world_size if sharded else 0,
                            load=None if source is None else lambda model: loaded.append(init_from.load_into(model, source)))
    ns_label, ns_note = _keep_trained_ns_dtype(trainee, cfg, rt.device, before)
    init_record = None
    if loaded:
        init_record = loaded[0].record
        notes.extend(loaded[0].notes)
    if ns_note:
        notes.append(ns_note)
    # taken after a source's weights are loaded and before a resume loads its own: the digest names the
    # start every segment shares (a resumed run from a source reads it back from its checkpoint)
    init_digest = trainee.model.shared_lm_digest()
    if init_record is not None:
        init_record["init_digest"] = init_digest
    # identical init on every rank above; from here each rank samples pairs and dropout on its own stream
    torch.manual_seed(tc.seed * 1_000_003 + dinfo.rank + 1)
    # one step's windows (every rank, every micro-batch) are drawn together, at distinct positions
    batcher = TrainBatcher(
        prepared.train_tokens, cfg.data.block_size, tc.batch_size, seed=tc.seed,
        rank=dinfo.rank, world_size=dinfo.world_size, accum_steps=tc.grad_accum_steps,
    )

    step, tokens_seen, watch_state = 0, 0, None
    if resume is not None:
        load_w, load_s = (fsdp.load_weights, fsdp.load_state) if sharded else (load_weights_into, load_state_into)
        wmeta = load_w(trainee.model, resume.weights)
        watch_state = json.loads(wmeta["eval_watch"]) if wmeta.get("eval_watch") else None
        # started from SRC: the start is the source's weights, which only the checkpoint remembers
        init_record = init_from.recorded(wmeta)
        if init_record is not None and isinstance(init_record.get("init_digest"), str):
            init_digest = init_record["init_digest"]
        st = load_s(trainee.model, trainee.optimizer, resume.state)
        step, tokens_seen = st["step"], st["tokens_seen"]
        batcher.load_state_dict(st["data"])
    return Run(cfg, dinfo, rt, run_dir, prepared, trainee, batcher, resume, step, tokens_seen, notes, watch_state, init_digest,
               list(overrides) if overrides is not None else None, init_record, ns_label)


def check_memory_fits(cfg: Config, vocab_size: int, rt: Runtime, world_size: int = 1) -> None:
    """Refuse, before anything is allocated, a run whose memory estimate (preflight's) exceeds the device.

    A run that cannot fit would otherwise grow until the OS or CUDA kills it,
    mid-step and without a checkpoint. The estimate is a formula, so --force
    (force_memory) lets a user who knows better start anyway.
    """
    from jepa_core.model.memory import estimate_memory, memory_verdict
    from jepa_core.train.device import device_memory

    est = estimate_memory(cfg, vocab_size, precision=rt.precision, world_size=world_size)  # per rank
    capacity, what = device_memory(rt.device)
    if est.ranks > 1 and rt.device.type == "cpu":  # fsdp ranks on one CPU share its memory
        capacity, what = capacity // world_size, f"{what} shared by {world_size} ranks"
    fits, detail = memory_verdict(est, cfg, capacity, what)
    if not fits:
        raise ConfigError(
            f"This run would not fit in memory, so it was not started: the estimate {detail}.",
            hint="Reduce model.d_model, model.n_layers, data.block_size or train.batch_size as suggested; "
            "`jepa preflight` shows the same estimate. Pass --force to start anyway.",
        )
