"""Two gloo ranks on CPU: ranks stay in sync and only rank 0 writes files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from train_helpers import read_metrics, small_text


@pytest.mark.slow  # two gloo ranks in subprocesses: about 12 s on 2 cores (the fast suite keeps under 5 minutes)
@pytest.mark.timeout(240)
def test_two_ranks_with_gloo(tmp_path):
    text = small_text(tmp_path)
    out_dir = tmp_path / "runs"
    run = out_dir / "ddp"
    args = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "jepa_cli", "train", "--profile", "tiny", "--no-tui", "--run-dir", str(run),
        "--set", f'data.dataset="text:{text}"', "--set", "data.vocab_size=320", "--set", "data.block_size=32",
        "--set", "model.d_model=32", "--set", "model.n_layers=2", "--set", "model.n_heads=2",
        "--set", "jepa.horizons=[1,4]", "--set", "jepa.horizon_probs=[0.5,0.5]", "--set", "jepa.latent_dim=16",
        "--set", 'jepa.teacher="encoder"',
        "--set", "train.batch_size=4", "--set", "train.compile=false", "--set", "train.max_steps=4", "--set", "train.eval_every=4",
        "--set", "train.checkpoint_every=4", "--set", "log.every=1", "--set", "train.sample_tokens=4",
        "--set", f'train.out_dir="{out_dir}"',
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", JEPA_HOME=str(tmp_path / "home"))
    # prepare once so both ranks do not race on the cache (rank 0 prepares, the other waits)
    r = subprocess.run(args, capture_output=True, text=True, timeout=220, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = read_metrics(run)
    events = [x for x in recs if x["type"] == "event"]
    assert [e["event"] for e in events].count("run_start") == 1  # rank 1 wrote nothing
    start, end = events[0], events[-1]
    assert start["world_size"] == 2
    assert end["event"] == "run_end" and end["status"] == "finished"
    assert end["ranks_in_sync"] is True  # sha256 over all weights incl. the EMA teacher, compared across ranks
    trains = [x for x in recs if x["type"] == "train"]
    assert [t["step"] for t in trains] == [1, 2, 3, 4]
    assert trains[-1]["tokens"] == 4 * 2 * 4 * 32  # steps * ranks * batch * block
    # nothing else was written: one run dir, no stray files from rank 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["ddp"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.toml", "heartbeat.json", "metrics.jsonl", "tokenizer.json", "train.lock"]
