"""Profiles: loading, extends, overrides, strict validation, save/reload."""

from __future__ import annotations

import pytest

from jepa_core.config import (
    Config,
    config_from_toml,
    config_to_toml,
    diff_configs,
    load_config,
    parse_override,
    save_config,
)
from jepa_core.errors import ConfigError
from jepa_core.profiles import shipped_profiles

SHIPPED = sorted(shipped_profiles())


def test_expected_profiles_are_shipped():
    assert {"tiny", "tiny-baseline", "shakespeare", "wikitext2", "gpt2-small"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_roundtrips(name, tmp_path):
    cfg = load_config(name)
    assert cfg.name == name
    out = tmp_path / f"{name}.toml"
    save_config(cfg, out)
    again = load_config(str(out))
    assert again == cfg
    assert diff_configs(cfg, again) == {}


def test_shipped_values_match_the_issue():
    s = load_config("shakespeare")
    assert (s.model.d_model, s.model.n_layers, s.model.n_heads, s.model.tap_layer) == (256, 6, 8, -3)
    assert (s.data.vocab_size, s.data.lowercase, s.data.block_size) == (1024, True, 512)
    assert s.jepa.horizons == [2, 8, 32, 64] and s.jepa.horizon_probs == [0.4, 0.3, 0.2, 0.1]
    assert (s.jepa.ema_momentum, s.jepa.ema_schedule, s.jepa.ema_momentum_final) == (0.995, "cosine", 0.9995)
    assert (s.jepa.lm_weight, s.optim.lr, s.optim.warmup_steps, s.train.seed) == (0.5, 1e-4, 200, 52)
    w = load_config("wikitext2")
    assert (w.model.d_model, w.model.n_layers, w.data.vocab_size, w.train.precision) == (512, 8, 8192, "bf16")
    assert load_config("tiny-baseline").jepa.run_baseline is True
    assert load_config("tiny").jepa.run_baseline is False


def test_extends_merges_and_overrides():
    base, child = load_config("tiny"), load_config("tiny-baseline")
    diff = diff_configs(base, child)
    assert set(diff) == {"name", "description", "jepa.run_baseline"}


def test_set_overrides_are_parsed_as_toml():
    cfg = load_config("tiny", ["optim.lr=1e-4", "jepa.horizons=[2, 4]", "jepa.horizon_probs=[0.5,0.5]", "train.device=cuda", "model.grad_barrier=true"])
    assert cfg.optim.lr == 1e-4
    assert cfg.jepa.horizons == [2, 4]
    assert cfg.train.device == "cuda"  # a bare word is a string
    assert cfg.model.grad_barrier is True


def test_parse_override_values():
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], 1e-3)
    assert parse_override("train.max_steps=40")[1] == 40
    assert parse_override('train.device="cuda"')[1] == "cuda"
    assert parse_override("train.device=cuda:1")[1] == "cuda:1"


@pytest.mark.parametrize(
    "override, key, fragment",
    [
        ("model.d_modle=64", "model.d_modle", "Did you mean `model.d_model`"),
        ("optim.lr=fast", "optim.lr", "valid number"),
        ("model.tap_layer=4", "model.tap_layer", "outside [-4, 3]"),
        ("model.tap_layer=-5", "model.tap_layer", "outside"),
        ("jepa.horizons=[2, 8, 128]", "jepa.horizons", ">= data.block_size"),
        ("jepa.horizon_probs=[0.5, 0.3, 0.3]", "jepa.horizon_probs", "sum to 1"),
        ("optim.lr=-1", "optim.lr", "greater than 0"),
        ("model.n_heads=3", "model.n_heads", "divisible"),
        ("train.max_steps=1.5", "train.max_steps", "integer"),
        ("jepa.teacher=student", "jepa.teacher", "projector"),
    ],
)
def test_bad_values_name_the_key(override, key, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [override])
    assert key in str(e.value)
    assert fragment in str(e.value)


def test_bad_files(tmp_path):
    bad_type = tmp_path / "badtype.toml"
    bad_type.write_text('[model]\nd_model = "big"\n')
    with pytest.raises(ConfigError, match=r"model\.d_model.*badtype\.toml"):
        load_config(str(bad_type))

    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[optim]\nlearning_rate = 1e-3\n")
    with pytest.raises(ConfigError, match=r"optim\.learning_rate"):
        load_config(str(unknown))

    bad_section = tmp_path / "section.toml"
    bad_section.write_text("[modle]\nd_model = 64\n")
    with pytest.raises(ConfigError, match=r"Did you mean `model`"):
        load_config(str(bad_section))

    missing_base = tmp_path / "orphan.toml"
    missing_base.write_text('extends = "no-such-profile"\n')
    with pytest.raises(ConfigError, match="No profile named `no-such-profile`"):
        load_config(str(missing_base))

    not_toml = tmp_path / "broken.toml"
    not_toml.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(str(not_toml))


def test_extends_cycle(tmp_path, monkeypatch):
    (tmp_path / "a.toml").write_text('extends = "b"\n')
    (tmp_path / "b.toml").write_text('extends = "a"\n')
    monkeypatch.setenv("JEPA_PROFILES", str(tmp_path))
    with pytest.raises(ConfigError, match="cycle: a -> b -> a"):
        load_config("a")


def test_missing_profile_suggests():
    with pytest.raises(ConfigError, match="Did you mean `tiny`"):
        load_config("tinyy")


def test_toml_text_roundtrip_is_exact():
    cfg = load_config("shakespeare", ["optim.lr=3.3e-4", "jepa.tau=0.07"])
    text = config_to_toml(cfg)
    assert config_from_toml(text) == cfg
    assert config_to_toml(config_from_toml(text)) == text


def test_defaults_validate():
    cfg = Config()
    assert cfg.tap_index == cfg.model.n_layers - 2
