"""Sharded token files: the reader (`ShardedTokens`) and the resumable writer (`ShardWriter`).

A split is a sequence of flat little-endian token files `<split>-00000.bin`,
`<split>-00001.bin`, ... of exactly `shard_tokens` ids each (the last one
shorter); read in order they are one stream. `ShardedTokens` presents them as
one read-only array without loading them: its length, integer and slice
indexing, and `read_windows` (what training batches use) work across shard
boundaries through memory maps.

The writer appends to `<split>-NNNNN.bin.tmp` and renames it when it holds
`shard_tokens` ids, so a file under its final name is always complete. Its
`state()` is what a resumed preparation needs to continue: the finished shards
and the length of the unfinished one at the last commit (`restore` truncates
anything written after that).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import DataError


class ShardCorrupt(DataError):
    """A shard file disagrees with its manifest (missing or wrong size): the cache must be rebuilt."""


def open_shard(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    """A read-only memmap of `count` ids, after checking the file's size."""
    try:
        size = path.stat().st_size
    except OSError:
        raise ShardCorrupt(f"{path} is missing.") from None
    if size != count * dtype.itemsize:
        raise ShardCorrupt(f"{path} has {size} bytes, the manifest expects {count * dtype.itemsize}.")
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


class ShardedTokens:
    """Several token arrays read as one (a view: nothing is copied until indexed)."""

    def __init__(self, parts: list[np.ndarray], dtype: np.dtype | None = None):
        parts = [p for p in parts if len(p)]
        if dtype is None:
            dtype = parts[0].dtype if parts else np.dtype("<u2")
        self.parts = parts
        self.dtype = np.dtype(dtype)
        lengths = np.array([len(p) for p in parts], dtype=np.int64)
        # offsets[i] is the global index of parts[i][0]; offsets[-1] is the total length
        self.offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)

    @classmethod
    def from_files(cls, folder: Path, entries: list[dict], dtype: np.dtype) -> "ShardedTokens":
        return cls([open_shard(folder / e["file"], dtype, int(e["tokens"])) for e in entries], dtype)

    # ------------------------------------------------------------ array-like

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    @property
    def ndim(self) -> int:
        return 1

    @property
    def n_shards(self) -> int:
        return len(self.parts)

    def __repr__(self) -> str:
        return f"ShardedTokens({len(self):,} tokens in {self.n_shards} shards, {self.dtype.name})"

    def _part(self, i: int) -> tuple[int, int]:
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return k, i - int(self.offsets[k])

    def range(self, start: int, stop: int) -> np.ndarray:
        """ids[start:stop] as a new array (0 <= start <= stop <= len)."""
        out = np.empty(max(0, stop - start), dtype=self.dtype)
        pos, i = 0, start
        while i < stop:
            k, j = self._part(i)
            take = min(stop - i, len(self.parts[k]) - j)
            out[pos : pos + take] = self.parts[k][j : j + take]
            pos += take
            i += take
        return out

    def prefix(self, n: int) -> "ShardedTokens":
        """The first n ids, still as a view over the shards."""
        n = max(0, min(int(n), len(self)))
        parts: list[np.ndarray] = []
        for p, off in zip(self.parts, self.offsets[:-1]):
            if off >= n:
                break
            parts.append(p[: n - int(off)])
        return ShardedTokens(parts, self.dtype)

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"index {int(key)} is out of bounds for {n} tokens")
            k, j = self._part(i)
            return self.parts[k][j]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self.range(start, max(start, stop))
            return np.asarray(self)[key]  # strided: rare, so a full copy is acceptable
        idx = np.asarray(key)
        if idx.dtype.kind in "iu":
            return self.take(idx)
        raise TypeError(f"ShardedTokens cannot be indexed with {type(key).__name__}")

    def take(self, idx: np.ndarray) -> np.ndarray:
        """ids at arbitrary global positions (any shape)."""
        idx = np.asarray(idx, dtype=np.int64)
        n = len(self)
        flat = np.where(idx < 0, idx + n, idx).ravel()
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            raise IndexError(f"index out of bounds for {n} tokens")
        out = np.empty(flat.shape, dtype=self.dtype)
        part = np.searchsorted(self.offsets, flat, side="right") - 1
        for k in np.unique(part):
            sel = part == k
            out[sel] = self.parts[k][flat[sel] - self.offsets[k]]
        return out.reshape(idx.shape)

    def read_windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """(len(starts), length) int64: ids[s : s + length] for each start, across shard boundaries."""
        starts = np.asarray(starts, dtype=np.int64)
        out = np.empty((len(starts), length), dtype=np.int64)
        for r, s in enumerate(starts.tolist()):
            k, j = self._part(s)
            p = self.parts[k]
            if j + length <= len(p):  # the common case: one slice of one memmap
                out[r] = p[j : j + length]
            else:
                out[r] = self.range(s, s + length)
        return out

    def __array__(self, dtype=None, copy=None):
        # a full copy: fine for a validation split, never done for training
        arr = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=self.dtype)
        return arr.astype(dtype, copy=False) if dtype is not None else arr

    def chunks(self, size: int = 1 << 24):
        """The ids in order, `size` at a time (bounded memory for passes over a whole split)."""
        for p in self.parts:
            for i in range(0, len(p), size):
                yield p[i : i + size]


def read_windows(tokens, starts: np.ndarray, length: int) -> np.ndarray:
    """(len(starts), length) int64 windows of a memmap, an array or a ShardedTokens."""
    if isinstance(tokens, ShardedTokens):
        return tokens.read_windows(starts, length)
    starts = np.asarray(starts, dtype=np.int64)
    idx = starts[:, None] + np.arange(length, dtype=np.int64)[None, :]
    return np.asarray(tokens)[idx].astype(np.int64)


