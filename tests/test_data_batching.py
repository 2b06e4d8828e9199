"""TrainBatcher and val_batches, checked on tokens whose value is their position."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jepa_core.data import TrainBatcher, val_batches, val_windows
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
    with pytest.raises(DataError):
        val_batches(positions[:32], 32, 1, 1)


def test_val_windows_spread_and_never_overlap():
    # 100 tokens, block 10: windows start at 0, 10, ..., 80 (90 would need id 100): 9 windows
    assert val_windows(100, 10, 4, 10).tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    # 9 windows, 4 wanted: k = floor(i * 9 / 4) for i = 0..3 -> 0, 2, 4, 6
    assert val_windows(100, 10, 2, 2).tolist() == [0, 20, 40, 60]
    assert val_windows(101, 10, 1, 100).tolist()[-1] == 90


def test_val_batches_are_deterministic_non_overlapping_windows(positions):
    a = val_batches(positions, 64, 8, 4)
    b = val_batches(positions, 64, 8, 4)
    assert len(a) == 4
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        _is_window(xa, ya, 64)
    starts = sorted(int(s) for x, _ in a for s in x[:, 0])
    assert len(starts) == 32
    assert all(s % 64 == 0 for s in starts)
    assert all(t - s >= 64 for s, t in zip(starts, starts[1:]))  # inputs never overlap
    assert starts[0] == 0 and starts[-1] > N // 2  # spread over the whole split, not just its start


def test_val_batches_use_everything_when_short(positions):
    batches = val_batches(positions[:1000], 100, 4, 50)
    # (1000 - 1) // 100 = 9 windows: batches of 4, 4, 1
    assert [x.shape[0] for x, _ in batches] == [4, 4, 1]
