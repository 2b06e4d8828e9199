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
    assert rec["path"] == str(source / rd.CKPT_DIR / rd.weights_name(step))
    # every tensor of the source was loaded: the digest is the one its file recorded when it was written
    assert rec["digest"] == rd.read_header(source / rd.CKPT_DIR / rd.weights_name(step)).metadata[rd.digest.DIGEST_KEY]
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
    ff = bad.pop("the SwiGLU size, model.ff_multiplier x d_model rounded up to model.ff_round,")
    assert ff[:2] == (128, 192) and ff[2] == [f"model.ff_multiplier={8 / 3!r}", "model.ff_round=64"]
    # the source's lm_bridge sits above block 1 (tap -1 of 2); a bridge above block 0 would read another layer
    assert bad == {"model.tap_layer, below the lm_bridge,": (-1, 0, ["model.tap_layer=-1"])}
    # a baseline builds no bridge: its tap does not matter
    assert init_from.mismatches(small_config(text, tmp_path, "model.tap_layer=0", baseline=True), init_from.resolve_source(str(source))) == []


# --------------------------------------------------------------------------- resume


def test_a_run_from_a_source_resumes_bit_exactly_without_reading_the_source_again(source, text, tmp_path):
    """N steps in one go == N/2, stop, resume, N/2, with the source deleted before the resume: the
    resumed run takes its weights from its own checkpoint, and its tokenizer from its own folder."""
    src = tmp_path / "src"
    shutil.copytree(source, src)
    cfg = small_config(text, tmp_path / "runs", f"train.init_from={json.dumps(str(src))}", "model.dropout=0.1")
    one = train(cfg, run_dir=tmp_path / "one", handle_signals=False)
    half = train(cfg, run_dir=tmp_path / "two", stop_after=4, handle_signals=False)
    assert one.status == "finished" and half.status == "interrupted" and half.step == 4
    shutil.rmtree(src)
    cfg2, ref = resolve_resume(str(tmp_path / "two"), cfg, cfg.name)
    rest = train(cfg2, resume=ref, handle_signals=False)
    assert rest.status == "finished" and rest.step == 8

    def losses(run):
        return {r["step"]: (r["loss"], r["lm_loss"], r["jepa_loss"]) for r in read_metrics(run) if r["type"] == "train"}

    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(a) == list(range(1, 9)) and a == b
    wa, wb = load_tensors(one.last_checkpoint), load_tensors(rest.last_checkpoint)
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
    # both segments name the source and the same start (the digest of the loaded weights, not of a random init)
    starts = [r for r in read_metrics(tmp_path / "two") if r.get("event") == "run_start"]
    assert len(starts) == 2 and starts[0]["init_from"] == starts[1]["init_from"]
    assert starts[0]["init_digest"] == starts[1]["init_digest"] == _start(tmp_path / "one")["init_digest"]
    random_start = JepaLM.from_config(cfg, starts[0]["vocab_size"], seed=cfg.train.seed).shared_lm_digest()
    assert starts[0]["init_digest"] != random_start


def test_cli_refuses_init_from_with_resume(source, cli):
    r = cli("train", "--resume", str(source), "--init-from", str(source), "--no-tui")
    assert r.returncode == 2 and "--init-from and --resume cannot be used together" in r.stderr
    assert f"use only --resume {source}" in " ".join(r.stderr.split())


# --------------------------------------------------------------------------- the command line and the records


