"""Document sources through `datasets`: `hf:OWNER/NAME[:CONFIG]`, `json:PATH`, `parquet:PATH`.

A source is resolved once (`resolve_source`): local files are listed, sorted
and grouped into splits by their names the way `datasets` does it
(`train-*.jsonl`, `validation-*.jsonl`, ...; a single file or a glob is one
`train` split), and a hub dataset is opened in streaming mode, pinned to the
commit it resolves to. `iter_chunks` then reads a split's text column in
chunks of about `chunk_bytes`, each with the `datasets` position after it, so
a preparation interrupted between two chunks continues from the next one
without reading the earlier ones again.

For a hub dataset the order is the one `jepa_core.data.sources` documents for
the aliases: `--from DIR` (a local copy of the repository, e.g. made with
`huggingface-cli download`), `$JEPA_DATA_MIRROR/hf/OWNER/NAME`, then the
network. Offline with none of them, the error names each way to provide it.
"""

from __future__ import annotations

import copy
import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .registry import RecordSpec
from .sources import OFFLINE_VARS, mirror_dir, offline_reason

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
ROWS_PER_READ = 64  # rows per datasets batch: a chunk ends at the first batch boundary after CHUNK_BYTES
HELDOUT = "heldout"


@dataclass
class Chunk:
    """Consecutive documents of one split, and where the reader stands after them."""

    texts: list[str]  # non-empty documents, in order
    nbytes: int  # UTF-8 bytes of `texts`
    rows: int  # rows read, including rows without text (skipped)
    state: dict | None  # the datasets iterator's state after this chunk (JSON-serialisable)


@dataclass
class Source:
    spec: RecordSpec
    origin: str  # "local", "hub", "from" (a local copy of a hub repository) or "mirror"
    files: dict[str, list[Path]] = field(default_factory=dict)  # split -> files (local kinds and local copies)
    hub_splits: list[str] | None = None
    revision: str | None = None  # the hub commit, when read from the hub
    local_repo: Path | None = None  # the folder a hub dataset is read from offline
    _hub_streams: dict | None = field(default=None, repr=False)

    @property
    def split_names(self) -> list[str]:
        if self.hub_splits is not None:
            return list(self.hub_splits)
        return list(self.files)

    def all_files(self) -> list[Path]:
        return [f for fs in self.files.values() for f in fs]

    def fingerprint(self) -> list:
        """What changes when the source changes, cheap to compute: [split, path, size, mtime] of
        local files, or the hub revision."""
        if self.origin == "hub":
            return [["revision", self.revision]]
        return files_fingerprint(self.files)

    def describe(self) -> dict:
        d: dict = {"kind": self.spec.kind, "name": self.spec.canonical, "origin": self.origin}
        if self.spec.kind == "hf":
            d["repo"] = self.spec.location
            d["config"] = self.spec.config
            d["revision"] = self.revision
        if self.local_repo is not None:
            d["local_repo"] = str(self.local_repo)
        return d

    def total_rows(self, split: str) -> int | None:
        """Rows in a split when cheap to know (Parquet metadata, JSON lines counted, hub card), else None."""
        try:
            if self.hub_splits is not None:
                info = self._open_hub(split).info
                sp = (info.splits or {}).get(split) if info is not None else None
                return int(sp.num_examples) if sp is not None and sp.num_examples else None
            fs = self.files.get(split, [])
            if self.spec.kind == "parquet":
                import pyarrow.parquet as pq

                return sum(pq.ParquetFile(f).metadata.num_rows for f in fs)
            return sum(_count_json_lines(f) for f in fs)
        except Exception:  # an estimate for a progress bar is never worth failing for
            return None

    # ------------------------------------------------------------ reading

    def _open_hub(self, split: str, fresh: bool = False):
        # the streams opened while resolving are used once; a second pass opens the split again
        if fresh or self._hub_streams is None or split not in self._hub_streams:
            path = str(self.local_repo) if self.local_repo is not None else self.spec.location
            self._hub_streams = dict(_load_hub(path, self.spec.config, self.revision))
        return self._hub_streams[split]

    def open(self, split: str, text_field: str):
        """A fresh streaming `datasets.IterableDataset` of one split, reduced to its text column."""
        if split not in self.split_names:
            raise unknown_split(self, split, "split")
        if self.hub_splits is not None:
            ds = self._open_hub(split)
            self._hub_streams.pop(split)
        else:
            ds = _load_local(self.spec.kind, self.files[split], split, text_field)
        cols = ds.column_names
        if cols is not None and text_field not in cols:
            raise missing_field(self, split, text_field, cols)
        if cols is not None and len(cols) > 1:
            ds = ds.select_columns([text_field])
        return ds


