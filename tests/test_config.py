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


@pytest.mark.parametrize("item", ["train.max_steps=5\ntrain.seed=3", "train.max_steps=5\n", 'data.dataset="text:a"\r\nx', "name=a\nb"])
def test_a_set_with_a_line_break_is_refused(item):
    """TOML reads `v = 5\\ntrain.seed=3` as v = 5 and drops the rest: it used to vanish without a word."""
    with pytest.raises(ConfigError, match="holds a line break") as e:
        parse_override(item)
    assert repr(item) in e.value.message and "its own --set" in e.value.hint


@pytest.mark.parametrize(
    "override, key, fragment",
    [
        ("model.d_modle=64", "model.d_modle", "Did you mean `model.d_model`"),
        ("optim.lr=fast", "optim.lr", "valid number"),
        ("model.tap_layer=4", "model.tap_layer", "outside [-4, 3]"),
        ("model.tap_layer=-5", "model.tap_layer", "outside"),
        ("jepa.horizons=[2, 8, 128]", "jepa.horizons", ">= data.block_size"),
        ("jepa.horizon_probs=[0.5, 0.3, 0.3]", "jepa.horizon_probs", "sum to 1"),
        ("optim.lr=-1", "optim.lr", "greater than or equal to 0"),
        ("model.n_heads=3", "model.n_heads", "divisible"),
        ("train.max_steps=1.5", "train.max_steps", "integer"),
        ("jepa.teacher=student", "jepa.teacher", "projector"),
        ("jepa.jepa_weight_schedule='cosine'", "jepa.jepa_weight_schedule", "anneal"),
        ("jepa.jepa_weight_anneal_frac=0", "jepa.jepa_weight_anneal_frac", "greater than 0"),
        ("jepa.jepa_weight_anneal_frac=1.5", "jepa.jepa_weight_anneal_frac", "less than or equal to 1"),
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


# --------------------------------------------------------------------------- JEPA pair-group guards


@pytest.mark.parametrize(
    "overrides, key, fragments",
    [
        # one pair per micro-batch: no negative anywhere (and cov would divide by N - 1 = 0)
        (["train.batch_size=1", "jepa.pairs_per_seq=1"], "train.batch_size", ["1 x 1 = 1 pair", "jepa.pairs_per_seq"]),
        # tiny's horizon 8 (p 0.3) gets 1 x 4 x 0.3 = 1.2 pairs on average
        (["train.batch_size=1"], "train.batch_size", ["horizon 8: 1.2, horizon 32: 0.8 pairs", "jepa.horizon_probs"]),
        (["train.batch_size=2", "jepa.pairs_per_seq=2"], "train.batch_size", ["horizon 8: 1.2, horizon 32: 0.8 pairs"]),
        (["train.batch_size=3", "jepa.pairs_per_seq=3"], "train.batch_size", ["horizon 32: 1.8 pairs"]),
        # more pairs of horizon 2 per sequence than it has anchors (126)
        (["jepa.pairs_per_seq=300"], "jepa.pairs_per_seq", ["horizon 2", "150", "126 anchors", "data.block_size"]),
        (["data.block_size=40", "jepa.horizons=[2, 8, 36]", "jepa.pairs_per_seq=30"], "jepa.pairs_per_seq", ["horizon 36", "only data.block_size - k = 4"]),
        # batch 1 with other_sequences masks every negative
        (["train.batch_size=1", "jepa.pairs_per_seq=20", 'jepa.negatives="other_sequences"'], "jepa.negatives", ["batch_size = 1", "InfoNCE would be 0"]),
        # batch 1 with distant: horizon 32 in a block of 48 has every target within 32 of every other
        (["train.batch_size=1", "jepa.pairs_per_seq=20", "data.block_size=48"], "jepa.negatives", ["horizon(s) [32]", "2k + 1"]),
        (["train.eval_stride=129"], "train.eval_stride", ["larger than data.block_size 128"]),
    ],
)
def test_pair_group_guards_name_the_keys(overrides, key, fragments):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", overrides)
    msg = str(e.value)
    assert f"`{key}`" in msg
    for f in fragments:
        assert f in msg, (f, msg)


def test_pair_group_guards_pass_where_they_should():
    # the edges that are fine: expected group size exactly 2, every anchor of a horizon taken,
    # batch 1 with enough pairs and distant negatives that can exist, the baseline (no pairs at all)
    load_config("tiny", ["train.batch_size=1", "jepa.pairs_per_seq=10"])  # 5, 3 and 2 pairs per horizon
    load_config("tiny", ["data.block_size=40", "jepa.horizons=[2, 8, 36]", "jepa.pairs_per_seq=20"])  # 20 x 0.2 = 4 anchors of 4
    load_config("tiny", ["train.batch_size=1", "jepa.pairs_per_seq=20", 'jepa.negatives="all"', "data.block_size=48"])
    load_config("tiny", ["train.batch_size=1", "jepa.pairs_per_seq=1", "jepa.run_baseline=true"])
    load_config("tiny", ["train.eval_stride=128", "train.eval_tokens=1000"])
    assert Config().jepa.negatives == "distant" and Config().jepa.eval_pairs >= 1024


def test_pair_group_guard_exits_2_from_the_cli():
    import subprocess
    import sys

    args = ["profiles", "show", "tiny", "--set", "train.batch_size=1", "--set", "jepa.negatives=other_sequences", "--set", "jepa.pairs_per_seq=20"]
    r = subprocess.run([sys.executable, "-m", "jepa_cli", *args], capture_output=True, text=True)
    assert r.returncode == 2
    assert "jepa.negatives" in r.stderr and "batch_size = 1" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_old_run_config_still_loads():
    """A config.toml written before eval_tokens/eval_stride existed (with eval_batches, negatives = "all")."""
    cfg = load_config("tiny")
    raw = cfg.to_dict()
    del raw["train"]["eval_tokens"], raw["train"]["eval_stride"]
    raw["train"]["eval_batches"] = 16
    raw["jepa"]["negatives"] = "all"
    raw["jepa"]["eval_pairs"] = 512
    import tomli_w

    old = config_from_toml(tomli_w.dumps(raw))
    assert old.train.eval_batches == 16 and old.train.eval_tokens == 0 and old.train.eval_stride == 0
    assert old.jepa.negatives == "all" and old.jepa.eval_pairs == 512


# ---------------------------------------------------------------- --set errors name their source and the fix


def _err(*overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_config("tiny", list(overrides))
    return e.value


def test_bad_set_value_names_the_set_not_the_profile():
    e = _err("optim.lr=abc")
    assert "--set optim.lr=abc" in e.message and "tiny.toml" not in e.message
    assert "--set optim.lr=0.001" in e.hint  # an example of the right syntax, from the default


def test_bad_value_in_the_file_still_names_the_file(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('extends = "tiny"\n[optim]\nlr = "abc"\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(f), ["optim.lr_head=0.002"])
    assert "p.toml" in e.value.message and "--set" not in e.value.message


@pytest.mark.parametrize(
    "override, fix",
    [
        ("jepa.horizons=2,8", "--set 'jepa.horizons=[2,8]'"),  # the list, bracketed for you
        ("train.max_steps=1e3", "--set train.max_steps=1000"),  # an integer key: no exponent
        ("log.wandb_project=123", "--set 'log.wandb_project=\"123\"'"),  # a string that reads as a number
        ("train.compile=True", "--set train.compile="),  # lowercase TOML booleans
        ("optim.lr=.5", "digit on both sides"),
        ("jepa.teacher=student", "--set jepa.teacher=encoder"),
    ],
)
def test_bad_set_values_get_a_syntax_hint(override, fix):
    e = _err(override)
    assert f"--set {override}" in e.message or f"--set '{override}'" in e.message
    assert fix in e.hint, e.hint


def test_changing_horizons_alone_names_horizon_probs_with_a_fix():
    e = _err("jepa.horizons=[2,8]")
    assert "jepa.horizons" in e.message and "jepa.horizon_probs" in e.message
    assert "--set 'jepa.horizons=[2,8]'" in e.message  # where the 2 came from
    assert "tiny.toml" in e.message  # where the 3 came from
    assert "--set 'jepa.horizon_probs=[0.5,0.5]'" in e.hint
    # the suggested command works
    cfg = load_config("tiny", ["jepa.horizons=[2,8]", "jepa.horizon_probs=[0.5,0.5]"])
    assert cfg.jepa.horizons == [2, 8]


@pytest.mark.parametrize("horizons", ["[1,2,4,8,16]", "[1,2,3,4,5,6]", "[1,2,3,4,5,6,7]"])
def test_suggested_probabilities_are_accepted(horizons):
    import re
    import tomllib

    e = _err(f"jepa.horizons={horizons}")
    probs = tomllib.loads("v = " + re.search(r"jepa\.horizon_probs=(\[[^\]]*\])", e.hint).group(1))["v"]
    assert len(probs) == len(tomllib.loads(f"v = {horizons}")["v"])
    load_config("tiny", [f"jepa.horizons={horizons}", f"jepa.horizon_probs={probs}"])  # accepted as suggested


def test_both_lists_set_with_different_lengths():
    e = _err("jepa.horizons=[1,2,4,8]", "jepa.horizon_probs=[1.0]")
    assert "same number of entries" in e.hint


def test_changing_probs_alone_names_horizons():
    e = _err("jepa.horizon_probs=[0.5,0.5]")
    assert "jepa.horizons" in e.hint and "--set 'jepa.horizon_probs=[0.5,0.5]'" in e.hint


def test_cross_key_error_names_the_set_that_caused_it():
    e = _err("data.block_size=16")  # tiny's horizon 32 no longer fits a block
    assert "jepa.horizons" in e.message and "--set data.block_size=16" in e.message


def test_unknown_set_key_says_where_to_look():
    e = _err("optim.learning_rate=1")
    assert "--set optim.learning_rate=1" in e.message and "Did you mean" in e.message
    assert "jepa profiles show" in e.hint


# ---------------------------------------------------------------- numbers past what a run can mean (issue 26)

HUGE = "1000000000000000000000000000000"


@pytest.mark.parametrize(
    "key",
    ["train.max_steps", "train.eval_every", "train.checkpoint_every", "optim.warmup_steps", "train.eval_tokens",
     "data.max_train_tokens", "train.seed", "train.batch_size", "train.time_budget_s", "log.every"],
)
def test_huge_counts_are_refused_with_the_bound(key):
    e = _err(f"{key}={HUGE}")
    assert key in e.message and "less than or equal to" in e.message
    assert "takes at most" in e.hint and "A whole number" not in e.hint  # the syntax was right; the size was not


def test_every_count_has_an_upper_bound():
    """A new integer key without `le=` would let a 31-digit typo into config.toml again."""
    from jepa_core.config import SECTION_MODELS, upper_bound as _upper_bound

    # tap_layer and eval_stride are bounded by rules between keys (n_layers, block_size)
    unbounded = [
        f"{sec}.{k}" for sec, m in SECTION_MODELS.items() for k, f in m.model_fields.items()
        if f.annotation is int and _upper_bound(f"{sec}.{k}") is None
    ]
    assert sorted(unbounded) == ["model.tap_layer", "train.eval_stride"]


def test_bounds_leave_real_runs_alone_and_keep_int64():
    from jepa_core.config import MAX_SEED, MAX_STEPS, MAX_TOKENS

    cfg = load_config("tiny", [f"train.max_steps={MAX_STEPS}", f"train.seed={MAX_SEED}", f"data.max_train_tokens={MAX_TOKENS}"])
    assert cfg.train.max_steps == MAX_STEPS
    assert MAX_SEED * 1_000_003 + 64 < 2**64  # build_run's torch.manual_seed(seed * 1_000_003 + rank + 1)
    assert MAX_TOKENS < 2**63


def test_huge_value_in_a_file_names_the_file_and_the_bound(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text(f'extends = "tiny"\n[train]\nmax_steps = {HUGE}\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(f))
    assert "p.toml" in e.value.message and "train.max_steps" in e.value.message and "at most 1,000,000,000,000" in e.value.hint


def test_huge_float_for_an_int_key_suggests_no_out_of_range_fix():
    e = _err("train.max_steps=1e30")
    assert "up to 1,000,000,000,000" in e.hint and "1000000000000000019884624838656" not in e.hint


def test_huge_max_steps_exits_2_from_the_cli_and_writes_nothing(tmp_path):
    """The report: `jepa train --set train.max_steps=<31 digits>` was accepted and written to config.toml."""
    import os
    import subprocess
    import sys

    sets = ["--set", f"train.max_steps={HUGE}", "--set", f'train.out_dir="{tmp_path / "runs"}"']
    r = subprocess.run(
        [sys.executable, "-m", "jepa_cli", "train", "--no-tui", "--profile", "tiny", *sets],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, JEPA_DEBUG=""),
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.count("error:") == 1 and "train.max_steps" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_key_lists_are_derived_from_field_properties(monkeypatch):
    """RESUME_SAFE_KEYS and ablate's SAME_KEYS come from the fields themselves: a new key marked
    at its definition joins them with no list to edit."""
    from pydantic import Field

    from jepa_core.config import RESUME_SAFE_KEYS, SAME_ACROSS_ARMS_KEYS, keys_with
    from jepa_core.config import schema
    from jepa_core.tools.ablate import SAME_KEYS

    assert {"name", "description", "train.max_steps", "train.checkpoint_every", "log.every"} <= RESUME_SAFE_KEYS
    assert "model.d_model" not in RESUME_SAFE_KEYS and "optim.lr" not in RESUME_SAFE_KEYS  # they change the run
    assert {"data.dataset", "data.max_train_tokens", "train.seed", "train.max_steps", "jepa.eval_pairs"} <= set(SAME_ACROSS_ARMS_KEYS)
    assert "train.eval_batches" not in SAME_ACROSS_ARMS_KEYS  # ignored by the code: arms may differ in it
    assert "jepa.jepa_weight" not in SAME_ACROSS_ARMS_KEYS  # what arms are for
    assert SAME_KEYS == SAME_ACROSS_ARMS_KEYS

    class Extra(schema._Section):
        knob: int = Field(1, ge=0, le=10, json_schema_extra=schema.BOTH)
        other: int = Field(1, ge=0, le=10)

    monkeypatch.setitem(schema.SECTION_MODELS, "extra", Extra)
    assert "extra.knob" in keys_with("resume_safe") and "extra.knob" in keys_with("same_across_arms")
    assert "extra.other" not in keys_with("resume_safe") + keys_with("same_across_arms")
