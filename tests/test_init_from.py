"""`train.init_from` / `jepa train --init-from SRC`: weights only, the source's tokenizer, the shape
rule with its --set hint, parts the source lacks or the run does not use, the records, exact resume
without reading SRC again, and `jepa ablate --init-from` (docs/finetune.md)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from jepa_core import rundir as rd
from jepa_core.errors import CheckpointError, ConfigError, DataError
from jepa_core.model import JepaLM
from jepa_core.train import init_from
from jepa_core.train.checkpoint import load_tensors
from jepa_core.train.loop import resolve_resume, train

from cli_helpers import cli  # noqa: F401 (fixture)
from train_helpers import _use_home, home, read_metrics, small_config, text  # noqa: F401 (fixtures)

# every learning rate of the small config (tiny's Muon included) at 0, one step: the weights do not move
FROZEN = ("optim.lr=0", "optim.lr_head=0", "optim.muon_lr=0", "train.max_steps=1", "train.sample_tokens=0")


def _finished(tmp: Path, home: Path, text: Path, name: str, *extra: str, baseline: bool = False) -> Path:
    """A small finished run (8 steps; checkpoints and evals at 4 and 8), trained under the module's JEPA_HOME."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JEPA_HOME", str(home))
        cfg = small_config(text, tmp / "runs", "train.sample_tokens=0", *extra, baseline=baseline)
        result = train(cfg, run_dir=tmp / name, handle_signals=False)
    assert result.status == "finished"
    return result.run_dir


@pytest.fixture(scope="module")
def source(tmp_path_factory, home, text) -> Path:
    return _finished(tmp_path_factory.mktemp("src"), home, text, "src")


@pytest.fixture(scope="module")
def baseline_source(tmp_path_factory, home, text) -> Path:
    return _finished(tmp_path_factory.mktemp("base"), home, text, "base", baseline=True)


def _eval_at(run: Path, step: int) -> dict:
    return next(r for r in read_metrics(run) if r["type"] == "eval" and r["step"] == step)


def _start(run: Path) -> dict:
    return next(r for r in read_metrics(run) if r.get("event") == "run_start")


# --------------------------------------------------------------------------- done when: the source's val BPB


@pytest.mark.parametrize("form, step", [("run", 8), ("file", 4)])
def test_frozen_step_from_source_evaluates_to_its_val_bpb(form, step, source, text, tmp_path):
    """Every learning rate 0 and one step on the source's own data: the source's val BPB (within 1e-4),
    from a run directory (its latest checkpoint) and from a weights file (an earlier one)."""
    src = str(source) if form == "run" else str(source / rd.CKPT_DIR / rd.weights_name(step))
    cfg = small_config(text, tmp_path / "runs", f"train.init_from={json.dumps(src)}", *FROZEN)
    result = train(cfg, run_dir=tmp_path / "ft", handle_signals=False)
    assert result.status == "finished" and result.step == 1
    assert abs(result.last_eval["val_bpb"] - _eval_at(source, step)["val_bpb"]) < 1e-4
    # the LM did not move: the checkpoint's LM tensors are the source's, bit for bit
    got, want = load_tensors(result.last_checkpoint), load_tensors(source / rd.CKPT_DIR / rd.weights_name(step))
    assert all(torch.equal(got[k], want[k]) for k in want if k.startswith("transformer."))
    # the source's tokenizer, not a new one: the run's copy is its file, byte for byte
    assert (tmp_path / "ft" / rd.TOKENIZER).read_bytes() == (source / rd.TOKENIZER).read_bytes()
    start = _start(tmp_path / "ft")
    rec = start["init_from"]
    assert rec["source"] == src and rec["kind"] == form.replace("file", "checkpoint") and rec["step"] == step
    assert rec["path"] == str(source / rd.CKPT_DIR / rd.weights_name(step)) and len(rec["digest"]) == 64
    assert rec["digest"] == init_from.weights_digest({k: v for k, v in want.items()})
    assert start["init_digest"] == rec["init_digest"] and start["start_step"] == 0
    assert any(n.startswith(f"weights from {src}") for n in start["notes"])


def test_learning_rates_of_zero_are_valid_and_freeze(text, tmp_path):
    from jepa_core.config import load_config

    cfg = load_config("tiny", ["optim.lr=0", "optim.lr_head=0", "optim.muon_lr=0"])
    assert cfg.optim.lr == cfg.optim.lr_head == cfg.optim.muon_lr == 0
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config("tiny", ["optim.lr=-0.001"])


# --------------------------------------------------------------------------- parts the source lacks, parts the run does not use


def _model(cfg, vocab: int) -> JepaLM:
    return JepaLM.from_config(cfg, vocab, seed=cfg.train.seed)