def files_fingerprint(files: dict[str, list[Path]]) -> list:
    out = []
    for split, fs in files.items():
        for f in fs:
            try:
                st = f.stat()
            except OSError:
                continue
            out.append([split, str(f), st.st_size, st.st_mtime_ns])
    return out


def _count_json_lines(path: Path) -> int:
    if path.name.endswith(COMPRESSION_SUFFIXES):
        raise ValueError("compressed")
    n = 0
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        if head.lstrip()[:1] != b"{":
            raise ValueError("not JSON lines")
        n += head.count(b"\n")
        while block := f.read(1 << 24):
            n += block.count(b"\n")
    return n


def _load_local(kind: str, files: list[Path], split: str, text_field: str):
    import datasets

    datasets.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset(kind, data_files={split: [str(f) for f in files]}, split=split, streaming=True)
    except Exception as e:
        raise unreadable(kind, files, e) from None
    return ds


# --------------------------------------------------------------------------- errors


def _list(items, n: int = 6) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def unreadable(kind: str, files: list[Path], e: BaseException) -> DataError:
    what = {"json": "JSON lines", "parquet": "Parquet"}.get(kind, kind)
    msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause).strip():
        msg += f" ({str(cause).strip().splitlines()[0][:300]})"
    return DataError(
        f"Could not read {_list(files, 3)} as {what}: {msg}.",
        hint=f"`{kind}:PATH` reads {what} files; check that the path names the right files (not a binary or another format).",
    )


def missing_field(src: Source, split: str, text_field: str, cols) -> DataError:
    return DataError(
        f"`{src.spec.name}` has no text field `{text_field}` in its {split} split; its columns are {_list(cols, 12)}.",
        hint="Name the column that holds the text with data.text_field (`--text-field NAME` for `jepa data prepare`, "
        "or `--set data.text_field=NAME`).",
    )


def unknown_split(src: Source, split: str, key: str) -> DataError:
    have = src.split_names
    return DataError(
        f"`{src.spec.name}` has no split `{split}` (data.{key}); it has {_list(have) or 'no splits'}.",
        hint=f"Set data.{key} to one of those"
        + (", or data.val_split = \"heldout\" to hold out data.val_fraction of the train documents." if key == "val_split" else ".")
        + (" Local files are grouped into splits by name (train-*.jsonl, validation-*.jsonl, ...)." if src.origin == "local" else ""),
    )


# --------------------------------------------------------------------------- resolving


def _suffixes(kind: str) -> tuple[str, ...]:
    return JSON_SUFFIXES if kind == "json" else PARQUET_SUFFIXES


def _matches(kind: str, path: Path) -> bool:
    name = path.name
    for c in COMPRESSION_SUFFIXES:
        if kind == "json" and name.endswith(c):
            name = name[: -len(c)]
    return name.endswith(_suffixes(kind))


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


SPLIT_WORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
_WORD_SPLIT = {w: split for split, words in SPLIT_WORDS.items() for w in words}


def _split_of(rel: Path) -> str | None:
    """The split a file's name (else its folders' names) says it belongs to, the convention
    `datasets` uses: a keyword between separators (-._ space digits), e.g. `train-0001.jsonl`,
    `data/validation/part.parquet`."""
    def words(name: str) -> list[str]:
        return [w for w in re.split(r"[-._ 0-9]+", name.lower()) if w]

    for w in words(rel.name.split(".")[0]):
        if w in _WORD_SPLIT:
            return _WORD_SPLIT[w]
    for part in reversed(rel.parts[:-1]):
        for w in words(part):
            if w in _WORD_SPLIT:
                return _WORD_SPLIT[w]
    return None


