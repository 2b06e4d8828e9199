"""torch.distributed set-up for `torchrun ... -m jepa_cli train` (NCCL on GPUs, gloo on CPU)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_spec: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device_spec == "auto" or device_spec.startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, local_rank=local, world_size=world)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        # every rank leaves together: a rank tearing gloo down while another still
        # talks to it can abort the process ("terminate called without an active exception")
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def any_rank(info: DistInfo, flags: list[bool], device: torch.device) -> list[bool]:
    """For each flag, True on every rank if it is set on any rank: one all-reduce per decision point,
    so every rank leaves the loop at the same step with the same status (a rank that left alone
    would leave the others waiting in the next collective)."""
    if not info.enabled:
        return list(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def state_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer: identical on all ranks when they are in sync."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        # an FSDP shard is gathered whole first (a collective: all ranks digest together, in name order)
        whole = t.full_tensor() if hasattr(t, "full_tensor") else t
        h.update(whole.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def ranks_in_sync(info: DistInfo, module: torch.nn.Module, device: torch.device) -> bool:
    if not info.enabled:
        return True
    # compare digests with two all-reduces (min and max) rather than all_gather_object,
    # which would pickle
    digest = torch.tensor(list(bytes.fromhex(state_digest(module))), dtype=torch.int64, device=device)
    lo, hi = digest.clone(), digest.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))
