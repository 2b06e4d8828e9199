"""The training loop: schedules, checkpoints, exact resume, signals, divergence, metrics."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from jepa_core.config import load_config
from jepa_core.errors import CheckpointError, ConfigError
from jepa_core.train import checkpoint as ck
from jepa_core.train.loop import resolve_resume, train
from jepa_core.rundir import read_latest
from jepa_core.train.schedule import lr_factor

from train_helpers import _use_home, home, read_metrics, small_config, small_text, text  # noqa: F401 (fixtures)




def test_lr_schedule_closed_form():
    o = load_config("tiny", ["optim.warmup_steps=10", "optim.min_lr_ratio=0.1"]).optim
    assert lr_factor(o, 1, 110) == pytest.approx(0.1)
    assert lr_factor(o, 10, 110) == pytest.approx(1.0)
    assert lr_factor(o, 60, 110) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(o, 110, 110) == pytest.approx(0.1)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ref = read_latest(run_dir)
    return ck.load_tensors(ref.weights)


def test_resume_is_bitwise_exact_with_encoder_teacher(tmp_path, text):
    """N steps in one go == N/2 steps, stop, resume, N/2 steps: same losses, same weights."""
    cfg = small_config(text, tmp_path / "runs", "model.dropout=0.1", teacher="encoder")
    one = train(cfg, run_dir=tmp_path / "one", handle_signals=False)
    assert one.status == "finished" and one.step == 8

    half = train(cfg, run_dir=tmp_path / "two", stop_after=4, handle_signals=False)
    assert half.status == "interrupted" and half.step == 4
    cfg2, ref = resolve_resume(str(tmp_path / "two"), cfg, cfg.name)
    assert ref.step == 4
    rest = train(cfg2, resume=ref, handle_signals=False)
    assert rest.status == "finished" and rest.step == 8

    def losses(run_dir):
        return {r["step"]: (r["loss"], r["lm_loss"], r["jepa_loss"], r["info_nce"]) for r in read_metrics(run_dir) if r["type"] == "train"}

    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert a == b  # bit-identical floats, including the resumed steps 5..8
    wa, wb = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert set(wa) == set(wb)
    assert any(k.startswith("teacher.encoder.") for k in wa)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_checkpoint_files_and_rotation(tmp_path, text):
    # plain rotation (the best checkpoint, kept outside it, is tested in test_best_checkpoint.py)
    cfg = small_config(text, tmp_path / "runs", "train.checkpoint_every=2", "train.keep_last=2", "train.keep_best=false")
    res = train(cfg, run_dir=tmp_path / "r", handle_signals=False)
    ckdir = tmp_path / "r" / "checkpoints"
    names = sorted(p.name for p in ckdir.iterdir())
    assert names == [
        "latest.json",
        "step-00000006.safetensors",
        "step-00000006.state.safetensors",
        "step-00000008.safetensors",
        "step-00000008.state.safetensors",
    ]
    assert json.loads((ckdir / "latest.json").read_text()) == {
        "step": 8,
        "weights": "step-00000008.safetensors",
        "state": "step-00000008.state.safetensors",
    }
    meta = ck.read_metadata(ckdir / "step-00000008.safetensors")
    for key in ("format", "config", "step", "tokens_seen", "tokenizer_sha256", "metrics", "jepa_version", "torch_version", "created"):
        assert key in meta, key
    assert meta["step"] == "8" and int(meta["tokens_seen"]) == 8 * 4 * 32
    assert json.loads(meta["metrics"])["val_bpb"] == pytest.approx(res.last_eval["val_bpb"])
    assert not any("_orig_mod" in k or k.startswith("module.") for k in ck.load_tensors(ckdir / "step-00000008.safetensors"))
    state = ck.read_metadata(ckdir / "step-00000008.state.safetensors")
    assert state["format"] == "jepa-state/1" and json.loads(state["optimizer"])["step"] == 8
    # run directory files
    run = tmp_path / "r"
    assert (run / "config.toml").is_file() and (run / "tokenizer.json").is_file()
    assert not (run / "train.pid").exists()


def test_saved_config_reloads_identical(tmp_path, text):
    from jepa_core.config import config_from_toml

    cfg = small_config(text, tmp_path / "runs")
    train(cfg, run_dir=tmp_path / "r", handle_signals=False)
    assert config_from_toml((tmp_path / "r" / "config.toml").read_text()) == cfg


def test_metrics_schema(tmp_path, text):
    cfg = small_config(text, tmp_path / "runs")
    train(cfg, run_dir=tmp_path / "j", handle_signals=False)
    train(small_config(text, tmp_path / "runs", baseline=True), run_dir=tmp_path / "b", handle_signals=False)
    train_keys = {"loss", "lm_loss", "lr", "grad_norm", "tokens", "tok_per_s", "lm_weight"}
    jepa_keys = {"jepa_loss", "info_nce", "var_loss", "cov_loss", "std_anchor", "std_pred", "ema_momentum", "jepa_weight",
                 "grad_norm_lm", "grad_norm_jepa", "grad_cos"}
    for run, is_jepa in ((tmp_path / "j", True), (tmp_path / "b", False)):
        recs = read_metrics(run)
        for r in recs:
            assert r["type"] in ("train", "eval", "event")
            assert isinstance(r["step"], int) and isinstance(r["time"], float)
        trains = [r for r in recs if r["type"] == "train"]
        evals = [r for r in recs if r["type"] == "eval"]
        events = [r["event"] for r in recs if r["type"] == "event"]
        assert len(trains) == 8 and [e["step"] for e in evals] == [4, 8]
        for r in trains:
            assert train_keys <= set(r)
            assert (jepa_keys <= set(r)) if is_jepa else not (jepa_keys & set(r))
            assert all(math.isfinite(r[k]) for k in train_keys | (jepa_keys if is_jepa else set()))
        for e in evals:
            assert {"val_loss", "val_ppl", "val_bpb"} <= set(e)
            assert e["val_ppl"] == pytest.approx(math.exp(e["val_loss"]))
            assert ("eff_rank" in e) == is_jepa
            assert any(k.startswith("retrieval_") for k in e) == is_jepa
        assert events[0] == "run_start" and events[-1] == "run_end"
        assert events.count("checkpoint") == 2 and "sample" in events
        start = recs[0]
        assert start["config"]["jepa"]["run_baseline"] is (not is_jepa)
        assert recs[-1]["status"] == "finished"
    # the JEPA run's first-step LM loss is near ln(vocab) at init (sanity of init + loss)
    first = read_metrics(tmp_path / "j")[1]
    assert abs(first["lm_loss"] - math.log(320)) < 1.0


def test_divergence_stops_and_keeps_last_checkpoint(tmp_path, text, monkeypatch):
    from jepa_core import model as model_pkg

    cls = model_pkg.JepaLM
    orig = cls.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets, lm_weight=1.0, **kw):
        out = orig(self, idx, targets, lm_weight, **kw)
        calls["n"] += 1
        if calls["n"] >= 6:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(cls, "forward", poisoned)
    cfg = small_config(text, tmp_path / "runs", "train.checkpoint_every=2")
    res = train(cfg, run_dir=tmp_path / "d", handle_signals=False)
    assert res.status == "diverged" and res.exit_code != 0 and res.step == 6
    assert "step 6" in res.message and "step-00000004.safetensors" in res.message
    ref = read_latest(tmp_path / "d")
    assert ref.step == 4
    tensors = ck.load_tensors(ref.weights)
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    end = read_metrics(tmp_path / "d")[-1]
    assert end["event"] == "run_end" and end["status"] == "diverged"


def test_full_disk_keeps_previous_checkpoint(tmp_path, text, monkeypatch):
    real = ck._save_tensors
    n = {"calls": 0}

    def flaky(folder, name, tensors, metadata):
        n["calls"] += 1
        if n["calls"] == 3:  # the second checkpoint's weights file
            with folder.atomic(name) as tmp:
                tmp.write_bytes(b"partial")
                raise OSError(28, "No space left on device")
        return real(folder, name, tensors, metadata)

    monkeypatch.setattr(ck, "_save_tensors", flaky)
    cfg = small_config(text, tmp_path / "runs", "train.checkpoint_every=2")
    res = train(cfg, run_dir=tmp_path / "f", handle_signals=False)
    assert res.status == "write_failed" and res.exit_code == 2 and "No space left" in res.message
    ref = read_latest(tmp_path / "f")
    assert ref.step == 2
    ck.load_tensors(ref.weights)  # readable
    assert not list((tmp_path / "f" / "checkpoints").glob(".*tmp"))


def test_resume_with_changed_model_is_refused(tmp_path, text):
    cfg = small_config(text, tmp_path / "runs")
    train(cfg, run_dir=tmp_path / "r", stop_after=4, handle_signals=False)
    changed = small_config(text, tmp_path / "runs", "model.d_model=64", "optim.lr=5e-4")
    with pytest.raises(ConfigError) as e:
        resolve_resume(str(tmp_path / "r"), changed, changed.name)
    assert "model.d_model" in str(e.value) and "optim.lr" in str(e.value)
    longer = small_config(text, tmp_path / "runs", "train.max_steps=10")
    cfg2, ref = resolve_resume(str(tmp_path / "r"), longer, longer.name)
    assert cfg2.train.max_steps == 10 and ref.step == 4
    with pytest.raises(CheckpointError):
        resolve_resume(str(tmp_path / "nowhere"), cfg, cfg.name)


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "jepa_cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_sigint_checkpoints_and_resumes(tmp_path, text, home):
    run = tmp_path / "sig"
    common = [
        "--profile", "tiny",
        "--set", f'data.dataset="text:{text}"', "--set", "data.vocab_size=320", "--set", "data.block_size=32",
        "--set", "model.d_model=32", "--set", "model.n_layers=2", "--set", "model.n_heads=2",
        "--set", "jepa.horizons=[1,4]", "--set", "jepa.horizon_probs=[0.5,0.5]", "--set", "jepa.latent_dim=16",
        "--set", "train.batch_size=4", "--set", "train.compile=false", "--set", "train.eval_every=1000", "--set", "train.checkpoint_every=1000",
        "--set", "log.every=1", "--set", "train.sample_tokens=0",
    ]
    proc = _cli("train", *common, "--set", "train.max_steps=100000", "--run-dir", str(run), "--no-tui", env=dict(os.environ, JEPA_HOME=str(home)))
    deadline = time.time() + 90
    metrics = run / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count('"type":"train"') >= 3:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("training did not start: " + proc.communicate()[1][-2000:])
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    ref = read_latest(run)
    assert ref is not None and ref.step >= 3
    ck.load_tensors(ref.weights)
    end = read_metrics(run)[-1]
    assert end["event"] == "run_end" and end["status"] == "interrupted"
    # resume continues from the checkpoint for a few more steps
    target = ref.step + 3
    proc = _cli("train", "--resume", str(run), "--set", f"train.max_steps={target}", "--no-tui", env=dict(os.environ, JEPA_HOME=str(home)))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    recs = read_metrics(run)
    resumed = [r for r in recs if r["type"] == "event" and r["event"] == "resume"]
    assert resumed and resumed[-1]["from_step"] == ref.step
    assert read_latest(run).step == target


def test_compile_falls_back_to_eager_without_a_cpp_compiler(tmp_path, text, monkeypatch):
    import torch._inductor.cpp_builder as cpp_builder

    def no_compiler():
        raise RuntimeError("no compiler")

    def compile_must_not_run(*a, **k):
        raise AssertionError("torch.compile was called although no C++ compiler works")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    monkeypatch.setattr(torch, "compile", compile_must_not_run)
    cfg = small_config(text, tmp_path / "runs", "train.compile=true", "train.max_steps=2")
    train(cfg, run_dir=tmp_path / "c", handle_signals=False)
    start = next(r for r in read_metrics(tmp_path / "c") if r.get("event") == "run_start")
    assert start["compile"] is False
    assert any("C++ compiler" in n for n in start["notes"])
    assert read_metrics(tmp_path / "c")[-1]["status"] == "finished"


def test_resume_is_bitwise_exact_with_muon(tmp_path, text):
    """The Muon momentum buffers go into the state file and come back exactly."""
    cfg = small_config(text, tmp_path / "runs", "optim.optimizer=muon")
    train(cfg, run_dir=tmp_path / "one", handle_signals=False)
    train(cfg, run_dir=tmp_path / "two", stop_after=4, handle_signals=False)
    state = ck.load_tensors(read_latest(tmp_path / "two").state)
    assert any(k.endswith(".momentum_buffer") for k in state) and any(k.endswith(".exp_avg") for k in state)
    # run_start says which Newton-Schulz dtype `auto` chose on this machine, and why
    start = next(r for r in read_metrics(tmp_path / "one") if r.get("event") == "run_start")
    assert start["muon_ns_dtype"].split(" (auto: ")[0] in ("float32", "bfloat16")
    from jepa_core.tools.inspect import inspect_checkpoint

    opt = inspect_checkpoint(read_latest(tmp_path / "two").state).optimizer
    assert opt["algorithm"] == "muon+adamw" and opt["step"] == 4
    assert [g["name"] for g in opt["groups"]] == ["heads", "backbone_decay", "backbone_no_decay", "muon"]
    assert set(opt["moments"]) == {"exp_avg", "exp_avg_sq", "momentum_buffer"}
    cfg2, ref = resolve_resume(str(tmp_path / "two"), cfg, cfg.name)
    train(cfg2, resume=ref, handle_signals=False)
    a = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "one") if r["type"] == "train"}
    b = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "two") if r["type"] == "train"}
    assert a == b and len(a) == 8
    wa, wb = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_state_from_another_optimizer_is_refused(tmp_path, text):
    from jepa_core.model import JepaLM, build_param_groups
    from jepa_core.train.optimizer import build_optimizer

    cfg = small_config(text, tmp_path / "runs", "optim.optimizer=adamw")
    train(cfg, run_dir=tmp_path / "r", stop_after=2, handle_signals=False)
    muon = small_config(text, tmp_path / "runs", "optim.optimizer=muon")
    model = JepaLM.from_config(muon, 320)
    opt = build_optimizer(build_param_groups(model, muon.optim), muon.optim, torch.device("cpu"))
    with pytest.raises(CheckpointError, match="optimizer groups"):
        ck.load_state_into(model, opt, read_latest(tmp_path / "r").state)


def test_resume_of_a_foreign_weights_file_is_a_clear_error(tmp_path):
    """A safetensors file whose metadata has no jepa `config` (another tool's weights): exit-2 error, no KeyError."""
    from safetensors.torch import save_file

    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    f = ckpts / "step-00000010.safetensors"
    save_file({"w": torch.zeros(2)}, str(f), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as e:  # (before: KeyError 'config', a traceback)
        resolve_resume(str(f), None, None)
    assert "step-00000010.safetensors" in e.value.message


def test_throughput_after_resume_counts_only_this_process(tmp_path, text):
    cfg = small_config(text, tmp_path / "runs")
    train(cfg, run_dir=tmp_path / "r", stop_after=6, handle_signals=False)
    cfg2, ref = resolve_resume(str(tmp_path / "r"), cfg, cfg.name)
    rest = train(cfg2, resume=ref, handle_signals=False)
    per_step = cfg.train.batch_size * cfg.data.block_size
    assert rest.status == "finished" and rest.tokens == 8 * per_step  # tokens since step 0
    # the rate divides what this process trained (2 steps) by this process's training time
    assert rest.tok_per_s == pytest.approx(2 * per_step / rest.train_s)


def test_learning_rates_logged_per_group(tmp_path, text):
    """`lr` is the backbone's rate, `lr_head` the heads', `muon_lr` Muon's: each its base times the schedule."""
    cfg = small_config(text, tmp_path / "runs", 'optim.optimizer="muon"', "optim.lr=0.002", "optim.lr_head=0.0007",
                       "optim.muon_lr=0.03", "log.every=1")
    train(cfg, run_dir=tmp_path / "m", handle_signals=False)
    recs = [r for r in read_metrics(tmp_path / "m") if r["type"] == "train"]
    assert len(recs) == cfg.train.max_steps
    for r in recs:
        f = lr_factor(cfg.optim, r["step"], cfg.train.max_steps)
        assert r["lr"] == pytest.approx(0.002 * f) and r["lr_head"] == pytest.approx(0.0007 * f)
        assert r["muon_lr"] == pytest.approx(0.03 * f)


def test_gradient_accumulation_resumes_exactly_with_disjoint_micro_batches(tmp_path, text, one_thread):
    """grad_accum_steps = 2: a step's two micro-batches are different windows, and a run split by a
    resume matches the uninterrupted one bit for bit."""
    from jepa_core.train.loop import TrainCallbacks

    class Windows(TrainCallbacks):
        def __init__(self):
            self.seen: list[tuple[int, bytes]] = []

        def on_batch(self, index, x, y):
            self.seen.append((index, {row.numpy().tobytes() for row in x}))  # one entry per window

    cfg = small_config(text, tmp_path / "runs", "train.grad_accum_steps=2", "train.max_steps=6", "train.eval_every=3",
                       "train.checkpoint_every=3")
    rec = Windows()
    one = train(cfg, run_dir=tmp_path / "one", handle_signals=False, callbacks=rec)
    assert one.status == "finished" and [i for i, _ in rec.seen] == list(range(12))
    for s in range(6):  # micro-batches 2s and 2s+1 make step s+1: 2 x batch_size distinct windows
        a, b = rec.seen[2 * s][1], rec.seen[2 * s + 1][1]
        assert len(a) == len(b) == cfg.train.batch_size and not a & b
    train(cfg, run_dir=tmp_path / "two", stop_after=3, handle_signals=False)
    cfg2, ref = resolve_resume(str(tmp_path / "two"), cfg, cfg.name)
    rest = train(cfg2, resume=ref, handle_signals=False)
    assert rest.status == "finished" and rest.step == 6

    def losses(run_dir):
        return {r["step"]: (r["loss"], r["grad_norm"]) for r in read_metrics(run_dir) if r["type"] == "train"}

    assert losses(tmp_path / "one") == losses(tmp_path / "two")
    wa, wb = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
