"""Faults on one rank of two (gloo, CPU): every rank leaves at the same step with the same status.

Each test launches two ranks with torchrun on a small launcher script that
injects the fault on one rank only (a non-finite loss on rank 1, a checkpoint
write that fails on rank 0), then checks that both processes exit within a
bounded time, metrics.jsonl names the status, and the last good checkpoint
still loads. Before the stop decisions were collective, both cases hung.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from train_helpers import read_metrics, small_text

LAUNCHER = textwrap.dedent(
    """
    import os, sys
    import torch
    import jepa_core.train.loop as loop
    import jepa_core.train.checkpointer as checkpointer
    from jepa_core.config import load_config

    rank = int(os.environ["RANK"])
    fault = sys.argv[1]
    real_step, real_save = loop.train_step, checkpointer.save_checkpoint

    def step_with_nan(tr, next_batch, step, max_steps, **kw):
        res = real_step(tr, next_batch, step, max_steps, **kw)
        if rank == 1 and step == 3:
            res.loss = torch.tensor(float("nan"))
        return res

    calls = []
    def save_fails_second_time(*a, **kw):
        calls.append(1)
        if rank == 0 and len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_save(*a, **kw)

    if fault == "nan_on_rank1":
        loop.train_step = step_with_nan
    else:
        checkpointer.save_checkpoint = save_fails_second_time

    cfg = load_config("tiny", sys.argv[3:])
    res = loop.train(cfg, run_dir=__import__("pathlib").Path(sys.argv[2]))
    print(f"rank {rank} status {res.status} step {res.step}", flush=True)
    sys.exit(res.exit_code)
    """
)


def _launch(tmp_path, fault: str):
    text = small_text(tmp_path)
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER)
    run = tmp_path / "runs" / "ddp"
    sets = [
        f'data.dataset="text:{text}"', "data.vocab_size=320", "data.block_size=32", "model.d_model=32", "model.n_layers=2",
        "model.n_heads=2", "jepa.horizons=[1,4]", "jepa.horizon_probs=[0.5,0.5]", "jepa.latent_dim=16", "train.batch_size=4",
        "train.compile=false", "train.max_steps=6", "train.eval_every=100", "train.checkpoint_every=2", "log.every=1",
        "train.sample_tokens=0", f'train.out_dir="{tmp_path / "runs"}"', 'optim.optimizer="adamw"',
    ]
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), fault, str(run), *sets]
    env = dict(os.environ, OMP_NUM_THREADS="1", JEPA_HOME=str(tmp_path / "home"))
    r = subprocess.run(args, capture_output=True, text=True, timeout=200, env=env, cwd=tmp_path)
    return r, run


@pytest.mark.slow  # two gloo ranks in subprocesses: about 9 s on 2 cores
@pytest.mark.timeout(240)
def test_nan_on_one_rank_stops_both_as_diverged(tmp_path):
    from jepa_core.rundir import read_latest
    from jepa_core.train.checkpoint import load_tensors

    r, run = _launch(tmp_path, "nan_on_rank1")
    out = r.stdout + r.stderr
    assert "rank 0 status diverged step 3" in out and "rank 1 status diverged step 3" in out, out[-3000:]
    end = [x for x in read_metrics(run) if x.get("event") == "run_end"]
    assert len(end) == 1 and end[0]["status"] == "diverged" and end[0]["step"] == 3
    ref = read_latest(run)
    assert ref.step == 2  # the last good checkpoint, from before the divergence
    load_tensors(ref.weights)


@pytest.mark.slow  # two gloo ranks in subprocesses: about 9 s on 2 cores
@pytest.mark.timeout(240)
def test_checkpoint_write_failure_on_rank0_stops_both(tmp_path):
    from jepa_core.rundir import read_latest
    from jepa_core.train.checkpoint import load_tensors

    r, run = _launch(tmp_path, "save_fails_on_rank0")
    out = r.stdout + r.stderr
    assert "rank 0 status write_failed step 4" in out and "rank 1 status write_failed step 4" in out, out[-3000:]
    recs = read_metrics(run)
    end = [x for x in recs if x.get("event") == "run_end"]
    assert len(end) == 1 and end[0]["status"] == "write_failed" and "No space left" in end[0]["message"]
    ref = read_latest(run)
    assert ref.step == 2
    load_tensors(ref.weights)
    load_tensors(ref.state)
