"""Reading local text: strict UTF-8, clear errors, and the stream split.

Every way text enters jepa (a mirror file, `--from`, `text:PATH`, a download)
goes through `decode_text`, so an empty or non-UTF-8 input fails the same way
wherever it came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError


@dataclass(frozen=True)
class TextFile:
    path: Path
    text: str
    sha256: str  # of the file's bytes
    size: int
    mtime_ns: int


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 text of `data` (a leading BOM dropped); DataError when empty or not UTF-8."""
    if not data:
        raise DataError(f"{where} is empty.", hint="Give a file that contains text.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = data[e.start : e.start + 1].hex()
        raise DataError(
            f"{where} is not UTF-8 text: byte 0x{bad} at offset {e.start} cannot be decoded.",
            hint="Convert it first, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`.",
        ) from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{where} contains only whitespace.", hint="Give a file that contains text.")
    return text


def read_text_file(path: Path, label: str | None = None) -> TextFile:
    path = Path(path)
    where = f"{label} {path}" if label else str(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{where} does not exist.", hint="Check the path (relative paths start at the current directory).") from None
    except IsADirectoryError:
        raise DataError(f"{where} is a directory, not a text file.") from None
    except OSError as e:
        raise DataError(f"Cannot read {where}: {e.strerror or e}.") from None
    text = decode_text(data, where)
    return TextFile(path=path, text=text, sha256=hashlib.sha256(data).hexdigest(), size=st.st_size, mtime_ns=st.st_mtime_ns)


def read_text_tree(path: Path) -> list[TextFile]:
    """A file, or every `.txt` file under a folder (sorted by relative path, so the order is stable)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist.", hint="Check the path (relative paths start at the current directory).")
    if path.is_file():
        return [read_text_file(path)]
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"Folder {path} has no .txt files.", hint="`text:PATH` reads a .txt file or every .txt file under a folder.")
    out = []
    for f in files:
        try:
            out.append(read_text_file(f))
        except DataError as e:
            # one empty file in a corpus folder is not worth failing for; unreadable text is
            if "is empty" in e.message or "only whitespace" in e.message:
                continue
            raise
    if not out:
        raise DataError(f"Every .txt file under {path} is empty.", hint="Give a folder that contains text.")
    return out


def join_texts(texts: list[str]) -> str:
    """Concatenate documents, with a newline between two that would otherwise run together."""
    parts: list[str] = []
    for t in texts:
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
        parts.append(t)
    return "".join(parts)


def split_stream(text: str, val_fraction: float) -> tuple[str, str]:
    """Train = the first `int(n * (1 - val_fraction))` characters, val = the rest (nanoGPT's 90/10)."""
    n_train = int(len(text) * (1.0 - val_fraction))
    return text[:n_train], text[n_train:]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_fingerprint(path: Path) -> list[list]:
    """[path, size, mtime_ns] of every file `text:PATH` reads, to notice edits after preparing."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    else:
        return []
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out
