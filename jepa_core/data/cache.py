"""The token cache: one folder per (dataset, tokenizer settings) with flat token files.

Layout of `$JEPA_HOME/data/<name>/` (format 1: aliases and text:PATH):

    train.bin, val.bin   token ids, flat little-endian uint16 (uint32 when ids exceed 65535)
    manifest.json        counts, bytes of text per split, hashes, tokenizer, dtype

Format 2 (hf:/json:/parquet:, see pipeline.py and shards.py) has
`train-00000.bin ...`, `val-00000.bin ...` and its own `tokenizer.json` instead.

A cache is built in a hidden temp folder next to its final place, the manifest
is written last, and the folder is renamed into place: a crash leaves either
the old cache or none, never a half-written one under the final name. Loading
still checks every file's size against the manifest, so a cache truncated
later (a full disk, a manual edit) is rebuilt rather than read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DataError
from ..fsutil import _fsync_dir, atomic_write_text

CACHE_FORMAT = "jepa-token-cache/1"
FORMATS = (CACHE_FORMAT, "jepa-token-cache/2")  # 2: sharded, written by pipeline.py
MANIFEST = "manifest.json"
SPLITS = ("train", "val")


class CacheMiss(DataError):
    """No usable cache: absent, from another format, incomplete or stale. Preparing again fixes it."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id (0 .. vocab_size-1) fits in 16 bits, else uint32."""
    if vocab_size <= 1 << 16:
        return np.dtype("<u2")
    if vocab_size <= 1 << 32:
        return np.dtype("<u4")
    raise ValueError(f"vocab_size {vocab_size} does not fit uint32 token ids")


@contextlib.contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """A hidden temp folder beside `dest`; removed on any error, renamed to `dest` by `install`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would survive the rename and hide the cache from other readers
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_split(folder: Path, split: str, tokens: np.ndarray, vocab_size: int) -> dict:
    """Write one split's ids as `<split>.bin` in the cache dtype; its manifest entry (without bytes)."""
    dtype = token_dtype(vocab_size)
    tokens = np.asarray(tokens)
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"{split} token ids outside [0, {vocab_size})")
    path = folder / f"{split}.bin"
    with open(path, "wb") as f:
        tokens.astype(dtype, copy=False).tofile(f)
        f.flush()
        os.fsync(f.fileno())
    return {"file": path.name, "tokens": int(tokens.size), "dtype": dtype.name}


def install(tmp: Path, dest: Path, manifest: dict) -> None:
    """Write the manifest last, then move the finished folder to `dest` (replacing an old one)."""
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _fsync_dir(tmp)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except OSError:
            os.replace(old, dest)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / MANIFEST).is_file():
                raise
            # a concurrent prepare of the same cache finished first; its result is as good as ours
    _fsync_dir(dest.parent)


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheMiss(f"No prepared data at {folder}.") from None
    except (OSError, ValueError) as e:
        raise CacheMiss(f"The manifest {path} is unreadable ({e}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in FORMATS:
        raise CacheMiss(f"{folder} holds a cache of another format ({manifest.get('format') if isinstance(manifest, dict) else '?'}).")
    return manifest


def open_split(folder: Path, manifest: dict, split: str) -> np.ndarray:
    """A read-only memmap of one split, after checking its size against the manifest."""
    try:
        entry = manifest["splits"][split]
        dtype = np.dtype(entry["dtype"]).newbyteorder("<")
        count = int(entry["tokens"])
        path = folder / entry["file"]
    except (KeyError, TypeError, ValueError) as e:
        raise CacheMiss(f"The manifest in {folder} is incomplete ({e!r}).") from None
    from .shards import ShardCorrupt, open_shard

    try:
        return open_shard(path, dtype, count)
    except ShardCorrupt as e:
        raise CacheMiss(f"{e.message.rstrip('.')}: the cache is incomplete.") from None


def cache_manifest(
    *,
    format: str,
    dataset: str,
    settings: dict,
    source: dict,
    splits: dict,
    vocab_size: int,
    requested_vocab_size: int,
    dtype: str,
    tokenizer: dict,
    external: bool,
    lowercase: bool,
    t0: float,
    **extra,
) -> dict:
    """The manifest.json of a token cache: one builder for both layouts (whole-file splits and
    shards), so their common fields and the tokenizer block cannot drift apart. `tokenizer` holds
    what differs (where the file is, its hash, how it was made); `extra`, the layout's own fields."""
    from .tokenizer import SPECIAL_TOKENS, TOKENIZER_KIND

    return {
        "format": format,
        "dataset": dataset,
        "settings": settings,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "jepa_version": __version__,
        "source": source,
        "splits": splits,
        "vocab_size": vocab_size,
        "requested_vocab_size": None if external else requested_vocab_size,
        "dtype": dtype,
        **extra,
        "tokenizer": {
            "kind": "external" if external else TOKENIZER_KIND,
            "lowercase": None if external else lowercase,
            "special_tokens": None if external else list(SPECIAL_TOKENS),
            **tokenizer,
        },
        "prepare_seconds": round(time.perf_counter() - t0, 3),
    }
