"""ShardedTokens against a concatenated reference, and TrainBatcher over shards and ranks.

Tokens hold their own global position (uint32), so every window's start can be
read off its first id and any misplaced read shows up as a wrong value.
"""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch

from jepa_core.data import ShardedTokens, TrainBatcher
from jepa_core.data.sampling import step_starts
from jepa_core.errors import DataError

SIZES = [1_000, 7, 2_503, 1, 3_989]  # uneven shards, including tiny ones a window must straddle
N = sum(SIZES)


@pytest.fixture
def sharded(tmp_path) -> ShardedTokens:
    parts, off = [], 0
    for i, n in enumerate(SIZES):
        path = tmp_path / f"train-{i:05d}.bin"
        np.arange(off, off + n, dtype=np.uint32).tofile(path)
        parts.append(np.memmap(path, dtype=np.uint32, mode="r", shape=(n,)))
        off += n
    return ShardedTokens(parts)


REF = np.arange(N, dtype=np.uint32)


def test_sharded_tokens_index_like_the_concatenation(sharded):
    assert len(sharded) == N and sharded.n_shards == len(SIZES)
    for i in (0, 999, 1000, 1006, 1007, 3509, 3510, N - 1, -1, -N):
        assert sharded[i] == REF[i]
    for a, b in ((0, N), (990, 1020), (1000, 1007), (1005, 3600), (N - 5, N), (7, 7)):
        assert np.array_equal(sharded[a:b], REF[a:b])
    assert np.array_equal(sharded[::97], REF[::97])
    idx = np.array([[0, 1006, 1007], [3509, 3510, N - 1]])
    assert np.array_equal(sharded[idx], REF[idx])
    assert np.array_equal(np.asarray(sharded), REF)
    starts = np.array([0, 995, 1003, 3505, N - 41])
    assert np.array_equal(sharded.read_windows(starts, 41), REF[starts[:, None] + np.arange(41)])
    pre = sharded.prefix(3508)
    assert len(pre) == 3508 and np.array_equal(np.asarray(pre), REF[:3508])
    with pytest.raises(IndexError):
        sharded[N]


def _windows_ok(x: torch.Tensor, y: torch.Tensor, block: int) -> None:
    start = x[:, :1]
    assert torch.equal(x, start + torch.arange(block))  # contiguous across shard boundaries
    assert torch.equal(y, x + 1)


def test_batches_read_across_shards(sharded):
    b = TrainBatcher(sharded, block_size=64, batch_size=16, seed=3)
    crossed = 0
    for _ in range(40):
        x, y = b.next()
        _windows_ok(x, y, 64)
        s = x[:, 0].numpy()
        assert np.array_equal(s, b.last_starts)
        bounds = np.cumsum(SIZES)[:-1]
        crossed += int(((s[:, None] < bounds) & (s[:, None] + 65 > bounds)).any(axis=1).sum())
    assert crossed > 0  # some windows did straddle two shards


def test_every_shard_is_sampled_evenly(sharded):
    b = TrainBatcher(sharded, block_size=16, batch_size=32, seed=0)
    starts = np.concatenate([b.next_starts() for _ in range(400)])
    assert starts.min() >= 0 and starts.max() <= N - 17
    # windows per shard in proportion to its size (a chi-square-free check: within 20%)
    edges = np.concatenate(([0], np.cumsum(SIZES)))
    counts = np.histogram(starts, bins=edges)[0]
    for n, c in zip(SIZES, counts):
        if n >= 1000:
            assert abs(c / len(starts) - n / N) < 0.2 * n / N
    # every residue modulo the block occurs: the grid phase moves
    assert set((starts % 16).tolist()) == set(range(16))


def _all_rank_starts(tokens, world: int, steps: int, **kw) -> np.ndarray:
    """(steps, world, batch) starts drawn by one TrainBatcher per rank."""
    ranks = [TrainBatcher(tokens, rank=r, world_size=world, **kw) for r in range(world)]
    return np.stack([np.stack([b.next_starts() for b in ranks]) for _ in range(steps)])


def test_ranks_draw_disjoint_windows_in_process(sharded):
    block = 32
    got = _all_rank_starts(sharded, 4, 50, block_size=block, batch_size=8, seed=11)
    for step in got:
        s = np.sort(step.ravel())
        assert len(np.unique(s)) == s.size  # no window twice
        assert (np.diff(s) >= block).all()  # and no two inputs overlap
    # the ranks do not draw the same thing, and a rank's draws do not depend on the others existing
    assert not np.array_equal(got[:, 0], got[:, 1])
    alone = TrainBatcher(sharded, block, 8, seed=11, rank=2, world_size=4)
    assert np.array_equal(np.stack([alone.next_starts() for _ in range(50)]), got[:, 2])


def test_accumulation_steps_are_disjoint_and_resume_mid_step(sharded):
    kw = dict(block_size=16, batch_size=4, seed=5, rank=1, world_size=2, accum_steps=3)
    ref = TrainBatcher(sharded, **kw)
    draws = [ref.next_starts() for _ in range(12)]
    for k in range(0, 12, 3):
        s = np.sort(np.concatenate(draws[k : k + 3]))
        assert (np.diff(s) >= 16).all()
    part = TrainBatcher(sharded, **kw)
    for _ in range(4):  # one micro-batch into the second step
        part.next_starts()
    st = json.loads(json.dumps(part.state_dict()))
    again = TrainBatcher(sharded, **kw)
    again.load_state_dict(st)
    for k in range(4, 12):
        assert np.array_equal(again.next_starts(), draws[k]), k


