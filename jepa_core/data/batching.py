"""Batches of token windows: random for training (resumable), fixed for validation.

Training windows start at uniform random offsets drawn from a PCG64 generator
seeded by (seed, rank), so every rank of a distributed run draws its own
windows and a single-process run is reproducible from the seed alone. The
generator's state goes into checkpoints; restoring it replays the exact
batches an uninterrupted run would have drawn next.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError

STATE_VERSION = 1


def _check_length(n: int, block_size: int, what: str) -> None:
    if n < block_size + 1:
        raise DataError(
            f"The {what} split has {n} tokens, fewer than block_size + 1 = {block_size + 1} for one window.",
            hint="Use a longer text or a smaller data.block_size.",
        )


def _gather(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # One fancy-index gather of B x (T+1) ids from the memmap, then a single int64 copy.
    idx = starts[:, None] + np.arange(block_size + 1, dtype=np.int64)[None, :]
    buf = torch.from_numpy(np.asarray(tokens)[idx].astype(np.int64))
    return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()


def _generator(seed: int, rank: int) -> np.random.Generator:
    # spawn_key gives each rank an independent stream (what SeedSequence.spawn does)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=(rank,))))


class TrainBatcher:
    """Random (x, y) windows of `block_size` tokens; y is x shifted by one token."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if block_size < 1 or batch_size < 1:
            raise ValueError("block_size and batch_size must be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
        _check_length(len(tokens), block_size, "train")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.batches_drawn = 0
        self._rng = _generator(self.seed, rank)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        # high is exclusive: the last start leaves room for block_size + 1 ids
        starts = self._rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size, dtype=np.int64)
        self.batches_drawn += 1
        return _gather(self.tokens, starts, self.block_size)

    def __iter__(self):
        while True:
            yield self.next()

    def state_dict(self) -> dict:
        """JSON-serialisable; the 128-bit PCG64 words are strings so any JSON reader keeps them exact."""
        st = self._rng.bit_generator.state
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "n_tokens": int(len(self.tokens)),
            "batches_drawn": self.batches_drawn,
            "rng": {
                "bit_generator": st["bit_generator"],
                "state": str(st["state"]["state"]),
                "inc": str(st["state"]["inc"]),
                "has_uint32": int(st["has_uint32"]),
                "uinteger": int(st["uinteger"]),
            },
        }

    def load_state_dict(self, d: dict) -> None:
        if d.get("version") != STATE_VERSION:
            raise DataError(f"Unsupported data-position state version {d.get('version')!r}.")
        mine = {"block_size": self.block_size, "batch_size": self.batch_size, "n_tokens": len(self.tokens), "rank": self.rank, "world_size": self.world_size}
        diff = {k: (d.get(k), v) for k, v in mine.items() if d.get(k) != v}
        if diff:
            what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items())
            raise DataError(
                f"The saved data position does not fit this run ({what}); resuming would not replay the same batches.",
                hint="Resume with the same data, block size, batch size and world size as the checkpoint.",
            )
        r = d["rng"]
        if r.get("bit_generator") != "PCG64":
            raise DataError(f"Saved data position uses {r.get('bit_generator')!r}, expected PCG64.")
        self._rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(r["state"]), "inc": int(r["inc"])},
            "has_uint32": int(r["has_uint32"]),
            "uinteger": int(r["uinteger"]),
        }
        self.seed = int(d["seed"])
        self.batches_drawn = int(d["batches_drawn"])


def val_windows(n_tokens: int, block_size: int, batch_size: int, max_batches: int) -> np.ndarray:
    """Start offsets of the validation windows: multiples of block_size (so they never overlap),
    evenly spread over the split, the same on every call."""
    n_windows = (n_tokens - 1) // block_size  # window k covers ids [k*T, k*T + T]
    want = max_batches * batch_size
    if n_windows <= want:
        k = np.arange(n_windows, dtype=np.int64)
    else:
        k = (np.arange(want, dtype=np.int64) * n_windows) // want
    return k * block_size


def val_batches(tokens: np.ndarray, block_size: int, batch_size: int, max_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic, non-overlapping (x, y) windows spread over the validation split.

    At most `max_batches` batches of `batch_size`; a split too short for that
    many gives every window it has (the last batch may be smaller).
    """
    if max_batches < 1 or batch_size < 1:
        raise ValueError("batch_size and max_batches must be >= 1")
    _check_length(len(tokens), block_size, "validation")
    starts = val_windows(len(tokens), block_size, batch_size, max_batches)
    return [_gather(tokens, starts[i : i + batch_size], block_size) for i in range(0, len(starts), batch_size)]
