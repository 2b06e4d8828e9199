"""Batches of token windows: random for training (resumable), whole-split for validation.

Training batches (`TrainBatcher`) live in `sampling.py` and are re-exported
here: windows disjoint across the ranks of a step, drawn across all shards of
a split, with an exact-resume state.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import torch

from .sampling import TrainBatcher  # noqa: F401  (re-exported: `from jepa_core.data.batching import TrainBatcher`)
from .shards import read_windows


def _gather(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # B x (T+1) ids in one int64 array: a fancy-index gather from a memmap, or slices of the
    # shards of a ShardedTokens (never a copy of the whole split)
    buf = torch.from_numpy(read_windows(tokens, starts, block_size + 1))
    return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()


class ValWindows(NamedTuple):
    """Validation windows: inputs tokens[start : start + length], targets one token later.

    The first `skip` targets of a window were scored by the previous window and
    are context only; the others are scored. Over all windows every target
    position 1..n_scored is scored exactly once, in order.
    """

    start: np.ndarray
    length: np.ndarray
    skip: np.ndarray

    @property
    def n_scored(self) -> int:
        return int((self.length - self.skip).sum())


def val_windows(n_tokens: int, block_size: int, stride: int = 0, max_tokens: int = 0) -> ValWindows:
    """The windows that score every validation token after the first exactly once.

    Target positions 1..S are scored, S = n_tokens - 1, or `max_tokens` when
    0 < max_tokens < n_tokens - 1 (the first S targets of the split).
    stride = 0: non-overlapping blocks of block_size covering them, the last one
    shorter; a token at offset j of its block is predicted from j + 1 tokens.
    stride = s (1..block_size): sliding windows of block_size whose ends move s
    targets at a time (the last one ends at S); each window scores only its
    new targets, so every target after the first window has at least
    block_size - s + 1 tokens of context.
    """
    T = int(block_size)
    if T < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not 0 <= stride <= T:
        raise ValueError(f"stride must be in 0..block_size ({T}), got {stride}")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    S = max(0, int(n_tokens) - 1)
    if max_tokens:
        S = min(S, int(max_tokens))
    if S == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ValWindows(empty, empty, empty)
    if stride == 0:
        start = np.arange(0, S, T, dtype=np.int64)
        length = np.minimum(T, S - start)
        return ValWindows(start, length, np.zeros_like(start))
    # window ends e_0 = min(T, S), e_j = min(T + j*s, S); each covers targets e_j - T + 1 .. e_j
    n_after = -(-max(0, S - T) // stride)  # ceil
    end = np.minimum(T + stride * np.arange(n_after + 1, dtype=np.int64), S)
    start = np.maximum(0, end - T)
    prev_end = np.concatenate(([0], end[:-1]))
    return ValWindows(start, end - start, prev_end - start)


class ValBatch(NamedTuple):
    x: torch.Tensor  # (b, L) inputs
    y: torch.Tensor  # (b, L) targets
    skip: torch.Tensor  # (b,) leading targets that are context only
    start: np.ndarray  # (b,) the windows' offsets in the split


def iter_val_batches(tokens: np.ndarray, windows: ValWindows, batch_size: int) -> Iterator[ValBatch]:
    """Up to batch_size consecutive windows of equal length per batch, in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(windows.start)
    i = 0
    while i < n:
        L = int(windows.length[i])
        j = i + 1
        while j < n and j - i < batch_size and int(windows.length[j]) == L:
            j += 1
        x, y = _gather(tokens, windows.start[i:j], L)
        yield ValBatch(x, y, torch.from_numpy(windows.skip[i:j].copy()), windows.start[i:j].copy())
        i = j


def val_blocks(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> torch.Tensor:
    """(len(starts), block_size) int64 inputs tokens[s : s + block_size]; each start needs
    block_size + 1 tokens from it (the windows LM scoring uses)."""
    return _gather(tokens, np.asarray(starts, dtype=np.int64), block_size)[0]
