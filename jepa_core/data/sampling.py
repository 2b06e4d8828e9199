"""Training batches: random windows, disjoint across the ranks of a step, resumable.

A window is `block_size + 1` consecutive ids (inputs and their targets one
token later) anywhere in the train split; a split stored in several shards is
one stream (`ShardedTokens`), so windows are drawn across all of them, and one
may straddle two shards (documents end with `<eos>`, shards are cut only by
size).

Every rank draws the same global set of windows for a step from a generator
seeded by the seed alone, then takes its own slice of it: the ranks never use
the same window in one step, and no window of a step overlaps another. The
set is `world_size x accum_steps x batch_size` windows at distinct positions
of a grid with spacing `block_size` and a random phase drawn per step, so
any start can occur and, within a step, inputs never overlap. (When the
split has fewer grid slots than a step needs, windows are drawn independently
and may repeat.) The generator's state goes into checkpoints; restoring it
replays exactly the batches an uninterrupted run would have drawn next.

Checkpoints written before this sampler existed (state version 1) hold a
per-rank generator; loading one switches the batcher to that older sampler,
so such a run still resumes exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError
from .shards import read_windows

STATE_VERSION = 2
_STREAM = 0x6A657061  # spawn key of the shared generator ("jepa"): differs from every rank key of version 1


def check_length(n: int, block_size: int, what: str) -> None:
    if n < block_size + 1:
        raise DataError(
            f"The {what} split has {n} tokens, fewer than block_size + 1 = {block_size + 1} for one window.",
            hint="Use a longer text or a smaller data.block_size.",
        )


def _generator(seed: int, key: int) -> np.random.Generator:
    # spawn_key gives independent streams (what SeedSequence.spawn does)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy=seed, spawn_key=(key,))))


def _rng_state(rng: np.random.Generator) -> dict:
    st = rng.bit_generator.state
    # the 128-bit PCG64 words are strings so any JSON reader keeps them exact
    return {
        "bit_generator": st["bit_generator"],
        "state": str(st["state"]["state"]),
        "inc": str(st["state"]["inc"]),
        "has_uint32": int(st["has_uint32"]),
        "uinteger": int(st["uinteger"]),
    }


def _set_rng_state(rng: np.random.Generator, r: dict) -> None:
    if r.get("bit_generator") != "PCG64":
        raise DataError(f"Saved data position uses {r.get('bit_generator')!r}, expected PCG64.")
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int(r["state"]), "inc": int(r["inc"])},
        "has_uint32": int(r["has_uint32"]),
        "uinteger": int(r["uinteger"]),
    }


def step_starts(rng: np.random.Generator, n_tokens: int, block_size: int, count: int) -> np.ndarray:
    """`count` window starts for one step (see the module docstring), in draw order."""
    span = n_tokens - block_size  # starts 0 .. span-1 leave room for block_size + 1 ids
    phase = int(rng.integers(0, min(block_size, span)))
    slots = (span - 1 - phase) // block_size + 1
    if count <= slots:
        return phase + block_size * rng.choice(slots, size=count, replace=False).astype(np.int64)
    return rng.integers(0, span, size=count, dtype=np.int64)


class TrainBatcher:
    """Random (x, y) windows of `block_size` tokens; y is x shifted by one token.

    `tokens` is a memmap, an array or a `ShardedTokens`. With `accum_steps` > 1
    the windows of all micro-batches of an optimizer step are drawn together,
    so they are disjoint too.
    """

    def __init__(
        self,
        tokens,
        block_size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        accum_steps: int = 1,
    ):
        if block_size < 1 or batch_size < 1 or accum_steps < 1:
            raise ValueError("block_size, batch_size and accum_steps must be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
        check_length(len(tokens), block_size, "train")
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.accum_steps = accum_steps
        self.batches_drawn = 0
        self._legacy = False  # True after loading a version-1 state: independent per-rank draws
        self._rng = _generator(self.seed, _STREAM)
        self._group: np.ndarray | None = None  # (accum_steps, world_size, batch_size) starts of the current step
        self._group_rng: dict | None = None  # the generator's state before that step was drawn
        self.last_starts: np.ndarray | None = None  # the starts of the last batch (for tests and digests)

    def _draw_group(self) -> None:
        self._group_rng = _rng_state(self._rng)
        count = self.accum_steps * self.world_size * self.batch_size
        starts = step_starts(self._rng, len(self.tokens), self.block_size, count)
        self._group = starts.reshape(self.accum_steps, self.world_size, self.batch_size)

    def next_starts(self) -> np.ndarray:
        """The start offsets of the next batch (advances the position)."""
        if self._legacy:
            # high is exclusive: the last start leaves room for block_size + 1 ids
            starts = self._rng.integers(0, len(self.tokens) - self.block_size, size=self.batch_size, dtype=np.int64)
        else:
            micro = self.batches_drawn % self.accum_steps
            if micro == 0:
                self._draw_group()
            starts = self._group[micro, self.rank]
        self.batches_drawn += 1
        self.last_starts = starts
        return starts

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        buf = torch.from_numpy(read_windows(self.tokens, self.next_starts(), self.block_size + 1))
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()

    def __iter__(self):
        while True:
            yield self.next()

    # ------------------------------------------------------------ exact resume

    def state_dict(self) -> dict:
        """JSON-serialisable: the generator as it was before the current step's draw, and the
        number of batches drawn (which says how far into that step we are)."""
        if self._legacy:
            version, rng = 1, _rng_state(self._rng)
        elif self.batches_drawn % self.accum_steps and self._group_rng is not None:
            version, rng = STATE_VERSION, self._group_rng
        else:
            version, rng = STATE_VERSION, _rng_state(self._rng)
        d = {
            "version": version,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "n_tokens": int(len(self.tokens)),
            "batches_drawn": self.batches_drawn,
            "rng": rng,
        }
        if version == STATE_VERSION:
            d["accum_steps"] = self.accum_steps
        return d

    def load_state_dict(self, d: dict) -> None:
        version = d.get("version")
        if version not in (1, STATE_VERSION):
            raise DataError(f"Unsupported data-position state version {version!r}.")
        mine = {"block_size": self.block_size, "batch_size": self.batch_size, "n_tokens": len(self.tokens), "world_size": self.world_size}
        if version == STATE_VERSION:
            mine["accum_steps"] = self.accum_steps
        else:  # version 1 drew each rank's windows from its own stream; since 2 one draw serves every rank
            mine["rank"] = self.rank
        diff = {k: (d.get(k), v) for k, v in mine.items() if d.get(k) != v}
        if diff:
            what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items())
            raise DataError(
                f"The saved data position does not fit this run ({what}); resuming would not replay the same batches.",
                hint="Resume with the same data, block size, batch size and world size as the checkpoint.",
            )
        _set_rng_state(self._rng, d["rng"])
        self.seed = int(d["seed"])
        self.batches_drawn = int(d["batches_drawn"])
        self._legacy = version == 1
        self._group = self._group_rng = None
        if not self._legacy and self.batches_drawn % self.accum_steps:
            self._draw_group()  # the step in progress: draw it again from its saved generator state