def test_jepa_run_from_a_baseline_gets_fresh_heads_and_a_teacher_copied_after_loading(baseline_source, text, tmp_path):
    src = init_from.resolve_source(str(baseline_source))
    assert src.jepa is None and not src.has_bridge
    cfg = small_config(text, tmp_path, f"train.init_from={json.dumps(str(baseline_source))}", teacher="encoder")
    model = _model(cfg, src.vocab_size)
    loaded = init_from.load_into(model, src)
    want = src.tensors()
    fresh = _model(cfg, src.vocab_size).state_dict()  # the name-seeded init of the same config and seed
    sd = model.state_dict()
    for k, v in want.items():
        assert torch.equal(sd[k], v), k  # the LM: the source's
    for k in sd:
        if k.startswith(("jepa.", "transformer.lm_bridge.", "transformer.bridge_gate", "transformer.tap_norm.")):
            assert torch.equal(sd[k], fresh[k]), k  # parts the source lacks: their name-seeded init
    # the teacher copies the LOADED online weights (encoder: the stack up to the tap; projector: online_proj)
    assert torch.equal(sd["teacher.encoder.tok_emb.weight"], want["transformer.tok_emb.weight"])
    assert torch.equal(sd["teacher.encoder.blocks.0.mlp.w12.weight"], want["transformer.blocks.0.mlp.w12.weight"])
    assert torch.equal(sd["teacher.target_proj.0.weight"], sd["jepa.online_proj.0.weight"])
    assert not torch.equal(sd["teacher.encoder.tok_emb.weight"], fresh["teacher.encoder.tok_emb.weight"])
    notes = " ".join(loaded.notes)
    assert "name-seeded init for jepa.*" in notes and "transformer.lm_bridge" in notes and "copied from the loaded online weights" in notes
    assert "dropped" not in notes and loaded.record["loaded"] == len(want)


def test_baseline_run_from_a_jepa_source_drops_what_it_does_not_use(source, text, tmp_path):
    src = init_from.resolve_source(f"{source}:best")
    cfg = small_config(text, tmp_path, f"train.init_from={json.dumps(str(source))}", baseline=True)
    model = _model(cfg, src.vocab_size)
    loaded = init_from.load_into(model, src)
    want = src.tensors()
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())  # everything it has is the source's
    dropped = loaded.record["dropped"]
    assert "jepa.*" in dropped and "teacher.*" in dropped and "transformer.lm_bridge.*" in dropped and "transformer.bridge_gate" in dropped
    assert any(n.startswith("dropped from the source (this run does not use them)") for n in loaded.notes)
    assert "fresh" not in loaded.record


def test_jepa_run_from_a_jepa_source_loads_its_heads_and_teacher(source, text, tmp_path):
    src = init_from.resolve_source(str(source))
    cfg = small_config(text, tmp_path, f"train.init_from={json.dumps(str(source))}")
    model = _model(cfg, src.vocab_size)
    loaded = init_from.load_into(model, src)
    want = src.tensors()
    assert set(model.state_dict()) == set(want)
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    # the teacher is the source's EMA teacher, not a copy of the online projector
    assert not torch.equal(want["teacher.target_proj.0.weight"], want["jepa.online_proj.0.weight"])
    assert "fresh" not in loaded.record and "dropped" not in loaded.record


# --------------------------------------------------------------------------- the shape rule


def test_shape_mismatch_names_every_key_and_its_hint_is_the_fix(source, text, tmp_path):
    base = ["model.d_model=64", "model.n_heads=4", "model.ff_multiplier=3.0", "jepa.latent_dim=8"]
    cfg = small_config(text, tmp_path, f"train.init_from={json.dumps(str(source))}", *base)
    with pytest.raises(ConfigError) as e:
        init_from.check_config(cfg)
    msg = e.value.message
    for part in ("model.d_model (32 in the source, 64 here)", "model.n_heads (2 in the source, 4 here)", "jepa.latent_dim (16 in the source, 8 here)"):
        assert part in msg, msg
    assert "SwiGLU" not in msg  # 3.0 x 32 rounds up to 128 as 8/3 x 32 does: the same tensors, no complaint
    # the hint's --set flags, applied after the profile's, make the config fit
    words = shlex.split(e.value.hint)
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    assert sorted(sets) == ["jepa.latent_dim=16", "model.d_model=32", "model.n_heads=2"]
    assert init_from.check_config(small_config(text, tmp_path, f"train.init_from={json.dumps(str(source))}", *base, *sets)) is not None
    # keys that do not change the weights may differ
    free = small_config(text, tmp_path, f"train.init_from={json.dumps(str(source))}", "model.dropout=0.1", "model.init_std=0.05",
                        "model.grad_barrier=true", "model.tap_norm=false", 'jepa.teacher="encoder"')
    assert init_from.check_config(free) is not None


def test_ff_size_and_the_tap_under_the_bridge_are_checked(source, text, tmp_path):
    # the source: d_model 32, ff_multiplier 8/3, ff_round 64 -> ceil(85.3) = 86 -> 128; 6.0 x 32 = 192 -> 192
    cfg = small_config(text, tmp_path, f"train.init_from={json.dumps(str(source))}", "model.ff_multiplier=6.0", "model.tap_layer=0")
    bad = {k: (a, b, sets) for k, a, b, sets in init_from.mismatches(cfg, init_from.resolve_source(str(source)))}
    ff = bad.pop("the SwiGLU size (model.ff_multiplier x d_model, rounded up to model.ff_round)")
    assert ff[:2] == (128, 192) and ff[2] == [f"model.ff_multiplier={8 / 3!r}", "model.ff_round=64"]
    # the source's lm_bridge sits above block 1 (tap -1 of 2); a bridge above block 0 would read another layer
    assert bad == {"model.tap_layer (the lm_bridge sits above the tap)": (-1, 0, ["model.tap_layer=-1"])}
    # a baseline builds no bridge: its tap does not matter
    assert init_from.mismatches(small_config(text, tmp_path, "model.tap_layer=0", baseline=True), init_from.resolve_source(str(source))) == []
