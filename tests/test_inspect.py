"""`jepa inspect`: header parsing, parameter split, run-dir resolution, state files, output.

Checkpoints are written here with safetensors' own writer (`safetensors.torch.save_file`)
in the documented format, so the reader is checked against an independent writer,
not against itself. Bad files are built by corrupting good ones byte by byte.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from jepa_core.errors import CheckpointError  # noqa: E402
from jepa_core.rundir.header import MAX_HEADER_BYTES  # noqa: E402
from jepa_core.tools.inspect import (  # noqa: E402
    inspect_checkpoint,
    metric_items,
    module_of,
    param_category,
    read_header,
    resolve_checkpoint,
)

# --------------------------------------------------------------------------- fixtures

D, V, LAT, HID = 8, 32, 4, 8  # d_model, vocab, latent_dim, head hidden (hidden_mult 2 * latent 4)

CONFIG_TOML = """name = "mini"
description = "test"

[model]
d_model = 8
n_layers = 2
n_heads = 2
tap_layer = -1
weight_tying = true

[jepa]
run_baseline = false
teacher = "projector"
latent_dim = 4
horizons = [2, 4, 6]
horizon_probs = [0.5, 0.3, 0.2]

[data]
dataset = "tiny_shakespeare"
vocab_size = 260
block_size = 16
"""

EVAL = {
    "type": "eval", "step": 40, "time": 1.7e9, "val_loss": 2.5, "val_ppl": 12.18, "val_bpb": 1.8125,
    "retrieval_top1_h2": 0.5, "retrieval_top1_norm_h2": 0.45, "retrieval_margin": 0.25,
    "retrieval_top1_h32": 0.125, "retrieval_top1_h8": 0.25, "eff_rank": 3.5, "tokens": 2048, "elapsed": 3.0,
}  # fmt: skip


def _t(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed + 17 * len(shape) + sum(shape))
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def model_tensors(tied=True, teacher=True, bf16_emb=False):
    """A miniature of the real state dict (same names as JepaLM, tiny shapes)."""
    t = {
        "transformer.tok_emb.weight": _t(V, D, dtype=torch.bfloat16 if bf16_emb else torch.float32),  # 256
        "transformer.norm_f.weight": _t(D, seed=1),  # 8
        "transformer.tap_norm.weight": _t(D, seed=2),  # 8
        "transformer.lm_bridge.0.weight": _t(D, seed=3),  # 8
        "transformer.lm_bridge.1.weight": _t(D, D, seed=4),  # 64
        "transformer.lm_bridge.1.bias": _t(D, seed=5),  # 8
        "transformer.lm_bridge.4.weight": _t(D, D, seed=6),  # 64
        "transformer.lm_bridge.4.bias": _t(D, seed=7),  # 8
        "transformer.bridge_gate": torch.tensor(-2.0),  # 1
        "transformer.logit_scale": torch.tensor(1 / math.sqrt(D)),  # 1
        "transformer.out_bias": torch.zeros(V),  # 32
        "jepa.online_proj.0.weight": _t(HID, D, seed=8),  # 64
        "jepa.online_proj.0.bias": _t(HID, seed=9),  # 8
        "jepa.online_proj.3.weight": _t(LAT, HID, seed=10),  # 32
        "jepa.online_proj.3.bias": _t(LAT, seed=11),  # 4
        "jepa.predictor.0.weight": _t(HID, 2 * LAT, seed=12),  # 64
        "jepa.predictor.0.bias": _t(HID, seed=13),  # 8
        "jepa.predictor.3.weight": _t(LAT, HID, seed=14),  # 32
        "jepa.predictor.3.bias": _t(LAT, seed=15),  # 4
        "jepa.horizon_emb.weight": _t(3, LAT, seed=16),  # 12
    }
    for i in range(2):  # 8 + 192 + 64 + 8 + 256 + 128 = 656 per block
        b = f"transformer.blocks.{i}."
        t[b + "attn_norm.weight"] = _t(D, seed=20 + i)
        t[b + "attn.qkv.weight"] = _t(3 * D, D, seed=30 + i)
        t[b + "attn.proj.weight"] = _t(D, D, seed=40 + i)
        t[b + "mlp_norm.weight"] = _t(D, seed=50 + i)
        t[b + "mlp.w12.weight"] = _t(4 * D, D, seed=60 + i)
        t[b + "mlp.w3.weight"] = _t(D, 2 * D, seed=70 + i)
    if not tied:
        t["transformer.lm_head.weight"] = _t(V, D, seed=80)  # 256
    if teacher:
        for k in [k for k in t if k.startswith("jepa.online_proj.")]:
            t["teacher.target_proj." + k[len("jepa.online_proj.") :]] = t[k].clone()  # 108
    return t


# Hand-computed parameter split of model_tensors():
#   backbone = tok_emb 256 + 2 blocks * 656 + norm_f 8 + tap_norm 8 + lm_bridge (8+64+8+64+8 = 152) + bridge_gate 1 = 1737
#   LM head  = logit_scale 1 + out_bias 32 = 33 (+ lm_head 256 when untied)
#   JEPA     = online_proj (64+8+32+4 = 108) + predictor (64+8+32+4 = 108) + horizon_emb 12 = 228
#   teacher  = target_proj 108
BACKBONE, LM_HEAD, JEPA_HEADS, TEACHER = 1737, 33, 228, 108
# With tying, tok_emb is the LM head's weight (its role is "lm_head", as in the optimizer groups):
#   backbone = 1737 - 256 = 1481, LM head = 33 + 256 = 289
TIED_BACKBONE, TIED_LM_HEAD = BACKBONE - 256, LM_HEAD + 256


def weights_meta(step=40, **over):
    meta = {
        "format": "jepa-weights/1",
        "kind": "weights",
        "config": CONFIG_TOML,
        "profile": "mini",
        "step": str(step),
        "tokens_seen": str(step * 512),
        "tokenizer_sha256": "0123456789abcdef" * 4,
        "metrics": json.dumps(EVAL),
        "jepa_version": "0.1.0",
        "torch_version": "2.13.0",
        "created": "2026-11-25T10:15:00+00:00",
        "weight_tying": "true",
    }
    meta.update(over)
    return {k: v for k, v in meta.items() if v is not None}


def write_weights(path: Path, step=40, tensors=None, **meta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors if tensors is not None else model_tensors(), str(path), metadata=weights_meta(step, **meta))
    return path


GROUPS = [
    {"name": "heads", "lr": 3e-3, "weight_decay": 0.0, "betas": [0.9, 0.95], "eps": 1e-8,
     "params": ["transformer.tok_emb.weight", "transformer.logit_scale", "transformer.out_bias"]},
    {"name": "backbone_decay", "lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8,
     "params": ["transformer.blocks.0.attn.qkv.weight", "transformer.blocks.0.mlp.w12.weight"]},
    {"name": "backbone_no_decay", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.95], "eps": 1e-8,
     "params": ["transformer.norm_f.weight"]},
]  # fmt: skip


def write_state(path: Path, step=40) -> Path:
    w = model_tensors()
    names = [n for g in GROUPS for n in g["params"]]
    tensors = {}
    for n in names:
        tensors[f"optim.{n}.exp_avg"] = torch.zeros_like(w[n])
        tensors[f"optim.{n}.exp_avg_sq"] = torch.ones_like(w[n])
    tensors["rng.torch_cpu"] = torch.zeros(5056, dtype=torch.uint8)
    meta = {
        "format": "jepa-state/1",
        "kind": "state",
        "step": str(step),
        "tokens_seen": str(step * 512),
        "optimizer": json.dumps({"groups": GROUPS, "step": float(step), "param_steps": {n: float(step) for n in names}}),
        "data": json.dumps({"epoch": 1, "position": 4096, "seed": 1337}),
        "rng": json.dumps({"python": [3, list(range(625)), None], "numpy": {"key": "MT19937", "state": list(range(624)), "pos": 3}}),
        "created": "2026-11-25T10:15:00+00:00",
    }
    save_file(tensors, str(path), metadata=meta)
    return path


def make_run(tmp_path: Path, steps=(20, 40), latest: int | None = 40) -> Path:
    run = tmp_path / "mini-20261125-101500"
    ck = run / "checkpoints"
    for s in steps:
        write_weights(ck / f"step-{s:08d}.safetensors", step=s)
        write_state(ck / f"step-{s:08d}.state.safetensors", step=s)
    if latest is not None:
        (ck / "latest.json").write_text(
            json.dumps({"step": latest, "weights": f"step-{latest:08d}.safetensors", "state": f"step-{latest:08d}.state.safetensors"})
        )
    (run / "config.toml").write_text(CONFIG_TOML)
    return run


# --------------------------------------------------------------------------- CLI helpers


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess: exit codes and tracebacks as a user sees them."""
    env = {k: v for k, v in os.environ.items() if k != "JEPA_DEBUG"}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "jepa_cli", "inspect", *args], capture_output=True, text=True, timeout=60, env=env
    )


