"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for `train.parallel = "fsdp"` under torchrun.

What is sharded, and why (docs/gpu.md, "DDP or FSDP"):

- each transformer block is its own FSDP group (gathered for its forward and backward, freed
  after); the root group holds the rest: embeddings, norms, LM head, the JEPA heads;
- the EMA teacher is built before sharding (FSDP modules cannot be deep-copied) and sharded
  like its online twin: its encoder blocks are groups of their own, its projector sits in the
  root group. Teacher and online parameter have the same shape and the same Shard(0)
  placement, so the EMA `t = m t + (1 - m) o` runs on each rank's local shards, elementwise,
  with no communication, and equals the single-process update exactly. A whole (replicated)
  teacher would cost every rank a full copy of the stack plus an all-gather of the online
  weights every step;
- the JEPA projector and predictor are a few latent_dim-wide matrices: they ride in the root
  group rather than paying an all-gather of their own;
- Muon is refused by the config (schema.py): Newton-Schulz on a row slice is not Muon.

Checkpoints stay what every reader knows: every rank gathers each tensor (one at a time) and
rank 0 writes the consolidated weights and optimizer state with the ordinary writer
(checkpoint.py), so `inspect`, `sample`, `export` and a resume read them unchanged. A resume
reads the full tensors on every rank and keeps each rank's slice, which is why a resume at
the same world size is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from jepa_core.config import Config


def wanted(cfg: Config, world_size: int) -> bool:
    """FSDP runs only under torchrun with more than one rank; "auto" means DDP."""
    return world_size > 1 and cfg.train.parallel == "fsdp"


def mode_label(cfg: Config, world_size: int) -> str:
    """What run_start records as `parallel`: single, ddp or fsdp."""
    if world_size <= 1:
        return "single"
    return "fsdp" if cfg.train.parallel == "fsdp" else "ddp"