def test_cli_without_profile_takes_the_source_config_and_every_reader_names_the_source(source, tmp_path, cli, monkeypatch):
    from jepa_core.config import load_config

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    given = f"{source}:step-4"
    r = cli("train", "--init-from", given, "--set", "train.max_steps=2", "--set", f"train.out_dir={json.dumps(str(out))}", "--no-tui")
    assert r.returncode == 0, r.stderr
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    cfg, src_cfg = load_config(str(run / rd.CONFIG)), load_config(str(source / rd.CONFIG))
    assert cfg.model == src_cfg.model and cfg.jepa == src_cfg.jepa and cfg.data.dataset == src_cfg.data.dataset
    assert cfg.train.init_from == given and cfg.train.max_steps == 2 and cfg.data.tokenizer == ""
    assert f"weights from {given} (step-00000004.safetensors, step 4)" in r.stdout
    start = _start(run)
    assert f"train.init_from={json.dumps(given)}" in start["overrides"] and start["init_from"]["step"] == 4
    # jepa runs: "from SRC (step N)", and not the --set that says the same
    listing = json.loads(cli("runs", str(out), "--json").stdout)
    assert listing[0]["init_from"] == f"from {given} (step 4)"
    table = cli("runs", str(out)).stdout
    assert "from" in table and "train.init_from" not in table
    # jepa inspect: a "started" row, from the checkpoint's own metadata
    shown = " ".join(cli("inspect", str(run)).stdout.split())
    assert f"started from {given} (step 4) · weights {start['init_from']['digest'][:25]}" in shown


def test_run_step_n_names_a_checkpoint(source):
    from jepa_core.tools.sample import load_for_sampling

    ref, how = rd.resolve_checkpoint(f"{source}:step-4")
    assert ref.step == 4 and ref.weights == source / rd.CKPT_DIR / rd.weights_name(4) and "step-00000004" in how
    assert load_for_sampling(f"{source}:step-00000004", device="cpu").step == 4
    with pytest.raises(CheckpointError, match="no checkpoint of step 5: its checkpoints are of steps 4, 8"):
        rd.resolve_checkpoint(f"{source}:step-5")
    assert rd.resume_checkpoint(f"{source}:step-4").step == 4


# --------------------------------------------------------------------------- bad sources


