"""TrainBatcher and the validation windows, checked on tokens whose value is their position."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jepa_core.data import TrainBatcher, val_windows
from jepa_core.data.batching import iter_val_batches, val_blocks
from jepa_core.errors import DataError

N = 10_007  # prime, so no window arithmetic comes out even by accident


@pytest.fixture
def positions(tmp_path) -> np.ndarray:
    # a memmap like the real cache, holding ids 0..N-1 mod 2**16: every window's start can be read off its first id
    path = tmp_path / "train.bin"
    np.arange(N, dtype=np.uint16).tofile(path)
    return np.memmap(path, dtype=np.uint16, mode="r", shape=(N,))


def _is_window(x: torch.Tensor, y: torch.Tensor, block: int) -> None:
    start = x[:, :1]
    expect = start + torch.arange(block)
    assert torch.equal(x, expect)  # contiguous slices of the stream
    assert torch.equal(y, expect + 1)  # y is x shifted by one token
    assert int(start.min()) >= 0 and int(start.max()) + block <= N - 1


def test_batches_are_shifted_windows(positions):
    b = TrainBatcher(positions, block_size=32, batch_size=8, seed=0)
    for _ in range(20):
        x, y = b.next()
        assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.int64
        _is_window(x, y, 32)


def test_every_start_is_reachable_including_the_last(positions):
    # with block_size N-2 only starts 0 and 1 fit; both must occur
    b = TrainBatcher(positions, block_size=N - 2, batch_size=64, seed=3)
    x, y = b.next()
    assert set(x[:, 0].tolist()) == {0, 1}
    assert int(y[:, -1].max()) == N - 1


def test_same_seed_same_batches_other_seed_differs(positions):
    a = TrainBatcher(positions, 16, 4, seed=7)
    b = TrainBatcher(positions, 16, 4, seed=7)
    c = TrainBatcher(positions, 16, 4, seed=8)
    xa, xb, xc = a.next()[0], b.next()[0], c.next()[0]
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)


def test_resume_replays_the_same_next_batches(positions):
    straight = TrainBatcher(positions, 24, 5, seed=11)
    ref = [straight.next() for _ in range(12)]

    first = TrainBatcher(positions, 24, 5, seed=11)
    for _ in range(5):
        first.next()
    saved = json.loads(json.dumps(first.state_dict()))  # through JSON, as in a checkpoint
    assert saved["batches_drawn"] == 5

    resumed = TrainBatcher(positions, 24, 5, seed=11)
    resumed.next()  # a fresh batcher that already moved: the state must override it
    resumed.load_state_dict(saved)
    for x_ref, y_ref in ref[5:]:
        x, y = resumed.next()
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    assert resumed.batches_drawn == 12


def test_state_survives_a_strict_json_reader(positions):
    b = TrainBatcher(positions, 8, 2, seed=2**40 + 5)
    st = b.state_dict()
    # 128-bit integers would lose precision as JSON numbers in many readers: they are strings
    assert isinstance(st["rng"]["state"], str) and int(st["rng"]["state"]) >= 0
    json.dumps(st, allow_nan=False)


def test_state_for_another_setup_is_refused(positions):
    st = TrainBatcher(positions, 8, 2, seed=1).state_dict()
    with pytest.raises(DataError, match="block_size 8 -> 16"):
        TrainBatcher(positions, 16, 2, seed=1).load_state_dict(st)
    with pytest.raises(DataError, match="n_tokens"):
        TrainBatcher(positions[:5000], 8, 2, seed=1).load_state_dict(st)


def test_ranks_draw_different_windows(positions):
    ranks = [TrainBatcher(positions, 16, 32, seed=5, rank=r, world_size=4) for r in range(4)]
    starts = [set(b.next()[0][:, 0].tolist()) for b in ranks]
    for i in range(4):
        for j in range(i + 1, 4):
            # 32 draws from ~10k starts: independent streams share almost nothing
            assert len(starts[i] & starts[j]) < 4
    again = TrainBatcher(positions, 16, 32, seed=5, rank=2, world_size=4)
    assert set(again.next()[0][:, 0].tolist()) == starts[2]
    with pytest.raises(ValueError):
        TrainBatcher(positions, 16, 32, seed=5, rank=4, world_size=4)


def test_too_short_for_a_window(positions):
    TrainBatcher(positions[:33], 32, 1, seed=0).next()
    with pytest.raises(DataError, match="fewer than block_size"):
        TrainBatcher(positions[:32], 32, 1, seed=0)


def test_val_windows_cover_the_split_once():
    # 101 tokens, block 10: targets 1..100 in 10 blocks, the last one full
    w = val_windows(101, 10)
    assert w.start.tolist() == list(range(0, 100, 10)) and w.length.tolist() == [10] * 10 and w.n_scored == 100
    # 100 tokens: 99 targets, the last block is 9 long (its inputs 90..98, targets 91..99)
    w = val_windows(100, 10)
    assert w.start.tolist()[-1] == 90 and w.length.tolist()[-1] == 9 and w.n_scored == 99
    assert (w.skip == 0).all()
    # sliding: ends 10, 13, 16, ..., 97, 99 (the last one short of a full stride)
    w = val_windows(100, 10, stride=3)
    ends = (w.start + w.length).tolist()
    assert ends[:3] == [10, 13, 16] and ends[-2:] == [97, 99]
    assert (w.length == 10).all() and w.skip.tolist()[:3] == [0, 7, 7] and w.skip.tolist()[-1] == 8
    assert w.n_scored == 99
    # a cap scores the first targets only; a split shorter than a block is one short window
    assert val_windows(100, 10, max_tokens=25).n_scored == 25
    assert val_windows(100, 10, stride=4, max_tokens=25).n_scored == 25
    w = val_windows(6, 10, stride=4)
    assert w.start.tolist() == [0] and w.length.tolist() == [5] and w.n_scored == 5
    assert val_windows(1, 10).n_scored == 0
    with pytest.raises(ValueError, match="stride"):
        val_windows(100, 10, stride=11)


def test_iter_val_batches_in_order_with_the_short_block_alone(positions):
    w = val_windows(N, 64)  # 156 full blocks and one of 22 targets
    batches = list(iter_val_batches(positions, w, 8))
    assert [x.shape for x, _, _, _ in batches][-2:] == [(4, 64), (1, 22)]
    starts = [int(s) for x, _, _, _ in batches for s in x[:, 0]]
    assert starts == w.start.tolist() == [int(s) for b in batches for s in b.start]
    for x, y, skip, _ in batches:
        assert torch.equal(y, x + 1) and torch.equal(x, x[:, :1] + torch.arange(x.shape[1]))
        assert (skip == 0).all()
    assert int(batches[-1][1][0, -1]) == N - 1  # the split's last token is scored
    ws = val_windows(N, 64, stride=16)
    skips = torch.cat([s for _, _, s, _ in iter_val_batches(positions, ws, 5)])
    assert skips.tolist() == ws.skip.tolist()


def test_val_blocks_gathers_inputs(positions):
    blocks = val_blocks(positions, np.array([0, 64, 640]), 64)
    assert blocks.shape == (3, 64) and blocks.dtype == torch.int64
    assert blocks[:, 0].tolist() == [0, 64, 640] and torch.equal(blocks, blocks[:, :1] + torch.arange(64))
