"""The one reader of safetensors headers (stdlib only): `jepa inspect`, resume verification and
every other reader go through `read_header`, so they agree on what a whole file is.

A safetensors file is an 8-byte little-endian length N, N bytes of JSON (tensor name ->
dtype, shape, data_offsets; plus `__metadata__`, strings to strings), then the tensor data.
Only the header is read, and a hostile or broken file is refused before anything big is
allocated; no tensor data is touched.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Refuse headers above this size before reading them (the safetensors library's own cap).
MAX_HEADER_BYTES = 100_000_000

#: Bytes per element of each safetensors dtype (None: packed sub-byte types, sizes not checked).
DTYPE_SIZES: dict[str, int | None] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
    "F4": None, "F6_E2M3": None, "F6_E3M2": None,
}  # fmt: skip
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"})

_TRUNCATED_HINT = "The file was cut short (an interrupted copy or write?); re-copy it or use an earlier checkpoint."
_CORRUPT_HINT = "Re-copy the file, or use an earlier checkpoint from the same checkpoints/ folder."


class HeaderError(ValueError):
    """What is wrong with a file that should be safetensors: `reason` (a phrase without the path;
    one starting with "is " reads after the file name) and a `hint` for the user."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint

    def about(self, path: Path | str) -> str:
        """The whole message, naming the file."""
        return f"{path} {self.reason}" if self.reason.startswith("is ") else f"{path}: {self.reason}"


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data area (after the header)
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    path: Path
    file_size: int
    header_size: int  # N, the JSON's length
    metadata: dict[str, str]
    entries: list[Entry]  # in the file's order


def describe_non_safetensors(head: bytes) -> str | None:
    """What the first bytes of a file that is not safetensors look like (for the message), or None."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (the format of torch.save .pt/.pth files)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle (the format of older torch.save files)"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file"
    return None


def _not_safetensors(what: str | None) -> HeaderError:
    looks = f" It looks like {what}." if what else ""
    pickled = what is not None and ("pickle" in what or "zip" in what)
    never = " jepa never unpickles files: loading a pickle can run arbitrary code." if pickled else ""
    return HeaderError(
        f"is not a safetensors file.{looks}{never}",
        hint="`jepa inspect` reads the .safetensors checkpoints that `jepa train` writes under runs/<run>/checkpoints/.",
    )


def _read_raw(path: Path) -> tuple[int, int, bytes]:
    """(file size, N, the N header bytes), refusing before a big read; OSError when unreadable."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        if size < 8:
            raise HeaderError(
                f"is truncated or not a safetensors file: it holds {size} bytes, shorter than the 8-byte "
                "header length every safetensors file starts with.",
                hint=_CORRUPT_HINT,
            )
        n = int.from_bytes(head[:8], "little")
        if not (len(head) > 8 and head[8:9] == b"{"):
            what = describe_non_safetensors(head)
            if what is not None or size > 8 or n == 0:
                raise _not_safetensors(what)
        if n > MAX_HEADER_BYTES:
            raise HeaderError(
                f"the header length field claims {n:,} bytes, over the {MAX_HEADER_BYTES // 1_000_000} MB limit; "
                "refusing to read it. The file is corrupt or not a jepa checkpoint.",
                hint="A jepa checkpoint's header is a few kB to a few MB.",
            )
        if 8 + n > size:
            raise HeaderError(
                f"is truncated: its header claims {n:,} bytes but only {size - 8:,} bytes follow the length field.",
                hint=_TRUNCATED_HINT,
            )
        f.seek(8)
        raw = f.read(n)
    if len(raw) != n:  # the file shrank under us
        raise HeaderError(f"is truncated: read {len(raw):,} of {n:,} header bytes.", hint=_TRUNCATED_HINT)
    return size, n, raw


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "not an object"
    dtype, shape, offs = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        return "no dtype"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        return f"shape {shape!r}"
    if (
        not isinstance(offs, list)
        or len(offs) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)
        or offs[0] > offs[1]
    ):
        return f"data_offsets {offs!r}"
    return None


def read_header(path: str | Path, *, whole: bool = False) -> Header:
    """Parse and check a safetensors header; reads nothing beyond it.

    Always checked: the JSON parses, the metadata maps strings to strings, every entry is
    well formed, its byte range matches its dtype and shape and lies inside the file.
    `whole=True` (before a resume) also asks that the ranges tile the data area and the
    file end where the last one does, so a file cut short or padded fails. Raises
    HeaderError saying what is wrong, OSError (FileNotFoundError, ...) when unreadable.
    """
    path = Path(path)
    size, n, raw = _read_raw(path)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise HeaderError(f"the safetensors header is not valid JSON ({e}). The file is corrupt.", hint=_CORRUPT_HINT) from None
    if not isinstance(doc, dict):
        raise HeaderError("the safetensors header is JSON but not an object. The file is corrupt.")
    meta = doc.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise HeaderError("`__metadata__` must map strings to strings. The file is corrupt.")
    data_size = size - 8 - n
    entries = []
    for name, entry in doc.items():
        bad = _entry_problem(entry)
        if bad:
            raise HeaderError(f"tensor `{name}` has a malformed header entry ({bad}). The file is corrupt.")
        e = Entry(name, entry["dtype"], tuple(entry["shape"]), *entry["data_offsets"])
        item = DTYPE_SIZES.get(e.dtype)
        if item is not None and e.end - e.begin != e.numel * item:
            raise HeaderError(
                f"tensor `{name}` ({e.dtype} {list(e.shape)}) needs {e.numel * item:,} bytes but its offsets span "
                f"{e.end - e.begin:,}. The file is corrupt."
            )
        if e.end > data_size:
            raise HeaderError(
                f"is truncated: tensor `{name}` ends at byte {8 + n + e.end:,} but the file holds {size:,} bytes.",
                hint=_TRUNCATED_HINT,
            )
        entries.append(e)
    if whole:
        pos = 0
        for e in sorted(entries, key=lambda e: (e.begin, e.end)):
            if e.begin != pos:
                raise HeaderError("the tensors' byte ranges overlap or leave gaps. The file is corrupt.")
            pos = e.end
        if size != 8 + n + pos:
            raise HeaderError(f"the file has {size:,} bytes, its header describes {8 + n + pos:,}.", hint=_CORRUPT_HINT)
    return Header(path=path, file_size=size, header_size=n, metadata=meta, entries=entries)
