"""What every preflight check is given and may raise: the context (the resolved profile and its
reduced copies), `Skip` and `Warn`, and the reduced config the model checks run on."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from jepa_core.config import Config, validate
from jepa_core.errors import ConfigError, JepaError
FAULT_ENV = "JEPA_PREFLIGHT_FAULT"
DEFAULT_PROFILE = "tiny"

# Reduced-model caps: a forward/backward at this size takes well under a second on 2 cores.
CAP_D_MODEL = 128
CAP_LAYERS = 4
CAP_BLOCK = 128
CAP_LATENT = 64
SMALL_BATCH = 4


class Skip(Exception):
    """Raised by a check that does not apply here; the message says why."""


class Warn(Exception):
    """Raised by a check that passed with a caveat worth reading (preflight still succeeds)."""




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
            from jepa_core.train.device import resolve_runtime

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
    from jepa_core.model import JepaLM

    torch.manual_seed(seed)
    return JepaLM.from_config(cfg, cfg.data.vocab_size).to(device)


def _tokens(cfg: Config, batch: int, seed: int, device: torch.device | str = "cpu", length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = length or cfg.data.block_size
    ids = torch.randint(0, cfg.data.vocab_size, (batch, T + 1), generator=g)
    return ids[:, :-1].to(device), ids[:, 1:].to(device)