def cli_fast(args, capsys, monkeypatch):
    """In-process `main()` (same error handling as the installed script, no interpreter start-up)."""
    from jepa_cli.main import main

    monkeypatch.delenv("JEPA_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["jepa", "inspect", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def assert_user_error(code, out, err, *needles):
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    assert err.startswith("error:"), err
    flat = " ".join(err.split())  # Rich wraps at the console width
    for n in needles:
        assert n in flat, (n, err)


# --------------------------------------------------------------------------- good files


def test_weights_file_report_and_parameter_split(tmp_path):
    p = write_weights(tmp_path / "step-00000040.safetensors")
    r = inspect_checkpoint(p)
    assert (r.is_jepa, r.format, r.kind, r.profile, r.step, r.tokens_seen) == (True, "jepa-weights/1", "weights", "mini", 40, 20480)
    assert r.created == "2026-11-25T10:15:00+00:00" and r.torch_version == "2.13.0" and r.jepa_version == "0.1.0"
    assert r.tokenizer_sha256 == "0123456789abcdef" * 4
    assert r.metrics["val_bpb"] == 1.8125 and r.metrics["eff_rank"] == 3.5
    assert r.params == {
        "backbone": TIED_BACKBONE, "lm_head": TIED_LM_HEAD, "jepa_heads": JEPA_HEADS, "teacher": TEACHER,
        "other": 0, "buffers": 0,
        "trainable": BACKBONE + LM_HEAD + JEPA_HEADS, "total": BACKBONE + LM_HEAD + JEPA_HEADS + TEACHER,
    }  # fmt: skip
    assert r.weight_tying is True and r.tied_embedding == "transformer.tok_emb.weight"
    # totals against the tensors themselves, counted independently
    ref = model_tensors()
    assert r.totals["tensors"] == len(ref)
    assert r.totals["params"] == sum(t.numel() for t in ref.values()) == r.params["total"]
    assert r.totals["bytes"] == sum(t.numel() * t.element_size() for t in ref.values())
    shapes = {t.name: t.shape for t in r.tensors}
    assert shapes["transformer.blocks.1.mlp.w12.weight"] == [32, 8] and shapes["transformer.logit_scale"] == []
    assert r.config_summary == {
        "name": "mini", "d_model": 8, "n_layers": 2, "n_heads": 2, "vocab_size": V, "block_size": 16,
        "dataset": "tiny_shakespeare", "weight_tying": True, "run_baseline": False,
        "teacher": "projector", "tap_layer": -1, "latent_dim": 4, "horizons": [2, 4, 6],
    }  # fmt: skip
    assert r.warnings == [] and r.stats is False and all(t.norm is None for t in r.tensors)


def test_untied_lm_head_and_baseline_split(tmp_path):
    p = write_weights(tmp_path / "u.safetensors", tensors=model_tensors(tied=False), weight_tying="false")
    r = inspect_checkpoint(p)
    assert r.params["lm_head"] == LM_HEAD + V * D and r.params["backbone"] == BACKBONE
    assert r.weight_tying is False and r.tied_embedding is None
    base = {k: v for k, v in model_tensors(teacher=False).items() if not k.startswith("jepa.")}
    p = write_weights(tmp_path / "b.safetensors", tensors=base, weight_tying=None)  # tying inferred from the tensors
    r = inspect_checkpoint(p)
    assert (r.params["jepa_heads"], r.params["teacher"], r.params["total"]) == (0, 0, BACKBONE + LM_HEAD)
    assert r.weight_tying is True


def test_module_grouping_and_categories():
    assert module_of("transformer.blocks.3.attn.qkv.weight") == "transformer.blocks.3"
    assert module_of("teacher.encoder.blocks.0.mlp.w3.weight") == "teacher.encoder.blocks.0"
    assert module_of("jepa.online_proj.3.bias") == "jepa.online_proj"
    assert module_of("transformer.lm_bridge.1.weight") == "transformer.lm_bridge"
    assert module_of("transformer.logit_scale") == "transformer.logit_scale"
    assert module_of("transformer.norm_f.weight") == "transformer.norm_f"
    assert module_of("optim.transformer.blocks.0.attn.qkv.weight.exp_avg_sq") == "optim.exp_avg_sq"
    assert module_of("rng.cuda.1") == "rng.cuda"
    assert param_category("transformer.lm_head.weight") == "lm_head"
    assert param_category("transformer.out_bias") == "lm_head"
    assert param_category("transformer.lm_bridge.1.weight") == "backbone"
    assert param_category("teacher.encoder.tok_emb.weight") == "teacher"
    assert param_category("jepa.horizon_emb.weight") == "jepa_heads"
    assert param_category("transformer.blocks.0.attn.rope.cos") == "buffers"
    assert param_category("rng.torch_cpu", "U8") == "buffers"
    assert param_category("encoder.layer.0.weight") == "other"


def test_modules_have_subtotals_in_natural_order(tmp_path):
    t = model_tensors()
    for i in range(2, 11):  # blocks 0..10: "10" must sort after "2"
        for k in [k for k in t if k.startswith("transformer.blocks.0.")]:
            t[k.replace("blocks.0.", f"blocks.{i}.")] = t[k].clone()
    r = inspect_checkpoint(write_weights(tmp_path / "m.safetensors", tensors=t))
    blocks = [m for m in r.modules if m.repeat == "transformer.blocks"]
    assert [m.name for m in blocks] == [f"transformer.blocks.{i}" for i in range(11)]
    assert all(m.params == 656 and len(m.tensors) == 6 for m in blocks)
    assert [m.section for m in r.modules][0] == "transformer" and r.modules[-1].section == "teacher"
    assert sum(m.params for m in r.modules) == r.totals["params"]


def test_stats_norms_match_float64_reference(tmp_path):
    t = model_tensors(bf16_emb=True)
    t["transformer.out_bias"] = _t(V, seed=99, dtype=torch.float16)
    t["transformer.blocks.1.mlp.w3.weight"] = torch.tensor([[float("nan"), 1.0], [float("inf"), 2.0]])
    r = inspect_checkpoint(write_weights(tmp_path / "s.safetensors", tensors=t), stats=True)
    got = {x.name: x for x in r.tensors}
    assert got["transformer.tok_emb.weight"].dtype == "BF16" and got["transformer.out_bias"].dtype == "F16"
    for name, ref in t.items():
        if name == "transformer.blocks.1.mlp.w3.weight":
            continue
        expect = ref.double().norm().item()  # torch's own widening is the reference for bf16/f16
        assert got[name].norm == pytest.approx(expect, rel=1e-12, abs=1e-12), name
    bad = got["transformer.blocks.1.mlp.w3.weight"]
    assert bad.norm is None and bad.nonfinite == 2
    blk = next(m for m in r.modules if m.name == "transformer.blocks.0")
    expect = math.sqrt(sum(t[n].double().norm().item() ** 2 for n in t if n.startswith("transformer.blocks.0.")))
    assert blk.norm == pytest.approx(expect, rel=1e-12)
    assert r.to_dict()["tensors"][0]["norm"] is not None


def test_state_file_summary(tmp_path):
    p = write_state(tmp_path / "step-00000040.state.safetensors")
    r = inspect_checkpoint(p)
    assert (r.kind, r.step, r.tokens_seen, r.params) == ("state", 40, 20480, None)
    opt = r.optimizer
    assert opt["step"] == 40 and len(opt["groups"]) == 3
    assert [(g["name"], g["n_params"], g["lr"], g["weight_decay"]) for g in opt["groups"]] == [
        ("heads", 3, 3e-3, 0.0), ("backbone_decay", 2, 1e-3, 0.1), ("backbone_no_decay", 1, 1e-3, 0.0)
    ]  # fmt: skip
    # 6 parameters, two moments each; elements: tok_emb 256 + 1 + 32 + qkv 192 + w12 256 + norm_f 8 = 745
    assert opt["params_with_moments"] == 6 and opt["moment_tensors"] == 12
    assert opt["moments"]["exp_avg"] == {"tensors": 6, "elements": 745, "bytes": 745 * 4}
    assert opt["moment_bytes"] == 2 * 745 * 4
    assert r.rng == {"torch_cpu": "U8 tensor, 5,056 bytes", "python": "Mersenne Twister, 625 words", "numpy": "MT19937, 624 words"}
    assert r.data == {"epoch": 1, "position": 4096, "seed": 1337}
    assert [m.name for m in r.modules] == ["optim.exp_avg", "optim.exp_avg_sq", "rng.torch_cpu"]


def test_metric_order():
    keys = [k for k, _ in metric_items(EVAL)]
    assert keys == [
        "val_bpb", "val_loss", "val_ppl", "retrieval_top1_h2", "retrieval_top1_h8", "retrieval_top1_h32",
        "retrieval_top1_norm_h2", "retrieval_margin", "eff_rank",
    ]  # fmt: skip
    assert metric_items(None) == [] and metric_items({}) == []


# --------------------------------------------------------------------------- run directories


def test_run_dir_uses_latest_json_not_the_newest_file(tmp_path):
    run = make_run(tmp_path, steps=(20, 40), latest=20)  # e.g. step 40 written but latest.json not yet replaced
    target, how = resolve_checkpoint(run)
    assert target.name == "step-00000020.safetensors" and "latest.json names step 20" in how
    r = inspect_checkpoint(run / "checkpoints")
    assert r.step == 20 and r.available_steps == [20, 40]
    assert r.state_file.endswith("step-00000020.state.safetensors")


@pytest.mark.parametrize(
    "latest, why",
    [(None, "is missing"), ("{not json", "is unreadable"), ('{"step": 40}', "is unreadable"),
     ('{"step": 60, "weights": "step-00000060.safetensors"}', "which does not exist")],
)  # fmt: skip
def test_run_dir_falls_back_to_newest_weights(tmp_path, latest, why):
    run = make_run(tmp_path, steps=(20, 40, 100), latest=None)
    if latest is not None:
        (run / "checkpoints" / "latest.json").write_text(latest)
    r = inspect_checkpoint(run)
    assert r.step == 100 and why in r.source and "newest weights file, step-00000100.safetensors" in r.source


def test_cli_run_dir_shows_step_params_and_bpb(tmp_path):
    run = make_run(tmp_path)
    res = cli(str(run))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "latest.json names step 40" in out
    assert "step" in out and "40 · 20,480 tokens seen" in out
    assert "val_bpb 1.8125" in out and "eff_rank 3.5" in out
    assert f"{TIED_BACKBONE:,}" in out and f"{JEPA_HEADS:,}" in out and f"{TEACHER:,}" in out
    assert "the embedding transformer.tok_emb.weight is its weight" in out
    assert "transformer.blocks.1" in out and "attn.qkv.weight" in out and "[24, 8]" in out
    assert "--config shows the full profile" in out and "[jepa]" not in out
    assert "Traceback" not in res.stderr


def test_cli_options_config_stats_all_and_state(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path)
    w = run / "checkpoints" / "step-00000040.safetensors"
    code, out, _ = cli_fast([w, "--config"], capsys, monkeypatch)
    assert code == 0 and "resolved config" in out and 'teacher = "projector"' in out
    code, out, _ = cli_fast([w, "--stats"], capsys, monkeypatch)
    assert code == 0 and "norm" in out
    # blocks after the first are folded by default, expanded with --all
    code, out, _ = cli_fast([w], capsys, monkeypatch)
    assert "blocks.1.attn.qkv.weight" not in out.replace("transformer.", "")
    code, out, _ = cli_fast([w, "--all"], capsys, monkeypatch)
    assert code == 0 and out.count("attn.qkv.weight") >= 2
    code, out, _ = cli_fast([run / "checkpoints" / "step-00000040.state.safetensors"], capsys, monkeypatch)
    assert code == 0
    assert "AdamW step 40 · 3 groups · 12 moment tensors" in out and "backbone_decay" in out
    assert "Mersenne Twister" in out and "position=4096" in out


JSON_KEYS = {
    "path", "file_size", "header_size", "is_jepa", "format", "kind", "profile", "step", "tokens_seen", "created",
    "jepa_version", "torch_version", "tokenizer_sha256", "weight_tying", "metrics", "config_toml", "config_summary",
    "tensors", "modules", "totals", "params", "tied_embedding", "optimizer", "rng", "data", "stats", "source",
    "state_file", "available_steps", "extra_metadata", "warnings", "init_from", "payload_digest", "verified",
}  # fmt: skip


def test_json_output_keys(tmp_path):
    run = make_run(tmp_path)
    res = cli(str(run), "--json", "--stats")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert set(d) == JSON_KEYS
    assert d["step"] == 40 and d["metrics"]["val_bpb"] == 1.8125
    assert d["params"]["trainable"] == BACKBONE + LM_HEAD + JEPA_HEADS
    assert set(d["tensors"][0]) == {"name", "dtype", "shape", "params", "nbytes", "category", "module", "norm", "nonfinite"}
    assert set(d["modules"][0]) == {"name", "section", "tensors", "params", "nbytes", "norm", "repeat"}
    assert all(isinstance(t["norm"], float) for t in d["tensors"])
    res = cli(str(run / "checkpoints" / "step-00000020.state.safetensors"), "--json")
    d = json.loads(res.stdout)
    assert set(d) == JSON_KEYS and d["kind"] == "state" and d["optimizer"]["step"] == 20


def test_reader_imports_neither_torch_nor_numpy(tmp_path):
    run = make_run(tmp_path)
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from jepa_cli.main import app\n"
        f"r = CliRunner().invoke(app, ['inspect', {str(run)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(','.join(m for m in ('torch', 'numpy', 'safetensors', 'jepa_core.train', 'jepa_core.config') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------- bad files


@pytest.fixture
def good(tmp_path) -> Path:
    return write_weights(tmp_path / "good.safetensors")


def _header_len(p: Path) -> int:
    return int.from_bytes(p.read_bytes()[:8], "little")


def test_text_file_is_not_safetensors(tmp_path, capsys, monkeypatch):
    p = tmp_path / "notes.safetensors"
    p.write_text("this is a text file, not a checkpoint\n")
    assert_user_error(*cli_fast([p], capsys, monkeypatch), "is not a safetensors file", "text file")


def test_torch_save_zip_is_refused_without_unpickling(tmp_path, capsys, monkeypatch):
    p = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, p)
    assert zipfile.is_zipfile(p)
    assert_user_error(*cli_fast([p], capsys, monkeypatch), "not a safetensors file", "zip", "never unpickles")