def test_bad_sources_are_one_clean_error(source, tmp_path):
    with pytest.raises(CheckpointError, match="there is no such file or folder"):
        init_from.resolve_source(str(tmp_path / "nope"))
    cut = tmp_path / "cut" / rd.CKPT_DIR / rd.weights_name(8)
    shutil.copytree(source, tmp_path / "cut")
    cut.write_bytes(cut.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated") as e:
        init_from.resolve_source(str(cut))
    assert e.value.message.startswith(f"Cannot start from {cut}")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not a weights checkpoint written by `jepa train`"):
        init_from.resolve_source(str(tmp_path / "foreign.safetensors"))
    # a weights file away from its run, without a tokenizer beside it
    lone = tmp_path / "lone.safetensors"
    shutil.copyfile(source / rd.CKPT_DIR / rd.weights_name(8), lone)
    with pytest.raises(CheckpointError, match="No tokenizer.json"):
        init_from.resolve_source(str(lone))


def test_tokenizer_that_does_not_fit_the_embedding_or_the_profile(source, tmp_path):
    from jepa_core.config import DataConfig
    from jepa_core.data.tokenizer import BPETokenizer

    src = init_from.resolve_source(str(source))
    other = tmp_path / "other.json"
    tok = BPETokenizer.train(["some other text to learn from, with more words"] * 20, 300)
    other.write_text(tok.to_str())
    assert tok.vocab_size != src.vocab_size == 320
    src.tokenizer = other
    with pytest.raises(DataError, match=f"has {tok.vocab_size} tokens but the token embedding has 320 rows"):
        init_from.check_tokenizer(src, DataConfig())
    src = init_from.resolve_source(str(source))
    with pytest.raises(ConfigError, match="is not the tokenizer of"):
        init_from.check_tokenizer(src, DataConfig(tokenizer=str(other)))
    # the source's own tokenizer named again is no conflict
    assert init_from.check_tokenizer(src, DataConfig(tokenizer=str(source)))[0] == (source / rd.TOKENIZER).resolve()


# --------------------------------------------------------------------------- jepa ablate --init-from


def test_ablate_starts_every_arm_from_the_source(source, text, tmp_path, one_thread, cli):
    from jepa_core.rundir.summary import read_records
    from jepa_core.tools import ablate as ab

    from test_ablate import small_overrides as ablate_overrides

    out = tmp_path / "abl"
    with pytest.raises(ConfigError, match="Arm `wide`: The model of profile `tiny` does not match"):
        ab.plan_ablation("tiny", 1, arms=["baseline:jepa.run_baseline=true", "wide:model.d_model=64"],
                         overrides=ablate_overrides(text), out=out, init_from=str(source))
    plan = ab.plan_ablation("tiny", 1, overrides=ablate_overrides(text, "train.max_steps=2"), out=out, init_from=str(source))
    assert f"train.init_from={json.dumps(str(source))}" in plan.overrides
    outcome = ab.run_ablation(plan)
    assert not outcome.failed and outcome.report["init"]["ok"] is True
    starts = {a.name: next(r for r in read_records(out / f"{a.name}-s0") if r.get("event") == "run_start") for a in plan.arms}
    assert set(starts) == {"baseline", "jepa"}
    assert all(s["init_from"]["source"] == str(source) for s in starts.values())
    assert starts["baseline"]["init_digest"] == starts["jepa"]["init_digest"]
    assert "dropped" in starts["baseline"]["init_from"] and "dropped" not in starts["jepa"]["init_from"]
    # an ablation keeps the source it was planned with
    r = cli("ablate", "--resume", str(out), "--init-from", str(source))
    assert r.returncode == 2 and "--init-from cannot change them" in " ".join(r.stderr.split())


# --------------------------------------------------------------------------- hf:DIR


@pytest.fixture(scope="module")
def llama_source(tmp_path_factory, home, text) -> Path:
    """A Llama-compatible baseline run (no output bias), 8 steps."""
    return _finished(tmp_path_factory.mktemp("llama-run"), home, text, "run", "model.logit_bias=false", baseline=True)


def test_frozen_step_from_the_runs_llama_export_evaluates_to_its_val_bpb(llama_source, text, tmp_path):
    pytest.importorskip("transformers")
    from jepa_core.tools.export import export_hf

    export_hf(llama_source, tmp_path / "hf")
    cfg = small_config(text, tmp_path / "runs", f'train.init_from="hf:{tmp_path / "hf"}"', "model.logit_bias=false", *FROZEN, baseline=True)
    result = train(cfg, run_dir=tmp_path / "ft", handle_signals=False)
    assert result.status == "finished"
    assert abs(result.last_eval["val_bpb"] - _eval_at(llama_source, 8)["val_bpb"]) < 1e-4
    start = _start(tmp_path / "ft")
    assert start["init_from"]["kind"] == "hf" and start["init_from"]["step"] is None
    assert any("logit_scale 1" in n for n in start["notes"])  # what reading the directory converted, said


def test_random_llama_gives_transformers_logits_through_a_start_from_it(text, tmp_path):
    """A transformers-made Llama: the shape hint gives the exact --sets, and the loaded model's logits
    are transformers' (its zero out_bias is dropped for a bias-free head)."""
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from hf_helpers import V, save_llama
    from jepa_core.data.tokenizer import BPETokenizer

    hf_dir = save_llama(tmp_path / "llama")
    given = f"hf:{hf_dir}"
    cfg = small_config(text, tmp_path, f"train.init_from={json.dumps(given)}", "model.logit_bias=false", baseline=True)
    with pytest.raises(ConfigError) as e:
        init_from.check_config(cfg)
    words = shlex.split(e.value.hint)
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    assert sorted(sets) == ["model.ff_multiplier=2.5", "model.ff_round=1", "model.rope_base=500.0"]
    cfg = small_config(text, tmp_path, f"train.init_from={json.dumps(given)}", "model.logit_bias=false", *sets, baseline=True)
    with pytest.raises(DataError, match="has no tokenizer.json"):
        init_from.check_config(cfg)
    tok = BPETokenizer.train([text.read_text()[:20000]], V)
    assert tok.vocab_size == V
    (hf_dir / "tokenizer.json").write_text(tok.to_str())
    src = init_from.check_config(cfg)
    model = _model(cfg, src.vocab_size)
    init_from.load_into(model, src)
    ids = torch.randint(0, V, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(hf_dir).eval()(input_ids=ids).logits
        got = model.eval().lm_logits(ids)
    assert want.abs().max() > 1.0 and (got - want).abs().max().item() < 1e-4
    # a JEPA run from it: fresh heads, the teacher copied from the loaded LM
    jcfg = small_config(text, tmp_path, f"train.init_from={json.dumps(given)}", *sets, "model.lm_bridge=false", teacher="encoder")
    jm = _model(jcfg, V)
    loaded = init_from.load_into(jm, init_from.check_config(jcfg))
    assert torch.equal(jm.state_dict()["teacher.encoder.blocks.0.attn.qkv.weight"], src.tensors()["transformer.blocks.0.attn.qkv.weight"])
    assert "jepa.*" in loaded.record["fresh"] and "dropped" not in loaded.record


def test_the_dashboard_trainer_gets_init_from_and_a_bad_source_is_refused_before_it(source, text, tmp_path, monkeypatch):
    import typer

    import jepa_cli.tui.launch as launch
    from jepa_cli.render.train import run_train

    seen = []
    monkeypatch.setattr(launch, "train_with_dashboard", lambda argv, run_dir: seen.append(argv) or 0)
    sets = [f"train.out_dir={json.dumps(str(tmp_path / 'runs'))}"]
    with pytest.raises(typer.Exit):
        run_train(profile=None, overrides=sets, resume=None, run_dir=None, tui=True, init_from=str(source))
    (argv,) = seen
    assert argv[argv.index("--init-from") + 1] == str(source) and "--profile" not in argv
    assert [argv[i + 1] for i, w in enumerate(argv) if w == "--set"] == sets  # the child adds train.init_from itself
    with pytest.raises(ConfigError, match="model.d_model"):
        run_train(profile="tiny", overrides=sets, resume=None, run_dir=None, tui=True, init_from=str(source))
    assert len(seen) == 1


def test_frozen_step_from_a_jepa_runs_own_export_evaluates_to_its_val_bpb(source, text, tmp_path):
    """A JEPA run exports as JepaForCausalLM (its bridge and output bias); a JEPA run started from
    that folder has the source's LM, bridge included, under the tap the folder names."""
    pytest.importorskip("transformers")
    from jepa_core.tools.export import export_hf

    export_hf(source, tmp_path / "hf")
    given = f"hf:{tmp_path / 'hf'}"
    src = init_from.resolve_source(given)
    assert src.has_bridge and src.model["tap_layer"] == -1 and src.model["logit_bias"] is True
    cfg = small_config(text, tmp_path / "runs", f"train.init_from={json.dumps(given)}", *FROZEN)
    result = train(cfg, run_dir=tmp_path / "ft", handle_signals=False)
    assert result.status == "finished"
    assert abs(result.last_eval["val_bpb"] - _eval_at(source, 8)["val_bpb"]) < 1e-4
    got, want = load_tensors(result.last_checkpoint), load_tensors(source / rd.CKPT_DIR / rd.weights_name(8))
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want if k.startswith("transformer.lm_bridge."))
    assert "jepa.*" in _start(tmp_path / "ft")["init_from"]["fresh"]


def test_ablate_init_from_seed_slot_gives_each_seed_its_own_base(source, baseline_source, text, tmp_path):
    # one base model per seed (the fine-tuning study): `{i}` is the seed index, and each seed's
    # arms are checked against their own base before anything runs
    from jepa_core.tools import ablate as ab

    from test_ablate import small_overrides as ablate_overrides

    bases = tmp_path / "bases"
    bases.mkdir()
    (bases / "b-s0").symlink_to(source)
    (bases / "b-s1").symlink_to(baseline_source)
    slot = str(bases / "b-s{i}")
    plan = ab.plan_ablation("tiny", 2, overrides=ablate_overrides(text), out=tmp_path / "abl", init_from=slot)
    for arm in ("baseline", "jepa"):
        assert [plan.config_for(arm, i).train.init_from for i in (0, 1)] == [str(bases / "b-s0"), str(bases / "b-s1")]
    # a seed without its base is refused at plan time, naming it: in --init-from, in an arm's own
    # train.init_from, and when --resume adds that seed
    with pytest.raises(CheckpointError, match="b-s2"):
        ab.plan_ablation("tiny", 3, overrides=ablate_overrides(text), out=tmp_path / "abl3", init_from=slot)
    with pytest.raises(CheckpointError, match="b-s2"):
        ab.plan_ablation("tiny", 3, arms=["baseline:jepa.run_baseline=true", f"own:train.init_from={json.dumps(slot)}"],
                         overrides=ablate_overrides(text), out=tmp_path / "abl4", init_from=str(source))
    with pytest.raises(CheckpointError, match="b-s2"):
        ab.extend_plan(plan, n_seeds=3)
    assert ab.extend_plan(plan, n_seeds=2).seeds == plan.seeds


def test_arms_may_start_from_different_sources_and_stay_paired_by_seed(source, baseline_source, text, tmp_path, one_thread):
    # the starting point as the treatment (a JEPA-pretrained base against an LM-only one): the
    # init digests differ by design, the batches do not, so the comparison stays paired
    from jepa_core.tools import ablate as ab
    from jepa_core.tools.ablate.markdown import data_order_text, init_text

    from test_ablate import small_overrides as ablate_overrides

    arms = ["baseline:jepa.run_baseline=true", f"from-jepa:jepa.run_baseline=true,train.init_from={json.dumps(str(source))}",
            'scratch:jepa.run_baseline=true,train.init_from=""']
    # fine-tuning text other than the sources' (its lines in reverse order): a BPE trained on it
    # from scratch differs from the sources' tokenizer
    other = tmp_path / "other.txt"
    other.write_text("\n".join(reversed(text.read_text().splitlines())))
    plan = ab.plan_ablation("tiny", 2, arms=arms, overrides=ablate_overrides(other, "train.max_steps=2"),
                            out=tmp_path / "abl", init_from=str(baseline_source))
    outcome = ab.run_ablation(plan)
    assert not outcome.failed
    rep = outcome.report
    assert rep["init"]["ok"] is not False and rep["init"]["mismatches"] == []
    assert {(d["arm"], d["seed_index"]) for d in rep["init"]["by_design"]} == {(a, i) for a in ("from-jepa", "scratch") for i in (0, 1)}
    assert "`from-jepa`, `scratch` start(s) from another source by design" in init_text(rep["init"])
    cmp = {a["name"]: a["comparison"] for a in rep["arms"]}
    assert cmp["from-jepa"]["paired"] is not None  # seeds and batches pair the runs
    # from scratch, the arm reads the data with a tokenizer of its own: other batches, by design,
    # so Welch's test, and the ablation is not failed for it
    assert rep["data_order"]["ok"] is True and rep["data_order"]["mismatches"] == []
    assert {e.split("`")[1] for e in rep["data_order"]["expected"]} == {"scratch"}
    assert cmp["scratch"]["paired"] is None and cmp["scratch"]["welch"] is not None
    assert "`scratch` start(s) from another source (train.init_from)" in data_order_text(rep["data_order"])
    # arms that name the same source must still start from the same weights
    plan_same = ab.plan_ablation("tiny", 2, arms=["baseline:jepa.run_baseline=true", "other:jepa.run_baseline=true"],
                                 overrides=ablate_overrides(text), out=tmp_path / "abl2", init_from=str(baseline_source))
    same = {f"{a}-s{i}": {"status": "finished", "init_digests": ["d"]} for a in ("baseline", "other") for i in (0, 1)}
    same["other-s1"]["init_digests"] = ["e"]
    from jepa_core.tools.ablate.report import verify_init

    v = verify_init(plan_same, same)
    assert v["ok"] is False and v["broken"] == [{"seed_index": 1, "arm": "other"}]
