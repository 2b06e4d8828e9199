"""The payload digest of a checkpoint file: a hash of its tensors, written with it and checked before use.

The header reader (`header.py`) proves a file is whole: sizes, offsets and dtypes agree. It
cannot see a byte changed inside a tensor (a bad sector, a bit flip in a copy, a stray write),
and such a file loads and trains on until the run diverges. So every checkpoint records, in its
safetensors metadata under `payload_digest`, `ALGORITHM:HEX` over its tensors, and readers
recompute it (`file_digest`) before trusting the file: `checkpoints.check_file` is the one
place that compares the two.

What is hashed, per tensor in name order: a JSON line `[name, dtype, shape]`, then its raw
little-endian bytes. Name order, not file order, so that the writer can hash the tensors in
memory before safetensors lays them out; the line binds each tensor's bytes to its name, dtype
and shape, so a header edit that swaps or retypes tensors fails too. The metadata itself is not
covered (it is JSON that `read_header` validates, and it holds the digest).

Algorithm: XXH3-128 (`xxhash`, which `datasets` already requires); sha256 from hashlib when
xxhash is missing. This guards against accident, not an attacker: the digest sits in the file it
covers, so whoever can rewrite the bytes can rewrite it too. XXH3 is several times faster than
sha256 (benchmarks/2026-12-xeon-amx.md). Standard library only, xxhash lazily.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, Protocol

from .header import Header

#: The metadata key a checkpoint's digest is stored under.
DIGEST_KEY = "payload_digest"

_CHUNK = 1 << 20


class Hasher(Protocol):
    def update(self, data: Any, /) -> None: ...
    def hexdigest(self) -> str: ...


def _xxh3_128() -> Hasher:
    import xxhash

    return xxhash.xxh3_128()


_ALGORITHMS = {"xxh3_128": _xxh3_128, "sha256": hashlib.sha256}


def default_algorithm() -> str:
    """What a new checkpoint is hashed with: XXH3-128 when xxhash imports, else sha256."""
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return "sha256"
    return "xxh3_128"


def new_hasher(algorithm: str) -> Hasher | None:
    """A fresh hasher for `algorithm`, or None when this installation cannot compute it."""
    make = _ALGORITHMS.get(algorithm)
    if make is None:
        return None
    try:
        return make()
    except ImportError:
        return None


def entry_line(name: str, dtype: str, shape: Iterable[int]) -> bytes:
    """The line hashed before a tensor's bytes (dtype as safetensors spells it: F32, BF16, ...)."""
    return (json.dumps([name, dtype, [int(d) for d in shape]], separators=(",", ":")) + "\n").encode("utf-8")


def parse(value: str) -> tuple[str, str] | None:
    """`ALGORITHM:HEX` -> (algorithm, hex), or None when it is not of that form."""
    algorithm, sep, hexdigest = value.partition(":")
    if not sep or not algorithm or not hexdigest:
        return None
    return algorithm, hexdigest.lower()


def file_digest(header: Header, algorithm: str) -> str | None:
    """Recompute the digest of the file `header` was read from; None when `algorithm` is unavailable.

    Reads every tensor once, in 1 MiB slices. OSError when the file cannot be read (or shrank:
    a short read fails, as the sizes were checked when the header was read).
    """
    h = new_hasher(algorithm)
    if h is None:
        return None
    start = 8 + header.header_size
    slab = bytearray(_CHUNK)
    view = memoryview(slab)
    with open(header.path, "rb", buffering=0) as f:
        for e in sorted(header.entries, key=lambda e: e.name):
            h.update(entry_line(e.name, e.dtype, e.shape))
            f.seek(start + e.begin)
            left = e.end - e.begin
            while left:
                n = f.readinto(view[: min(left, _CHUNK)])
                if not n:
                    raise OSError(f"{header.path} shrank while it was read")
                h.update(view[:n])
                left -= n
    return f"{algorithm}:{h.hexdigest()}"