def count_bytes(tokens, byte_lengths: np.ndarray) -> int:
    """UTF-8 bytes of the text these ids decode to, in bounded memory."""
    if isinstance(tokens, ShardedTokens):
        return int(sum(int(byte_lengths[c].sum()) for c in tokens.chunks()))
    arr = np.asarray(tokens)
    step = 1 << 24
    return int(sum(int(byte_lengths[arr[i : i + step]].sum()) for i in range(0, len(arr), step)))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}.bin"


class ShardWriter:
    """Appends ids to `<prefix>-NNNNN.bin` files of exactly `shard_tokens` ids each.

    `add` may stop early at `limit` total ids (max_train_tokens); it returns
    how many ids it took. `commit_state` flushes and fsyncs and returns the
    JSON state that `restore` accepts. `finish` closes the last, shorter shard.
    """

    def __init__(self, folder: Path, prefix: str, shard_tokens: int, dtype: np.dtype, byte_lengths: np.ndarray, limit: int = 0):
        if shard_tokens < 1:
            raise ValueError("shard_tokens must be >= 1")
        self.folder = Path(folder)
        self.prefix = prefix
        self.shard_tokens = int(shard_tokens)
        self.dtype = np.dtype(dtype)
        self.byte_lengths = byte_lengths
        self.limit = int(limit)
        self.finished: list[dict] = []
        self.cur_tokens = 0
        self.cur_bytes = 0
        self._f = None
        self.closed_since_commit = 0

    # ------------------------------------------------------------ totals

    @property
    def tokens(self) -> int:
        return sum(e["tokens"] for e in self.finished) + self.cur_tokens

    @property
    def bytes(self) -> int:
        return sum(e["bytes"] for e in self.finished) + self.cur_bytes

    @property
    def full(self) -> bool:
        return self.limit > 0 and self.tokens >= self.limit

    def _tmp(self, index: int) -> Path:
        return self.folder / (shard_name(self.prefix, index) + ".tmp")

    # ------------------------------------------------------------ writing

    def _open(self):
        if self._f is None:
            self._f = open(self._tmp(len(self.finished)), "ab")
        return self._f

    def add(self, ids: np.ndarray) -> int:
        ids = np.asarray(ids)
        if self.limit:
            ids = ids[: max(0, self.limit - self.tokens)]
        taken = len(ids)
        pos = 0
        while pos < len(ids):
            take = min(len(ids) - pos, self.shard_tokens - self.cur_tokens)
            piece = ids[pos : pos + take]
            self._open().write(piece.astype(self.dtype, copy=False).tobytes())
            self.cur_tokens += take
            self.cur_bytes += int(self.byte_lengths[piece].sum())
            pos += take
            if self.cur_tokens == self.shard_tokens:
                self._close_shard()
        return taken

    def _close_shard(self) -> None:
        index = len(self.finished)
        f = self._open()
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self._f = None
        final = self.folder / shard_name(self.prefix, index)
        os.replace(self._tmp(index), final)
        self.finished.append({"file": final.name, "tokens": self.cur_tokens, "bytes": self.cur_bytes, "sha256": sha256_file(final)})
        self.cur_tokens = 0
        self.cur_bytes = 0
        self.closed_since_commit += 1

    def commit_state(self) -> dict:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
        self.closed_since_commit = 0
        return {"finished": [dict(e) for e in self.finished], "cur_tokens": self.cur_tokens, "cur_bytes": self.cur_bytes}

    def finish(self) -> list[dict]:
        """Close the last shard (if it has ids) and return every shard's entry."""
        if self.cur_tokens:
            self._close_shard()
        elif self._f is not None:
            self._f.close()
            self._f = None
        with_tmp = self._tmp(len(self.finished))
        if with_tmp.exists():
            with_tmp.unlink()
        return [dict(e) for e in self.finished]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    # ------------------------------------------------------------ resuming

    def restore(self, state: dict) -> bool:
        """Continue from a committed state; False (and nothing kept) when the files do not match it."""
        try:
            finished = [dict(e) for e in state["finished"]]
            cur_tokens, cur_bytes = int(state["cur_tokens"]), int(state["cur_bytes"])
        except (KeyError, TypeError, ValueError):
            return False
        item = self.dtype.itemsize
        for i, e in enumerate(finished):
            path = self.folder / e.get("file", "")
            if e.get("file") != shard_name(self.prefix, i) or not path.is_file() or path.stat().st_size != int(e["tokens"]) * item:
                return False
        c = len(finished)
        tmp, final = self._tmp(c), self.folder / shard_name(self.prefix, c)
        # the unfinished shard: its tmp file, or (when interrupted between its rename and the next
        # commit) the finished file; either way it must hold at least the committed ids
        if cur_tokens:
            if tmp.is_file() and tmp.stat().st_size >= cur_tokens * item:
                pass
            elif final.is_file() and final.stat().st_size >= cur_tokens * item:
                os.replace(final, tmp)
            else:
                return False
            with open(tmp, "r+b") as f:
                f.truncate(cur_tokens * item)
        # anything past the commit point is from the interrupted run: drop it
        for p in self.folder.glob(f"{self.prefix}-*.bin*"):
            try:
                index = int(p.name[len(self.prefix) + 1 :].split(".")[0])
            except ValueError:
                continue
            if index > c or (index == c and p.suffix == ".bin") or (index == c and not cur_tokens):
                p.unlink()
        self.finished, self.cur_tokens, self.cur_bytes = finished, cur_tokens, cur_bytes
        return True
