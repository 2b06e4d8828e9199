"""FSDP2 on CPU with two gloo ranks: the sharded step equals one process's, checkpoints and resume.

The equality test runs `train_step` itself (the step `jepa train` runs) for 5 AdamW steps,
once sharded over 2 ranks and once in one process on the same global batches (each rank's
half stacked), and compares every parameter, the EMA teacher and each step's gradient norm.
The gradient norm is what catches gradients summed instead of averaged (pytorch issue
162338): AdamW divides the gradient's scale away, so parameters alone could hide it.
The JEPA weight is 0 there: InfoNCE draws negatives from the whole batch, so the JEPA loss of
two halves is not the loss of their union (under DDP just the same), while the LM loss is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from train_helpers import read_metrics, small_text

STEPS = 5
EQUAL_LAUNCHER = textwrap.dedent(
    """
    import os, sys
    import torch
    from safetensors.torch import save_file
    from jepa_core.config import load_config
    from jepa_core.train.step import build_trainee, plan_step, train_step

    torch.set_num_threads(1)
    mode, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = load_config("tiny", sys.argv[4:])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device("cpu")
    plan = plan_step(cfg, device, "fp32")
    if mode == "fsdp":
        torch.distributed.init_process_group("gloo")
        tr = build_trainee(cfg, 320, device, plan, seed=cfg.train.seed, fsdp_world=world)
    else:
        tr = build_trainee(cfg, 320, device, plan, seed=cfg.train.seed)
    B, T = cfg.train.batch_size, cfg.data.block_size
    gen = torch.Generator().manual_seed(7)
    norms = []
    for step in range(1, steps + 1):
        # the global batch: 2 * B sequences under FSDP (B per rank), all of them in one process
        rows = torch.randint(0, 320, (2 * B if mode == "fsdp" else B, T + 1), generator=gen)
        mine = rows[rank * B:(rank + 1) * B] if mode == "fsdp" else rows
        res = train_step(tr, lambda: (mine[:, :-1], mine[:, 1:]), step, steps, want_grad_norm=True)
        norms.append(float(res.grad_norm))
    tensors = {}
    for name, t in tr.model.state_dict().items():
        whole = t.full_tensor() if hasattr(t, "full_tensor") else t
        tensors[name] = whole.detach().to("cpu").contiguous().clone()
    tensors["grad_norms"] = torch.tensor(norms, dtype=torch.float64)
    if rank == 0:
        save_file(tensors, out)
    if mode == "fsdp":
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    """
)

SMALL = [
    "data.vocab_size=320", "data.block_size=16", "model.d_model=32", "model.n_layers=2", "model.n_heads=2",
    "jepa.horizons=[1,4]", "jepa.horizon_probs=[0.5,0.5]", "jepa.latent_dim=16", "jepa.pairs_per_seq=2",
    "train.compile=false", 'train.precision="fp32"', 'train.device="cpu"',
]


def _env(tmp_path):
    return dict(os.environ, OMP_NUM_THREADS="1", JEPA_HOME=str(tmp_path / "home"))


def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


@pytest.mark.slow  # two gloo ranks plus one process: about 15 s on 2 cores
@pytest.mark.timeout(240)
def test_fsdp_steps_equal_one_process_on_the_same_global_batches(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "equal.py"
    script.write_text(EQUAL_LAUNCHER)
    sets = [*SMALL, 'optim.optimizer="adamw"', "optim.warmup_steps=1", "optim.grad_clip=0.1", "jepa.jepa_weight=0.0",
            'jepa.teacher="encoder"', "jepa.ema_momentum=0.5", 'train.parallel="fsdp"']
    single_sets = sets + ["train.batch_size=8"]  # the global batch: both ranks' 4 sequences
    fsdp_sets = sets + ["train.batch_size=4"]
    r = subprocess.run(_torchrun(str(script), "fsdp", str(tmp_path / "fsdp.st"), str(STEPS), *fsdp_sets),
                       capture_output=True, text=True, timeout=200, env=_env(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, str(script), "single", str(tmp_path / "single.st"), str(STEPS), *single_sets],
                       capture_output=True, text=True, timeout=200, env=_env(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    sharded, single = load_file(tmp_path / "fsdp.st"), load_file(tmp_path / "single.st")
    assert sorted(sharded) == sorted(single)
    # the clip at 0.1 is active (norms above it): the sharded clip scales by the global norm, as one process does
    assert min(single["grad_norms"].tolist()) > 0.1
    assert sharded["grad_norms"].tolist() == pytest.approx(single["grad_norms"].tolist(), rel=1e-5)
    teacher = [n for n in single if n.startswith("teacher.encoder.blocks.")]
    assert teacher  # the encoder teacher's own (sharded) blocks are compared too
    for name in single:
        if name == "grad_norms":
            continue
        assert (sharded[name] - single[name]).abs().max().item() <= 1e-5, name
    # the run moved the weights (the comparison is not of two untouched initialisations)
    from jepa_core.config import load_config
    from jepa_core.model import JepaLM

    init = JepaLM.from_config(load_config("tiny", single_sets), 320, seed=1337).state_dict()
    moved = sum(1 for n in single if n != "grad_norms" and not single[n].equal(init[n]))
    assert moved > len(init) // 2


def _cli_sets(tmp_path, text, *extra):
    sets = [
        f'data.dataset="text:{text}"', "data.vocab_size=320", "data.block_size=32", "model.d_model=32", "model.n_layers=2",
        "model.n_heads=2", "jepa.horizons=[1,4]", "jepa.horizon_probs=[0.5,0.5]", "jepa.latent_dim=16", "train.batch_size=4",
        "train.compile=false", "train.eval_every=2", "train.checkpoint_every=2", "train.eval_tokens=2000", "log.every=1",
        "train.sample_tokens=4", f'train.out_dir="{tmp_path / "runs"}"', 'optim.optimizer="adamw"', 'train.parallel="fsdp"',
        'train.precision="fp32"',  # `auto` picks bf16 on a CPU with native bf16: these compare fp32 numbers
        *extra,
    ]
    return [a for s in sets for a in ("--set", s)]


def _train(tmp_path, *args):
    r = subprocess.run(_torchrun("-m", "jepa_cli", "train", "--no-tui", *args), capture_output=True, text=True, timeout=200,
                       env=_env(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow  # one 2-rank JEPA run, then inspect, sample and export in one process each: about 25 s on 2 cores
@pytest.mark.timeout(300)
def test_fsdp_jepa_run_checkpoint_is_read_by_inspect_sample_and_export(tmp_path):
    from safetensors.torch import load_file

    text = small_text(tmp_path)
    run = tmp_path / "runs" / "fsdp"
    # an exportable JEPA model (no lm_bridge, no logit bias), with the encoder teacher's own sharded blocks
    _train(tmp_path, "--profile", "tiny", "--run-dir", str(run),
           *_cli_sets(tmp_path, text, 'jepa.teacher="encoder"', "model.lm_bridge=false", "model.logit_bias=false", "train.max_steps=4"))
    recs = read_metrics(run)
    events = [x for x in recs if x["type"] == "event"]
    start, end = events[0], events[-1]
    assert start["event"] == "run_start" and start["world_size"] == 2 and start["parallel"] == "fsdp"
    assert end["status"] == "finished" and end["world_size"] == 2
    assert end["ranks_in_sync"] is True  # every tensor, the EMA teacher's too, gathered whole and digested on each rank
    assert [e["step"] for e in events if e["event"] == "sample"] == [2, 4]  # both ranks generated, rank 0 recorded
    assert [x["step"] for x in recs if x["type"] == "eval"] == [2, 4]
    # the weights file is whole: every tensor at its full shape, as one process writes it
    from jepa_core.config import load_config
    from jepa_core.model import JepaLM

    weights = load_file(run / "checkpoints" / "step-00000004.safetensors")
    cfg = load_config("tiny", _cli_sets(tmp_path, text, 'jepa.teacher="encoder"', "model.lm_bridge=false", "model.logit_bias=false")[1::2])
    shapes = {k: tuple(v.shape) for k, v in JepaLM.from_config(cfg, 320, seed=1).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in weights.items()} == shapes
    state = load_file(run / "checkpoints" / "step-00000004.state.safetensors")
    moments = {k: tuple(v.shape) for k, v in state.items() if k.startswith("optim.") and k.endswith(".exp_avg")}
    assert moments and all(moments[f"optim.{n}.exp_avg"] == shapes[n] for n in (k[len("optim."):-len(".exp_avg")] for k in moments))

    env = _env(tmp_path)
    jepa = [sys.executable, "-m", "jepa_cli"]
    r = subprocess.run([*jepa, "inspect", str(run)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0 and "step-00000004.safetensors" in r.stdout and "jepa-weights/1" in r.stdout, r.stdout + r.stderr
    assert "trained fsdp x2" in " ".join(r.stdout.split()), r.stdout  # mode and world size, from the config and tokens seen
    r = subprocess.run([*jepa, "runs", str(tmp_path / "runs"), "--json"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["parallel"] == "fsdp x2", r.stdout + r.stderr
    r = subprocess.run([*jepa, "sample", str(run), "--tokens", "8", "--seed", "1"], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0 and "step 4" in r.stderr, r.stderr
    r = subprocess.run([*jepa, "export", str(run), str(tmp_path / "exp")], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "exp" / "config.json").is_file()


@pytest.mark.slow  # three 2-rank runs: about 30 s on 2 cores
@pytest.mark.timeout(300)
def test_fsdp_resume_at_the_same_world_size_is_bit_exact(tmp_path):
    """4 steps straight and 2 + 2 (a resume from the consolidated checkpoint) give identical bytes.

    The LM baseline with dropout 0: a JEPA run samples pairs from each rank's torch RNG, and the
    state file holds rank 0's RNG only, under DDP as under FSDP (docs/gpu.md)."""
    from safetensors.torch import load_file

    text = small_text(tmp_path)
    base = ("jepa.run_baseline=true", "train.sample_tokens=0")
    _train(tmp_path, "--profile", "tiny", "--run-dir", str(tmp_path / "runs" / "straight"), *_cli_sets(tmp_path, text, *base, "train.max_steps=4"))
    split = tmp_path / "runs" / "split"
    _train(tmp_path, "--profile", "tiny", "--run-dir", str(split), *_cli_sets(tmp_path, text, *base, "train.max_steps=2"))
    _train(tmp_path, "--resume", str(split), "--set", "train.max_steps=4")
    for name in ("step-00000004.safetensors", "step-00000004.state.safetensors"):
        a = load_file(tmp_path / "runs" / "straight" / "checkpoints" / name)
        b = load_file(split / "checkpoints" / name)
        assert sorted(a) == sorted(b)
        for k in a:
            if not k.startswith("rng."):
                assert torch_equal(a[k], b[k]), (name, k)
    resumed = [x for x in read_metrics(split) if x["type"] == "event" and x["event"] == "resume"]
    assert resumed and resumed[0]["from_step"] == 2