def test_resume_over_shards_replays_exactly(sharded):
    straight = TrainBatcher(sharded, 48, 6, seed=9)
    ref = [straight.next() for _ in range(10)]
    first = TrainBatcher(sharded, 48, 6, seed=9)
    for _ in range(4):
        first.next()
    st = json.loads(json.dumps(first.state_dict()))
    resumed = TrainBatcher(sharded, 48, 6, seed=9)
    resumed.next()
    resumed.load_state_dict(st)
    for x_ref, y_ref in ref[4:]:
        x, y = resumed.next()
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    with pytest.raises(DataError, match="n_tokens"):
        TrainBatcher(sharded.prefix(N - 1), 48, 6, seed=9).load_state_dict(st)


def test_a_version_1_position_resumes_with_the_old_sampler(sharded):
    # what a checkpoint written before the disjoint sampler holds: a per-rank PCG64 stream
    def v1_stream(seed, rank):
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=(rank,))))

    rng = v1_stream(7, 1)
    for _ in range(3):
        rng.integers(0, N - 32, size=5, dtype=np.int64)
    st = rng.bit_generator.state
    saved = {
        "version": 1, "seed": 7, "rank": 1, "world_size": 2, "block_size": 32, "batch_size": 5, "n_tokens": N,
        "batches_drawn": 3,
        "rng": {"bit_generator": "PCG64", "state": str(st["state"]["state"]), "inc": str(st["state"]["inc"]),
                "has_uint32": st["has_uint32"], "uinteger": st["uinteger"]},
    }
    b = TrainBatcher(sharded, 32, 5, seed=7, rank=1, world_size=2)
    b.load_state_dict(saved)
    for _ in range(4):
        assert np.array_equal(b.next_starts(), rng.integers(0, N - 32, size=5, dtype=np.int64))
    assert b.state_dict()["version"] == 1  # it keeps writing the format it resumed


def test_small_splits_fall_back_to_independent_draws():
    rng = np.random.default_rng(0)
    # 10 tokens, block 4: starts 0..5; 3 grid slots at most, 8 windows wanted
    s = step_starts(rng, 10, 4, 8)
    assert s.min() >= 0 and s.max() <= 5 and len(s) == 8
    # enough slots: distinct grid positions sharing one phase
    s = step_starts(rng, 10_000, 10, 50)
    assert len(np.unique(s)) == 50 and len(np.unique(s % 10)) == 1


# --------------------------------------------------------------------------- two gloo ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, folder: str, steps: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        parts = []
        for i, n in enumerate(SIZES):
            parts.append(np.memmap(os.path.join(folder, f"train-{i:05d}.bin"), dtype=np.uint32, mode="r", shape=(n,)))
        b = TrainBatcher(ShardedTokens(parts), block_size=32, batch_size=8, seed=1234, rank=rank, world_size=world)
        rows = []
        for _ in range(steps):
            x, _y = b.next()
            mine = x[:, 0].contiguous()  # the tokens are positions: the first id is the window's start
            gathered = [torch.zeros_like(mine) for _ in range(world)]
            dist.all_gather(gathered, mine)
            rows.append(torch.stack(gathered).tolist())
        if rank == 0:
            with open(out, "w") as f:
                json.dump(rows, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_gloo_ranks_never_share_a_window_in_a_step(sharded, tmp_path):
    import torch.multiprocessing as mp

    folder = str(sharded.parts[0].filename).rsplit("/", 1)[0]
    out = tmp_path / "starts.json"
    steps = 30
    mp.spawn(_rank_main, args=(2, _free_port(), folder, steps, str(out)), nprocs=2, join=True)
    got = np.array(json.loads(out.read_text()))  # (steps, ranks, batch)
    assert got.shape == (steps, 2, 8)
    for step in got:
        a, b = set(step[0].tolist()), set(step[1].tolist())
        assert not a & b  # no window used by both ranks
        s = np.sort(step.ravel())
        assert (np.diff(s) >= 32).all()  # no overlap at all within the step
    # what each process drew is what the sampler gives that rank in one process
    assert np.array_equal(got, _all_rank_starts(sharded, 2, steps, block_size=32, batch_size=8, seed=1234))


def test_shard_writer_cuts_exact_shards_and_keeps_uint32_ids(tmp_path):
    from jepa_core.data.shards import ShardWriter

    ids = np.arange(60_000, 60_000 + 2_345, dtype=np.int64) * 3  # up to ~187k: needs uint32
    lengths = np.ones(200_000, dtype=np.int64)
    w = ShardWriter(tmp_path, "train", 1_000, np.dtype("<u4"), lengths, limit=2_300)
    assert w.add(ids[:700]) == 700 and w.add(ids[700:]) == 1_600  # the limit cuts the second call
    assert w.full
    shards = w.finish()
    assert [(e["file"], e["tokens"]) for e in shards] == [("train-00000.bin", 1000), ("train-00001.bin", 1000), ("train-00002.bin", 300)]
    back = ShardedTokens.from_files(tmp_path, shards, np.dtype("<u4"))
    assert np.array_equal(np.asarray(back, dtype=np.int64), ids[:2_300])
    assert sum(e["bytes"] for e in shards) == 2_300
