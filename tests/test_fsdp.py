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
    single_sets = [s.replace("train.batch_size=4", "") for s in sets] + ["train.batch_size=8"]
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
    moved = 0
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