def torch_equal(a, b) -> bool:
    """Bitwise: same dtype, shape and bytes (NaN-safe, unlike ==)."""
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def test_a_rank_resumes_from_rank_0s_data_position():
    """Rank 0 alone writes the data position; since one draw serves every rank, rank 1 loading it
    must continue with exactly the windows an uninterrupted rank 1 draws next."""
    import numpy as np

    from jepa_core.data.sampling import TrainBatcher

    tokens = np.arange(5000, dtype=np.uint16) % 300
    r0 = TrainBatcher(tokens, 16, 3, seed=5, rank=0, world_size=2, accum_steps=2)
    r1 = TrainBatcher(tokens, 16, 3, seed=5, rank=1, world_size=2, accum_steps=2)
    for _ in range(3):
        r0.next_starts(), r1.next_starts()
    saved = r0.state_dict()
    resumed = TrainBatcher(tokens, 16, 3, seed=5, rank=1, world_size=2, accum_steps=2)
    resumed.load_state_dict(saved)
    for _ in range(4):
        assert resumed.next_starts().tolist() == r1.next_starts().tolist()


def test_muon_under_fsdp_is_refused_naming_adamw():
    from jepa_core.config import load_config
    from jepa_core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config("tiny", ['train.parallel="fsdp"'])  # tiny trains the hidden matrices with Muon
    assert "optim.optimizer" in str(e.value) and 'optim.optimizer="adamw"' in str(e.value)
    assert load_config("tiny", ['train.parallel="fsdp"', 'optim.optimizer="adamw"']).train.parallel == "fsdp"
    assert load_config("tiny", ['train.parallel="ddp"']).optim.optimizer == "muon"