def _is_dtensor(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor's shards gathered (a collective every rank must join), else `t`."""
    return t.full_tensor() if _is_dtensor(t) else t


def shard_model(model: torch.nn.Module, cfg: Config, device: torch.device, precision: str, world_size: int, *, compile: bool) -> torch.nn.Module:
    """fully_shard every block (online and teacher), then the root; compile per block first, as torchtitan does.

    Every FSDP module gets an explicit gradient divide factor of world_size, and on CPU (gloo) a
    SUM reduction followed by that division: the average is made here, not left to a backend's
    AVG (pytorch issue 162338: FSDP2 over gloo summed gradients). tests/test_fsdp.py checks it
    against one process.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(device.type, (world_size,))
    # fully_shard refuses 0-d parameters (logit_scale, bridge_gate): they stay whole on every rank,
    # outside FSDP, and their gradients are averaged by `average_replicated_grads`
    scalars = {p for p in model.parameters() if p.ndim == 0}
    # bf16 parameters in compute, fp32 gradient reduction and fp32 master weights (the shards)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16" else MixedPrecisionPolicy()
    blocks = list(model.transformer.blocks)
    teacher = getattr(model, "teacher", None)
    if teacher is not None and teacher.encoder is not None:
        blocks += list(teacher.encoder.blocks)
    groups = []
    for block in blocks:
        if compile:
            block.compile()  # in place: parameter names (and so checkpoints) keep no `_orig_mod.`
        groups.append(fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=cfg.train.reshard_after_forward,
                                  ignored_params=scalars))
        register_fsdp_forward_method(block, "forward_at")  # the teacher's last block runs at a few positions only
    root = fully_shard(model, mesh=mesh, mp_policy=mp, ignored_params=scalars)
    for g in (*groups, root):
        if device.type == "cpu":
            # gloo: a plain SUM, then FSDP's own division by the factor below, rather than the
            # backend's AVG (the reduction pytorch issue 162338 found summing) or PREMUL_SUM (NCCL only)
            g.set_force_sum_reduction_for_comms(True)
        g.set_gradient_divide_factor(float(world_size))
    # methods that run the network without `forward` (sampling, eval logits) gather the root too
    for name in ("generate", "lm_logits"):
        register_fsdp_forward_method(model, name)
    return model


def average_replicated_grads(model: torch.nn.Module, world_size: int) -> None:
    """Average the gradients of the parameters FSDP leaves whole (0-d ones) over the ranks:
    FSDP's reduce-scatter does not see them. One all-reduce of a few numbers per step."""
    import torch.distributed as dist

    grads = [p.grad for p in model.parameters() if p.grad is not None and not _is_dtensor(p)]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    for g, v in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(v.view_as(g))


@contextlib.contextmanager
def whole_root(model: torch.nn.Module) -> Iterator[None]:
    """Hold the root group gathered while code calls submodules directly (the evaluator calls
    `model.transformer(...)`); the blocks gather themselves through their own hooks."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def clip_grad_norm_(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """The global gradient norm over every rank's shards, and the clip by it (torch's own
    clip_grad_norm_ would return a per-shard partial norm for DTensor gradients)."""
    sharded = [p.grad for p in params if p.grad is not None and _is_dtensor(p.grad)]
    whole = [p.grad for p in params if p.grad is not None and not _is_dtensor(p.grad)]
    parts = [full(torch.nn.utils.get_total_norm(sharded, 2.0))] if sharded else []
    if whole:  # replicated on every rank: counted once, not once per rank
        parts.append(torch.nn.utils.get_total_norm(whole, 2.0))
    total = torch.linalg.vector_norm(torch.stack(parts), 2.0)
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


# ---- checkpoints: gather for the ordinary writer, slice on resume


class _GatheredModel:
    """What checkpoint.save_checkpoint reads of a model, with whole tensors."""

    def __init__(self, model: torch.nn.Module, tensors: dict[str, torch.Tensor]):
        self._model, self._tensors = model, tensors

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._tensors

    def named_parameters(self):
        return self._model.named_parameters()


class _GatheredOptimizer:
    """What checkpoint.optimizer_tensors reads of an optimizer, with whole moments."""

    def __init__(self, optimizer: Any, state: dict[Any, dict[str, Any]]):
        self.param_groups = optimizer.param_groups
        self.state = state
        self.algorithm = getattr(optimizer, "algorithm", "adamw")


def gathered(model: torch.nn.Module, optimizer: Any, is_main: bool) -> tuple[Any, Any]:
    """(model, optimizer) views holding whole CPU tensors, on rank 0; (None, None) elsewhere.

    A collective: every rank must call it, in the same order (tensors are gathered one at a
    time, so no rank ever holds more than one whole tensor on the device)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        whole = full(t).detach()
        if is_main:
            tensors[name] = whole.to("cpu").contiguous()
    state: dict[Any, dict[str, Any]] = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            kept = {}
            for k in sorted(st):
                v = st[k]
                v = full(v).detach() if torch.is_tensor(v) else v
                kept[k] = v.to("cpu") if torch.is_tensor(v) and k != "step" else v
            if is_main:
                state[p] = kept
    if not is_main:
        return None, None
    return _GatheredModel(model, tensors), _GatheredOptimizer(optimizer, state)


def _local(whole: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's shard of `whole`, placed as `like` is (no communication: every rank has `whole`)."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(whole.to(like.device, like.dtype), like.device_mesh, like.placements, src_data_rank=None)


def load_weights(model: torch.nn.Module, path: Path) -> dict[str, str]:
    """checkpoint.load_weights_into for a sharded model: every rank reads the file and keeps its slice."""
    from jepa_core.errors import CheckpointError
    from jepa_core.train.checkpoint import WEIGHTS_FORMAT, load_tensors, read_metadata

    meta = read_metadata(path)
    if meta.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{path} is not a jepa weights file (format {meta.get('format')!r}).")
    tensors = load_tensors(path)
    current = model.state_dict()
    missing, unexpected = sorted(set(current) - set(tensors)), sorted(set(tensors) - set(current))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}.",
            hint="The checkpoint was written by a run with a different model shape or teacher.",
        )
    with torch.no_grad():
        for name, t in current.items():
            src = tensors[name]
            if _is_dtensor(t):
                t.copy_(_local(src, t))
            else:
                t.copy_(src)
    return meta


def load_state(model: torch.nn.Module, optimizer: Any, path: Path) -> dict[str, Any]:
    """checkpoint.load_state_into, then each whole moment replaced by this rank's slice of it."""
    from jepa_core.train.checkpoint import load_state_into

    st = load_state_into(model, optimizer, path)
    for p, pstate in optimizer.state.items():
        if not _is_dtensor(p):
            continue
        for k, v in list(pstate.items()):
            if k != "step" and torch.is_tensor(v) and not _is_dtensor(v):
                pstate[k] = _local(v, p)
    return st
