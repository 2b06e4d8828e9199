"""A small JEPA config shared by the model tests (32-wide, 3 layers, block 32)."""

from __future__ import annotations

from jepa_core.config import Config, validate


def small_cfg(model=None, jepa=None, data=None, train=None) -> Config:
    raw = {
        "model": {"d_model": 32, "n_layers": 3, "n_heads": 2, "tap_layer": -2, **(model or {})},
        "jepa": {"latent_dim": 16, "horizons": [2, 4], "horizon_probs": [0.5, 0.5], "pairs_per_seq": 4, **(jepa or {})},
        "data": {"block_size": 32, **(data or {})},
        "train": {"batch_size": 32, **(train or {})},
    }
    return validate(raw)