def list_local_files(spec: RecordSpec) -> dict[str, list[Path]]:
    """Split -> files of a json:/parquet: location (without importing datasets: loading a
    prepared cache checks these files against its manifest, and must stay fast)."""
    loc = spec.location
    if spec.is_glob:
        files = sorted(Path(p) for p in glob.glob(loc, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"`{spec.name}`: no file matches {loc}.", hint="Check the pattern (quote it in the shell; `**` matches folders recursively).")
        return {"train": files}
    path = Path(loc)
    if path.is_file():
        return {"train": [path]}
    if not path.is_dir():
        raise DataError(f"`{spec.name}`: {path} does not exist.", hint="Check the path (relative paths start at the current directory).")
    files = sorted(p for p in path.rglob("*") if p.is_file() and _matches(spec.kind, p) and not _hidden(p, path))
    if not files:
        ext = " / ".join(_suffixes(spec.kind))
        raise DataError(f"Folder {path} has no {ext} files.", hint=f"`{spec.kind}:PATH` reads {ext} files under a folder (hidden ones skipped).")
    named = {f: _split_of(f.relative_to(path)) for f in files}
    if not any(named.values()):
        return {"train": files}
    out: dict[str, list[Path]] = {}
    for f, split in named.items():
        if split is not None:  # files that name no split are left out, as datasets leaves them out
            out.setdefault(split, []).append(f)
    return dict(sorted(out.items()))


def _resolve_local(spec: RecordSpec) -> Source:
    return Source(spec, "local", files=list_local_files(spec))


def _hub_missing(spec: RecordSpec, from_path: Path | None, reason: str) -> DataError:
    m = mirror_dir()
    looked = [f"--from {from_path} is not a dataset folder" if from_path else "no --from DIR was given"]
    looked.append(f"JEPA_DATA_MIRROR={m} has no hf/{spec.location}" if m else "JEPA_DATA_MIRROR is not set")
    looked.append(reason)
    hint = (
        "Provide it one of three ways: "
        f"(1) on a machine with internet access (unset {', '.join(OFFLINE_VARS)}), `jepa data prepare {spec.name}` streams it from the hub; "
        f"(2) download the repository elsewhere (`huggingface-cli download {spec.location} --repo-type dataset --local-dir DIR`"
        + (", with `--include README.md 'PATTERN'` to fetch only the config's files" if spec.config else "")
        + "), "
        f"copy DIR here and run `jepa data prepare {spec.name} --from DIR`, or put it at $JEPA_DATA_MIRROR/hf/{spec.location}; "
        "(3) use local files directly: `parquet:DIR` or `json:DIR` (a file, a folder or a glob)."
    )
    return DataError(f"`{spec.name}` is not available: {'; '.join(looked)}.", hint=hint)


def _hub_revision(repo: str) -> str | None:
    """The commit the hub's main branch points at, so the manifest can name what was read."""
    from huggingface_hub import HfApi

    return HfApi().dataset_info(repo).sha


def _load_hub(path: str, config: str | None, revision: str | None):
    """Every split of a hub dataset (or of a local copy of its repository), streaming."""
    import datasets

    datasets.logging.set_verbosity_error()
    return datasets.load_dataset(path, config, streaming=True, revision=revision)


def _resolve_hub(spec: RecordSpec, from_path: Path | None) -> Source:
    local: tuple[str, Path] | None = None
    if from_path is not None:
        from_path = Path(from_path).expanduser().resolve()
        if not from_path.is_dir():
            raise DataError(f"--from {from_path} is not a folder.", hint=f"Give the folder that holds a copy of the {spec.location} repository.")
        local = ("from", from_path)
    elif (m := mirror_dir()) is not None and (m / "hf" / spec.location).is_dir():
        local = ("mirror", (m / "hf" / spec.location).resolve())
    if local is not None:
        origin, folder = local
        try:
            streams = _load_hub(str(folder), spec.config, None)
        except Exception as e:
            raise DataError(
                f"Could not open {folder} as a copy of {spec.location}: {type(e).__name__}: {str(e)[:300]}",
                hint="Give the folder `huggingface-cli download ... --local-dir DIR` made (with its README.md), "
                "or read its files directly with `parquet:DIR` / `json:DIR`.",
            ) from None
        # every file of the copy, for the manifest's hashes and the resume check
        files = {"repo": sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder))}
        return Source(spec, origin, files=files, hub_splits=list(streams), local_repo=folder, _hub_streams=dict(streams))
    reason = offline_reason()
    hf_offline = any(os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no", "off") for v in OFFLINE_VARS[1:])
    if reason is not None and not hf_offline:
        # JEPA_OFFLINE alone: datasets would still try the network, so stop here
        raise _hub_missing(spec, from_path, f"the network is disabled ({reason})")
    try:
        revision = None if reason is not None else _hub_revision(spec.location)
        streams = _load_hub(spec.location, spec.config, revision)
    except DataError:
        raise
    except Exception as e:  # ConnectionError, HfHubHTTPError, DatasetNotFoundError, ValueError for a bad config, ...
        if reason is not None:
            raise _hub_missing(spec, from_path, f"the network is disabled ({reason})") from None
        text = str(e).strip().splitlines()[0][:400] if str(e).strip() else ""
        raise DataError(
            f"Could not open {spec.location}{':' + spec.config if spec.config else ''} on the Hugging Face hub: {type(e).__name__}: {text}",
            hint="Check the name and the config (`hf:OWNER/NAME:CONFIG`) on huggingface.co, and the connection; "
            "offline, use --from DIR with a local copy of the repository.",
        ) from None
    return Source(spec, "hub", hub_splits=list(streams), revision=revision, _hub_streams=dict(streams))


def resolve_source(spec: RecordSpec, from_path: Path | None = None) -> Source:
    if spec.kind == "hf":
        return _resolve_hub(spec, from_path)
    if from_path is not None:
        raise DataError(f"`{spec.kind}:PATH` already names its files; --from is for dataset aliases and hf: datasets.", hint="Drop --from.")
    return _resolve_local(spec)


def resolve_splits(src: Source, train_split: str, val_split: str) -> tuple[str, str]:
    """(train split, val split or HELDOUT) after checking the names exist."""
    have = src.split_names
    if train_split not in have:
        raise unknown_split(src, train_split, "train_split")
    if val_split == "auto":
        val = "validation" if "validation" in have and train_split != "validation" else HELDOUT
    elif val_split == HELDOUT:
        val = HELDOUT
    elif val_split not in have:
        raise unknown_split(src, val_split, "val_split")
    else:
        val = val_split
    if val == train_split:
        raise DataError(
            f"data.val_split and data.train_split are both `{train_split}`: validation would score training text.",
            hint='Use another split, or data.val_split = "heldout" to hold out data.val_fraction of the documents.',
        )
    return train_split, val


# --------------------------------------------------------------------------- iterating


def iter_chunks(src: Source, split: str, text_field: str, state: dict | None, chunk_bytes: int) -> Iterator[Chunk]:
    """The split's documents in chunks of about `chunk_bytes`; resumes after `state` when given."""
    ds = src.open(split, text_field)
    if state is not None:
        ds.load_state_dict(copy.deepcopy(state))
    files = src.files.get(split) or ([src.local_repo] if src.local_repo else [Path(src.spec.location)])
    it = ds.iter(batch_size=ROWS_PER_READ)
    texts: list[str] = []
    nbytes = rows = 0
    while True:
        try:
            batch = next(it)
        except StopIteration:
            break
        except DataError:
            raise
        except Exception as e:
            raise unreadable(src.spec.kind, files, e) from None
        if text_field not in batch:
            raise missing_field(src, split, text_field, list(batch))
        col = batch[text_field]
        for v in col:
            if v is None:
                continue
            if not isinstance(v, str):
                raise DataError(
                    f"`{src.spec.name}`: field `{text_field}` of the {split} split holds {type(v).__name__} values, not text.",
                    hint="Name the column that holds the text with data.text_field (`--text-field NAME`).",
                )
            if v:
                texts.append(v)
                nbytes += len(v.encode("utf-8"))
        rows += len(col)
        if nbytes >= chunk_bytes:
            yield Chunk(texts, nbytes, rows, ds.state_dict())
            texts, nbytes, rows = [], 0, 0
    if texts or rows:
        yield Chunk(texts, nbytes, rows, ds.state_dict())
