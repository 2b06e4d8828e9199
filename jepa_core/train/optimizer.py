"""The optimizer the loop steps: AdamW, or Muon for the hidden matrices plus AdamW for the rest.

Both come from torch (torch.optim.Muon exists from torch 2.9). The loop, the LR
schedule and the checkpoint code see one object with `param_groups`, `state`, `step`
and `zero_grad`, in the order `build_param_groups` returned the groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import OptimConfig


class MuonWithAdamW:
    """Muon for the "muon" group, AdamW for every other group, stepped together."""

    algorithm = "muon+adamw"

    def __init__(self, groups: list[dict[str, Any]], ocfg: "OptimConfig", adamw_kwargs: dict[str, Any]) -> None:
        muon_groups = [g for g in groups if g.get("name") == "muon"]
        adam_groups = [g for g in groups if g.get("name") != "muon"]
        self.adamw = torch.optim.AdamW(adam_groups, **adamw_kwargs)
        self.muon = torch.optim.Muon(
            muon_groups, lr=ocfg.muon_lr, momentum=ocfg.muon_momentum, nesterov=True, ns_steps=ocfg.muon_ns_steps
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
    return MuonWithAdamW(groups, ocfg, adamw_kwargs)