def test_pickle_is_refused_without_unpickling(tmp_path, capsys, monkeypatch):
    class Boom:
        def __reduce__(self):  # would create a marker file if anything unpickled it
            return (Path.touch, (tmp_path / "UNPICKLED",))

    p = tmp_path / "old.ckpt"
    p.write_bytes(pickle.dumps(Boom(), protocol=4))
    assert_user_error(*cli_fast([p], capsys, monkeypatch), "not a safetensors file", "pickle", "never unpickles")
    assert not (tmp_path / "UNPICKLED").exists()


@pytest.mark.parametrize("size", [0, 3, 7])
def test_file_smaller_than_length_field(tmp_path, capsys, monkeypatch, size):
    p = tmp_path / "tiny.safetensors"
    p.write_bytes(b"\x10" * size)
    assert_user_error(*cli_fast([p], capsys, monkeypatch), "truncated", f"holds {size} bytes")


def test_header_cut_short(good, capsys, monkeypatch):
    n = _header_len(good)
    good.write_bytes(good.read_bytes()[: 8 + n // 2])  # an interrupted copy, mid-header
    assert_user_error(*cli_fast([good], capsys, monkeypatch), "truncated", f"claims {n:,} bytes", f"only {n // 2:,} bytes")


def test_header_length_beyond_file(tmp_path, capsys, monkeypatch):
    p = tmp_path / "liar.safetensors"
    p.write_bytes((50_000_000).to_bytes(8, "little") + b'{"__metadata__": {}}')
    assert_user_error(*cli_fast([p], capsys, monkeypatch), "truncated", "claims 50,000,000 bytes", "only 20 bytes")


def test_header_over_limit_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    p = tmp_path / "huge.safetensors"
    n = MAX_HEADER_BYTES + 1
    with open(p, "wb") as f:  # a sparse file that really holds that many header bytes
        f.write(n.to_bytes(8, "little") + b"{")
        f.truncate(8 + n + 16)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="over the 100 MB limit"):
            read_header(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # nothing close to the claimed header was read
    assert_user_error(*cli_fast([p], capsys, monkeypatch), "over the 100 MB limit", "refusing")


def test_header_not_json(good, capsys, monkeypatch):
    data = bytearray(good.read_bytes())
    data[9:14] = b"\xff!!?x"  # right after the opening brace
    good.write_bytes(bytes(data))
    assert_user_error(*cli_fast([good], capsys, monkeypatch), "header is not valid JSON")


def test_tensor_data_beyond_end_of_file(good, capsys, monkeypatch):
    n = _header_len(good)
    good.write_bytes(good.read_bytes()[: 8 + n + 100])  # header intact, data cut
    assert_user_error(*cli_fast([good], capsys, monkeypatch), "truncated", "ends at byte", f"holds {8 + n + 100:,} bytes")


def test_offsets_disagreeing_with_shape(tmp_path, capsys, monkeypatch):
    hdr = json.dumps({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    p = tmp_path / "bad.safetensors"
    p.write_bytes(len(hdr).to_bytes(8, "little") + hdr + bytes(8))
    assert_user_error(*cli_fast([p], capsys, monkeypatch), "needs 16 bytes", "span 8")


def test_safetensors_without_jepa_metadata(tmp_path, capsys, monkeypatch):
    p = tmp_path / "hf.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4), "encoder.layer.1.weight": torch.zeros(4, 4)}, str(p))
    r = inspect_checkpoint(p)
    assert not r.is_jepa and r.totals["params"] == 32 and "not a jepa checkpoint" in r.warnings[0]
    assert r.params is None and r.kind is None
    code, out, err = cli_fast([p], capsys, monkeypatch)
    assert_user_error(code, out, err, "not a jepa checkpoint", "only its tensors are shown")
    assert "encoder.layer.0" in out and "32" in out  # the tensors are still shown


def test_missing_path_and_empty_directory(tmp_path, capsys, monkeypatch):
    assert_user_error(*cli_fast([tmp_path / "nope"], capsys, monkeypatch), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_user_error(*cli_fast([tmp_path / "empty"], capsys, monkeypatch), "without checkpoints")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert_user_error(*cli_fast([tmp_path / "run"], capsys, monkeypatch), "holds no weights checkpoints")


def test_bad_file_error_via_installed_entry_point(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello world, definitely not tensors")
    res = cli(str(p))
    assert res.returncode == 2 and "not a safetensors file" in res.stderr and "Traceback" not in res.stderr


def test_inspect_reads_only_the_header(tmp_path):
    """A 100 MB (sparse) checkpoint is inspected with a few kB of allocations."""
    p = tmp_path / "big.safetensors"
    hdr = json.dumps(
        {"__metadata__": weights_meta(), "transformer.tok_emb.weight": {"dtype": "F32", "shape": [25_000_000], "data_offsets": [0, 100_000_000]}}
    ).encode()
    with open(p, "wb") as f:
        f.write(len(hdr).to_bytes(8, "little") + hdr)
        f.truncate(8 + len(hdr) + 100_000_000)
    tracemalloc.start()
    try:
        r = inspect_checkpoint(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.totals["params"] == 25_000_000 and peak < 2_000_000
    r = inspect_checkpoint(p, stats=True)  # zeros: the norm is exactly 0
    assert r.tensors[0].norm == 0.0


# --------------------------------------------------------------------------- the trainer's own writer


@pytest.mark.parametrize(
    "overrides",
    [[], ["jepa.teacher=encoder", "model.weight_tying=false"], ["jepa.run_baseline=true"], ["model.weight_tying=true"]],
)
def test_checkpoint_written_by_the_trainer(tmp_path, overrides):
    """The real writer (jepa_core.train.checkpoint) and model: the split matches the model's own parameters."""
    ckpt = pytest.importorskip("jepa_core.train.checkpoint")
    jepa_model = pytest.importorskip("jepa_core.model.jepa")
    from jepa_core.config import config_to_toml, load_config

    small = ["model.d_model=16", "model.n_layers=2", "model.n_heads=2", "jepa.latent_dim=8", "data.block_size=64"]
    cfg = load_config("tiny", small + overrides)
    torch.manual_seed(0)
    model = jepa_model.JepaLM.from_config(cfg, 300)
    named = dict(model.named_parameters())
    trainable = [n for n, p in named.items() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [named[n] for n in trainable], "name": "all"}], lr=1e-3)
    for n in trainable:  # one step so that AdamW holds moments
        named[n].grad = torch.ones_like(named[n])
    opt.step()
    meta = ckpt.CheckpointMeta(config_to_toml(cfg), "tiny", 7, 7 * 64, "f" * 64, {"type": "eval", "val_bpb": 3.25}, cfg.model.weight_tying)
    ckpt.save_checkpoint(tmp_path / "run", model, opt, meta, {"position": 7}, keep_last=2)

    r = inspect_checkpoint(tmp_path / "run")
    assert (r.step, r.metrics["val_bpb"], r.weight_tying) == (7, 3.25, cfg.model.weight_tying)
    assert r.params["trainable"] == sum(named[n].numel() for n in trainable)
    assert r.params["teacher"] == sum(p.numel() for n, p in named.items() if not p.requires_grad)
    assert r.params["jepa_heads"] == sum(p.numel() for n, p in named.items() if n.startswith("jepa."))
    assert r.params["buffers"] == 0 and r.params["other"] == 0
    # run_start's counts (the model's own) and inspect's split of its checkpoint agree, tied or not
    counts = model.param_counts()
    assert {k: r.params[k] for k in ("backbone", "lm_head", "jepa_heads", "teacher")} == {
        k: counts[k] for k in ("backbone", "lm_head", "jepa_heads", "teacher")
    }
    assert r.params["trainable"] == counts["total_trainable"]
    s = inspect_checkpoint(Path(r.state_file))
    assert s.kind == "state" and s.optimizer["groups"][0]["n_params"] == len(trainable)
    assert s.optimizer["step"] == 1 and s.optimizer["params_with_moments"] == len(trainable)
    assert s.optimizer["moments"]["exp_avg_sq"]["elements"] == r.params["trainable"]


def test_cli_shows_the_copy_control_beside_retrieval(tmp_path, capsys, monkeypatch):
    """Each horizon's top-1 is followed by its copy control and the lift (top-1 minus copy)."""
    ev = {"val_bpb": 2.3, "retrieval_top1_h2": 0.756, "retrieval_copy_top1_h2": 0.34, "retrieval_top1_h8": 0.5}
    p = write_weights(tmp_path / "step-00000040.safetensors", metrics=json.dumps(ev))
    code, out, err = cli_fast([p], capsys, monkeypatch)
    flat = " ".join(out.split())
    assert code == 0, err
    assert "retrieval_top1_h2 0.756 (copy 0.34, lift +0.416)" in flat
    assert "retrieval_top1_h8 0.5" in flat and "retrieval_top1_h8 0.5 (copy" not in flat  # an old run: no copy key
    assert "retrieval_copy_top1_h2 0.34" not in flat  # not repeated on its own