def test_memory_estimate_per_fsdp_rank():
    """A rank's weights, grads and AdamW moments are 1/W of the whole (rounded up), plus what FSDP
    holds gathered: the root group and two blocks, each with its gradient (counted by name here)."""
    import math

    from jepa_core.config import load_config
    from jepa_core.model import JepaLM
    from jepa_core.model.memory import estimate_memory, memory_verdict

    cfg = load_config("tiny", ['train.parallel="fsdp"', 'optim.optimizer="adamw"', 'jepa.teacher="encoder"'])
    whole = estimate_memory(cfg, 1024, "fp32", world_size=1)
    assert whole.ranks == 1 and whole.gathered == 0
    counts = {n: p.numel() for n, p in JepaLM.from_config(cfg, 1024, seed=0).named_parameters()}
    total = sum(counts.values())
    p_block = sum(v for n, v in counts.items() if n.startswith("transformer.blocks.0."))
    p_root = total - sum(v for n, v in counts.items() if ".blocks." in n)
    for world in (2, 3):
        est = estimate_memory(cfg, 1024, "fp32", world_size=world)
        assert (est.weights, est.grads, est.optimizer) == (
            math.ceil(whole.weights / world), math.ceil(whole.grads / world), math.ceil(whole.optimizer / world))
        assert est.gathered == 2 * 4 * (p_root + 2 * p_block)
        assert est.total == est.weights + est.grads + est.optimizer + est.gathered + whole.activations
    assert estimate_memory(cfg, 1024, "bf16", world_size=2).gathered == 2 * 2 * (p_root + 2 * p_block)
    # DDP (and "auto") keeps the whole model on every rank
    ddp = load_config("tiny", ['train.parallel="ddp"'])
    assert estimate_memory(ddp, 1024, world_size=2).weights == estimate_memory(ddp, 1024).weights
    fits, detail = memory_verdict(estimate_memory(cfg, 1024, world_size=2), cfg, 10**12, "RAM")
    assert fits and "per rank" in detail and "1/2 each, fsdp" in detail


