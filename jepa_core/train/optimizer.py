"""The optimizer the loop steps: AdamW, or Muon for the hidden matrices plus AdamW for the rest.

Both come from torch (torch.optim.Muon exists from torch 2.9); Muon's step is torch's
arithmetic with two changes (`NsMuon`): the dtype of its Newton-Schulz iterations, and the
iterations batched over matrices of one shape (`newton_schulz_many`). The loop, the LR
schedule and the checkpoint code see one object with `param_groups`, `state`, `step`
and `zero_grad`, in the order `build_param_groups` returned the groups.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import OptimConfig


def newton_schulz(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """torch.optim.Muon's quintic Newton-Schulz orthogonalisation of the 2-D `g`, run in `dtype`.

    torch hard-codes bfloat16 here, which is right on GPUs and on CPUs with native bf16 matmul
    and 10-35x slower than fp32 on CPUs without it. The arithmetic is torch's, op for op, so in
    bfloat16 the result is torch's to the bit. The optimizer runs the batched
    `newton_schulz_many`; this one matrix at a time is the reference it is tested against.
    """
    a, b, c = coefficients
    x = g.to(dtype)
    wide = g.size(0) > g.size(1)
    if wide:
        x = x.T
    # out of place: in fp32 `.to` is no copy, and the input is the momentum buffer
    x = x.div(x.norm().clamp(min=eps))  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if wide else x


def newton_schulz_many(
    gs: list[torch.Tensor], coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype,
    nesterov: tuple[list[torch.Tensor], float] | None = None,
) -> list[torch.Tensor]:
    """`newton_schulz` of each 2-D tensor in `gs`, batched: one bmm per shape, not one mm per matrix.

    A transformer's hidden matrices come in a few shapes repeated per layer, and at `tiny`'s
    widths the per-call overhead of a small matmul outweighs its arithmetic: Newton-Schulz over
    the 17 matrices of `tiny` took about 8.6 ms per step in bf16 one by one and 4 ms stacked
    (benchmarks/2026-12-xeon-amx.md). Each matrix keeps its own norm; the batched product
    rounds like the single one up to the kernel's summation order.

    `nesterov=(grads, momentum)` orthogonalises `grads[i].lerp(gs[i], momentum)` instead of
    `gs[i]`, written straight into the stacked (and cast) input: no fp32 temporary per matrix.
    """
    a, b, c = coefficients
    out: list[torch.Tensor | None] = [None] * len(gs)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, g in enumerate(gs):  # tall matrices are transposed to wide, as in newton_schulz
        by_shape.setdefault((min(g.shape), max(g.shape)), []).append(i)
    for (rows, cols), idx in by_shape.items():
        x = torch.empty((len(idx), rows, cols), dtype=dtype, device=gs[idx[0]].device)
        for j, i in enumerate(idx):  # one pass per matrix: (Nesterov,) transpose and cast together
            dst = x[j].T if gs[i].size(0) > gs[i].size(1) else x[j]
            if nesterov is None:
                dst.copy_(gs[i])
            else:
                torch.lerp(nesterov[0][i], gs[i], nesterov[1], out=dst)
        x = x.div(torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True).clamp(min=eps))
        for _ in range(steps):
            gram = x @ x.mT
            poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.baddbmm(x, poly, x, beta=a)
        for j, i in enumerate(idx):
            out[i] = x[j].T if gs[i].size(0) > gs[i].size(1) else x[j]
    return out  # type: ignore[return-value]


def muon_lr_scale(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch.optim.Muon's shape-dependent learning-rate factor (its `_adjust_lr`, which is private)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


# On torch < 2.9 there is no Muon to extend; build_optimizer refuses optim.optimizer = "muon" there.
_MuonBase: Any = getattr(torch.optim, "Muon", torch.optim.Optimizer)


class NsMuon(_MuonBase):
    """torch.optim.Muon with the Newton-Schulz dtype chosen by the caller.

    Everything else is torch's: its constructor, groups and validation, its `_init_group`
    (so the state is torch's `momentum_buffer` and checkpoints do not change), Nesterov
    momentum, decoupled weight decay and the shape-dependent LR factor.
    """

    def __init__(self, params: Any, *, ns_dtype: torch.dtype = torch.bfloat16, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            bufs: list[torch.Tensor] = []
            self._init_group(group, params, grads, bufs)
            if not params:
                continue
            lr = float(group["lr"])
            momentum = group["momentum"]
            # torch's per-parameter arithmetic, one foreach kernel per op over the whole group
            torch._foreach_lerp_(bufs, grads, 1 - momentum)
            nesterov = (grads, momentum) if group["nesterov"] else None
            orth = newton_schulz_many(bufs, group["ns_coefficients"], group["ns_steps"], group["eps"], self.ns_dtype, nesterov)
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            by_scale: dict[float, list[int]] = {}  # the LR factor depends on the shape only
            for i, p in enumerate(params):
                by_scale.setdefault(muon_lr_scale(group["adjust_lr_fn"], p.shape), []).append(i)
            for scale, idx in by_scale.items():
                torch._foreach_add_([params[i] for i in idx], [orth[i] for i in idx], alpha=-lr * scale)
        return loss


class MuonWithAdamW:
    """Muon for the "muon" group, AdamW for every other group, stepped together."""

    algorithm = "muon+adamw"

    def __init__(
        self, groups: list[dict[str, Any]], ocfg: "OptimConfig", adamw_kwargs: dict[str, Any], ns_dtype: torch.dtype = torch.bfloat16
    ) -> None:
        muon_groups = [g for g in groups if g.get("name") == "muon"]
        adam_groups = [g for g in groups if g.get("name") != "muon"]
        self.adamw = torch.optim.AdamW(adam_groups, **adamw_kwargs)
        self.muon = NsMuon(
            muon_groups, lr=ocfg.muon_lr, momentum=ocfg.muon_momentum, nesterov=True, ns_steps=ocfg.muon_ns_steps, ns_dtype=ns_dtype
        )
        # One state table for both: parameter sets are disjoint, and the checkpoint code
        # then reads and restores every parameter's state through `self.state` alone.
        self.muon.state = self.adamw.state
        by_id = {id(g): g for g in self.adamw.param_groups + self.muon.param_groups}
        # torch keeps the very dicts it was given, so this list aliases the live groups
        self.param_groups = [by_id[id(g)] for g in groups]

    @property
    def state(self) -> Any:
        return self.adamw.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.adamw.step()
        self.muon.step()


def optimizer_algorithm(optimizer: Any) -> str:
    return getattr(optimizer, "algorithm", "adamw")


def build_optimizer(
    groups: list[dict[str, Any]], ocfg: "OptimConfig", device: torch.device, adamw_options: dict[str, Any] | None = None
) -> Any:
    """AdamW over `groups`, or MuonWithAdamW when they include a "muon" group.

    `adamw_options` (fused/foreach) replace the default: fused AdamW on CUDA.
    """
    adamw_kwargs: dict[str, Any] = {"betas": (ocfg.beta1, ocfg.beta2), "eps": ocfg.eps}
    if adamw_options is not None:
        adamw_kwargs.update(adamw_options)
    elif device.type == "cuda":
        adamw_kwargs["fused"] = True
    if not any(g.get("name") == "muon" for g in groups):
        return torch.optim.AdamW(groups, **adamw_kwargs)
    if not hasattr(torch.optim, "Muon"):
        raise ConfigError(
            f'`optim.optimizer = "muon"` needs torch >= 2.9 (torch.optim.Muon); this is torch {torch.__version__}.',
            hint='Upgrade torch or use optim.optimizer = "adamw".',
        )
    from .device import resolve_ns_dtype

    ns_dtype, _ = resolve_ns_dtype(ocfg.muon_ns_dtype, device)
    return MuonWithAdamW(groups, ocfg, adamw_kwargs, ns_dtype)
