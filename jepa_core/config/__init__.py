"""Profiles as validated config: the schema (`schema`) and loading, overrides and TOML (`load`).

Everything a caller needs is re-exported here: `from jepa_core.config import Config, load_config`.
"""

from .load import (
    apply_overrides,
    config_from_toml,
    config_to_toml,
    deep_merge,
    diff_configs,
    load_config,
    load_raw,
    non_default_keys,
    parse_override,
    save_config,
    toml_value,
    validate,
)
from .schema import (
    MAX_BATCH,
    MAX_SECONDS,
    MAX_SEED,
    MAX_STEPS,
    MAX_TOKENS,
    RESUME_SAFE_KEYS,
    SAME_ACROSS_ARMS_KEYS,
    SECTION_MODELS,
    SECTIONS,
    TOP_LEVEL_KEYS,
    Config,
    DataConfig,
    JepaConfig,
    LogConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    all_keys,
    keys_with,
    upper_bound,
)

__all__ = [
    "MAX_BATCH", "MAX_SECONDS", "MAX_SEED", "MAX_STEPS", "MAX_TOKENS", "RESUME_SAFE_KEYS", "SAME_ACROSS_ARMS_KEYS",
    "SECTION_MODELS", "SECTIONS", "TOP_LEVEL_KEYS", "Config", "DataConfig", "JepaConfig", "LogConfig", "ModelConfig",
    "OptimConfig", "TrainConfig", "all_keys", "apply_overrides", "config_from_toml", "config_to_toml", "deep_merge",
    "diff_configs", "keys_with", "load_config", "load_raw", "non_default_keys", "parse_override", "save_config",
    "toml_value", "upper_bound", "validate",
]  # fmt: skip