def test_inspect_names_the_mode_and_world_size_from_tokens_seen():
    from jepa_core.tools.inspect import trained_on

    toml = '[train]\nbatch_size = 4\ngrad_accum_steps = 3\nparallel = "fsdp"\n[data]\nblock_size = 32\n'
    assert trained_on(toml, 10, 10 * 4 * 32 * 3 * 2) == "fsdp x2"
    assert trained_on(toml, 10, 10 * 4 * 32 * 3 * 4) == "fsdp x4"
    assert trained_on(toml, 10, 10 * 4 * 32 * 3) is None  # one process
    assert trained_on(toml, 10, 10 * 4 * 32 * 3 * 2 + 1) is None  # not a whole number of ranks: say nothing
    assert trained_on(toml.replace('"fsdp"', '"auto"'), 10, 10 * 4 * 32 * 3 * 2) == "ddp x2"
    assert trained_on(toml, 0, 0) is None


@pytest.mark.slow  # two 2-rank runs: about 20 s on 2 cores
@pytest.mark.timeout(300)
def test_fsdp_run_from_a_source_starts_from_its_weights(tmp_path):
    # --init-from loads the source into the whole model before fully_shard: one frozen step
    # (every learning rate 0) evaluates to the source's own val BPB
    text = small_text(tmp_path)
    src = tmp_path / "runs" / "src"
    _train(tmp_path, "--profile", "tiny", "--run-dir", str(src), *_cli_sets(tmp_path, text, "train.max_steps=4"))
    src_eval = [x for x in read_metrics(src) if x["type"] == "eval"][-1]
    run = tmp_path / "runs" / "from"
    _train(tmp_path, "--profile", "tiny", "--run-dir", str(run), "--init-from", str(src),
           *_cli_sets(tmp_path, text, "optim.lr=0", "optim.lr_head=0", "train.max_steps=1"))
    recs = read_metrics(run)
    start = next(x for x in recs if x.get("event") == "run_start")
    assert start["parallel"] == "fsdp" and start["init_from"]["step"] == 4
    ev = [x for x in recs if x["type"] == "eval"][-1]
    assert abs(ev["val_bpb"] - src_eval["val_bpb"]) < 1e-4, (ev["val_bpb"], src_eval["val_bpb"])
