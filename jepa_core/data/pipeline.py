"""Preparing a document dataset (hf:/json:/parquet:) into a sharded token cache.

The corpus is never held in memory. A reader thread pulls the train split
through `datasets` in chunks of about `CHUNK_BYTES` of text while the main
thread encodes the previous chunk with `tokenizers`' `encode_batch` (Rust, on
every core, without the GIL) and appends the ids to shard files of
`SHARD_TOKENS` ids. Each document's ids are followed by the tokenizer's
end-of-document token (`<eos>`), so no window runs from one document into the
next without that marker. Memory is about the tokenizer sample, two chunks of
text and one chunk's encodings, whatever the corpus size.

Validation: the dataset's own validation split (encoded after train), or, when
it has none, every document whose index d has floor((d+1)f) > floor(df), f =
val_fraction: exactly a fraction f of the documents, spread evenly, decided
without knowing how many there are.

The tokenizer is trained on the first `tokenizer_sample_bytes` of train text
(or copied from `data.tokenizer`), before any encoding; the chunks read for the
sample are kept and encoded first, so the stream is read once.

Interruptions. The work happens in `.<cache>.partial/` beside the cache. After
a chunk (at most every `COMMIT_SECONDS`, at every finished shard, and when
Ctrl-C arrives between two chunks) the writers are fsynced and
`progress.json` records the finished shards, the length of the unfinished
ones and the `datasets` iterator state; running the same command again
truncates what was written after that point and continues from there, and the
result is byte-identical to an uninterrupted run. Settings or source files
that changed in between start it over. Finished, the folder gets its manifest
and is renamed into place, as the single-file caches are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fsutil import atomic_write_text
from .cache import MANIFEST, cache_manifest, install, token_dtype
from .records import HELDOUT, Chunk, Source, iter_chunks, resolve_source, resolve_splits
from .registry import RecordSpec
from .shards import ShardWriter, sha256_file
from .tokenizer import BPETokenizer, split_for_encoding

CACHE_FORMAT_V2 = "jepa-token-cache/2"
PROGRESS_FORMAT = "jepa-prepare-progress/1"
PROGRESS = "progress.json"
TOKENIZER_FILE = "tokenizer.json"
SHARD_TOKENS = 100_000_000  # 200 MB per uint16 shard: ~100 files for 10B tokens
CHUNK_BYTES = 4 << 20  # text per encode_batch call: parallel enough, and its encodings stay ~100 MB
COMMIT_SECONDS = 10.0
LONG_DOC_CHARS = 1 << 20  # longer documents are cut (at token-preserving breaks) so one does not serialize a batch
SEPARATORS = ("<eos>", "<|endoftext|>", "</s>")

ProgressFn = Callable[[str, int, int], None]


# --------------------------------------------------------------------------- tokenizers


def separator_id(tok: BPETokenizer) -> int | None:
    """The end-of-document token: `<eos>` for ours, `<|endoftext|>` or `</s>` for others."""
    for name in SEPARATORS:
        i = tok.inner.token_to_id(name)
        if i is not None:
            return int(i)
    return None


def heldout_mask(first: int, n: int, fraction: float) -> np.ndarray:
    """True for the documents first..first+n-1 that go to validation (see the module docstring)."""
    d = np.arange(first, first + n, dtype=np.float64)
    return np.floor((d + 1) * fraction) > np.floor(d * fraction)


def encode_texts(tok: BPETokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each document (no specials), one parallel `encode_batch` call."""
    inner = tok.inner
    if all(len(t) <= LONG_DOC_CHARS for t in texts):
        return [e.ids for e in inner.encode_batch(texts, add_special_tokens=False)]
    pieces: list[str] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        parts = split_for_encoding(t, LONG_DOC_CHARS // 4) if len(t) > LONG_DOC_CHARS else [t]
        pieces += parts
        owner += [i] * len(parts)
    out: list[list[int]] = [[] for _ in texts]
    for i, e in zip(owner, inner.encode_batch(pieces, add_special_tokens=False)):
        out[i].extend(e.ids)
    return out


def flatten(id_lists: list[list[int]], sep: int | None, dtype: np.dtype) -> np.ndarray:
    """One array: each document's ids followed by `sep`."""
    if sep is not None:
        for ids in id_lists:
            ids.append(sep)
    n = sum(map(len, id_lists))
    return np.fromiter(chain.from_iterable(id_lists), dtype=dtype, count=n)


# --------------------------------------------------------------------------- the reader thread


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


class ChunkReader:
    """`iter_chunks` on a daemon thread, at most `depth` chunks ahead of the consumer."""

    def __init__(self, make: Callable[[], Iterator[Chunk]], depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(make,), name="jepa-data-reader", daemon=True)
        self._t.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, make) -> None:
        try:
            for chunk in make():
                if not self._put(chunk):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the consumer, which raises it
            self._put(_Failed(e))

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            item = self._q.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- locking


@contextlib.contextmanager
def _locked(path: Path, warn: Callable[[str], None]):
    """An exclusive flock, so two preparations of one cache never write the same partial folder
    (the second waits, then finds the cache the first one finished)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (one preparation at a time is then the user's job)
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                warn(f"Another process is preparing this dataset ({path.name.removesuffix('.lock').lstrip('.')}); waiting for it to finish.")
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the preparation


class _Job:
    """One preparation: its settings, source, writers and resumable position."""

    def __init__(self, data_cfg, spec: RecordSpec, dest: Path, settings: dict, progress: ProgressFn | None, external_tokenizer):
        self.cfg = data_cfg
        self.spec = spec
        self.dest = dest
        self.settings = settings
        self.say = progress or (lambda stage, done, total: None)
        self.external = external_tokenizer  # (path, sha256) or None
        self.partial = dest.parent / f".{dest.name}.partial"
        self.t0 = time.perf_counter()

    # ------------------------------------------------------------ progress.json

    def _read_progress(self, fingerprint: list) -> dict | None:
        try:
            p = json.loads((self.partial / PROGRESS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(p, dict) or p.get("format") != PROGRESS_FORMAT:
            return None
        if p.get("settings") != self.settings or p.get("fingerprint") != fingerprint:
            return None
        return p

    def _commit(self) -> None:
        p = dict(self.prog)
        p["writers"] = {name: w.commit_state() for name, w in self.writers.items()}
        p["seconds"] = round(self.seconds_before + time.perf_counter() - self.t_encode, 3)
        atomic_write_text(self.partial / PROGRESS, json.dumps(p, sort_keys=True) + "\n")
        self.last_commit = time.perf_counter()

    # ------------------------------------------------------------ the tokenizer

    def _tokenizer(self, src: Source, train_split: str, val_split: str) -> tuple[BPETokenizer, list[Chunk]]:
        """The tokenizer (resumed, copied or trained) and the chunks read to train it (to encode first)."""
        path = self.partial / TOKENIZER_FILE
        info = self.prog.get("tokenizer")
        if info and path.is_file() and sha256_file(path) == info.get("sha256"):
            return BPETokenizer.from_file(path), []
        if self.external is not None:
            ext_path, ext_sha = self.external
            shutil.copyfile(ext_path, path)
            self.prog["tokenizer"] = {"sha256": sha256_file(path), "source": str(ext_path), "sample_bytes": 0, "seconds": 0.0}
            return BPETokenizer.from_file(path), []
        limit = self.cfg.tokenizer_sample_bytes
        self.say("sample", 0, limit)
        chunks: list[Chunk] = []
        sample: list[str] = []
        got = 0
        first = 0
        reader = ChunkReader(lambda: iter_chunks(src, train_split, self.cfg.text_field, None, CHUNK_BYTES))
        try:
            for chunk in reader:
                chunks.append(chunk)
                mask = heldout_mask(first, len(chunk.texts), self.cfg.val_fraction) if val_split == HELDOUT else None
                first += len(chunk.texts)
                for i, t in enumerate(chunk.texts):
                    if got >= limit:
                        break
                    if mask is not None and mask[i]:
                        continue
                    b = len(t.encode("utf-8"))
                    if got + b > limit:  # the sample stops inside this document
                        t = t.encode("utf-8")[: limit - got].decode("utf-8", errors="ignore")
                        b = len(t.encode("utf-8"))
                    sample.append(t)
                    got += b
                self.say("sample", min(got, limit), limit)
                if got >= limit:
                    break
        finally:
            reader.close()
        if not sample:
            raise self._empty(src, train_split)
        self.say("tokenizer", 0, 1)
        t = time.perf_counter()
        pieces = [p for s in sample for p in (split_for_encoding(s) if len(s) > LONG_DOC_CHARS else [s])]
        tok = BPETokenizer.train(pieces, self.cfg.vocab_size, lowercase=self.cfg.lowercase)
        del pieces, sample
        atomic_write_text(path, tok.to_str())
        self.prog["tokenizer"] = {
            "sha256": sha256_file(path),
            "source": "trained",
            "sample_bytes": got,
            "sample_limit": limit,
            "seconds": round(time.perf_counter() - t, 3),
        }
        self.say("tokenizer", 1, 1)
        # the sample chunks are encoded from the start of the stream: their states stay valid
        return tok, chunks

    def _empty(self, src: Source, split: str) -> DataError:
        return DataError(
            f"`{self.spec.name}` has no text in field `{self.cfg.text_field}` of its {split} split (no rows, or only empty ones).",
            hint="Check the path and data.text_field / data.train_split.",
        )

    # ------------------------------------------------------------ running

    def run(self, from_path: Path | None, force: bool, warn: Callable[[str], None]) -> dict:
        try:
            return self._run(from_path, force, warn)
        except DataError:
            # bad input (a missing field, an unreadable file, an empty split): leave nothing behind,
            # unless finished shards are there (an offline rerun of a half-done hub download must
            # not throw away hours of work)
            if self.partial.is_dir() and not any(self.partial.glob("*.bin*")):
                shutil.rmtree(self.partial, ignore_errors=True)
            raise

    def _run(self, from_path: Path | None, force: bool, warn: Callable[[str], None]) -> dict:
        src = resolve_source(self.spec, from_path)
        train_split, val_split = resolve_splits(src, self.cfg.train_split, self.cfg.val_split)
        fingerprint = src.fingerprint()
        if force and self.partial.exists():
            shutil.rmtree(self.partial)
        prog = None if force else self._read_progress(fingerprint)
        if prog is None:
            if self.partial.exists():
                shutil.rmtree(self.partial)
            self.partial.mkdir(parents=True)
            prog = {
                "format": PROGRESS_FORMAT,
                "settings": self.settings,
                "fingerprint": fingerprint,
                "segment": "train",
                "state": None,
                "docs_seen": 0,
                "rows": 0,
                "bytes_in": 0,
                "docs": {"train": 0, "val": 0},
                "files": None,
            }
        self.prog = prog
        if prog["files"] is None and src.origin != "hub":
            # hashes of the local files, once per preparation (a resume keeps them)
            prog["files"] = [
                {"split": s, "path": p, "size": size, "sha256": sha256_file(Path(p))} for s, p, size, _mtime in fingerprint
            ]

        resumed = bool(prog.get("writers"))
        tok, sample_chunks = self._tokenizer(src, train_split, val_split)
        vocab = tok.vocab_size
        dtype = token_dtype(vocab)
        lengths = tok.token_byte_lengths()
        sep = separator_id(tok)
        self.writers = {
            "train": ShardWriter(self.partial, "train", SHARD_TOKENS, dtype, lengths, limit=self.cfg.max_train_tokens),
            "val": ShardWriter(self.partial, "val", SHARD_TOKENS, dtype, lengths),
        }
        if resumed:
            ok = all(w.restore(prog["writers"][name]) for name, w in self.writers.items())
            if not ok:
                warn("The interrupted preparation's files do not match its progress record; starting over.")
                shutil.rmtree(self.partial)
                return self._run(from_path, True, warn)
            kept = sum(len(w.finished) for w in self.writers.values())
            self.say("resume", kept, sum(w.tokens for w in self.writers.values()))
        self.seconds_before = float(prog.get("seconds", 0.0))
        self.t_encode = time.perf_counter()
        self.last_commit = time.perf_counter()
        self._commit()  # the tokenizer and the file hashes survive an interruption from here on

        total_rows = src.total_rows(train_split)
        if total_rows is not None and val_split != HELDOUT:
            more = src.total_rows(val_split)
            total_rows = total_rows + more if more is not None else None
        try:
            if prog["segment"] == "train":
                self._segment(src, train_split, val_split, sample_chunks if prog["state"] is None else [], tok, sep, dtype, total_rows)
                if self.writers["train"].tokens == 0:
                    raise self._empty(src, train_split)
                prog.update(segment="val" if val_split != HELDOUT else "done", state=None, docs_seen=0)
                self._commit()
            if prog["segment"] == "val":
                self._segment(src, val_split, None, [], tok, sep, dtype, total_rows)
                prog.update(segment="done", state=None)
                self._commit()
        finally:
            for w in self.writers.values():
                w.close()

        return self._install(src, train_split, val_split, fingerprint, tok, sep, dtype)

    def _install(self, src, train_split: str, val_split: str, fingerprint, tok, sep, dtype) -> dict:
        """Close the shards, write the manifest and move the finished cache into place."""
        prog = self.prog
        vocab = tok.vocab_size
        self.say("write", 0, 1)
        splits = {}
        for name, w in self.writers.items():
            shards = w.finish()
            splits[name] = {
                "tokens": sum(e["tokens"] for e in shards),
                "bytes": sum(e["bytes"] for e in shards),
                "docs": prog["docs"][name],
                "dtype": dtype.name,
                "shards": shards,
            }
        tok_info = dict(prog["tokenizer"])
        manifest = cache_manifest(
            format=CACHE_FORMAT_V2,
            dataset=self.spec.name,
            settings=self.settings,
            source={
                **src.describe(),
                "text_field": self.cfg.text_field,
                "train_split": train_split,
                "val_split": val_split,
                "val_fraction": self.cfg.val_fraction if val_split == HELDOUT else None,
                "fingerprint": fingerprint,
                "files": prog["files"] or [],
                "rows": prog["rows"],
            },
            splits=splits,
            vocab_size=vocab,
            requested_vocab_size=self.cfg.vocab_size,
            dtype=dtype.name,
            tokenizer={"file": TOKENIZER_FILE, "relative_to": "cache", "sha256": sha256_file(self.partial / TOKENIZER_FILE), **tok_info},
            external=self.external is not None,
            lowercase=self.cfg.lowercase,
            t0=self.t0,
            shard_tokens=SHARD_TOKENS,
            separator={"token": tok.inner.id_to_token(sep), "id": sep} if sep is not None else None,
            max_train_tokens=self.cfg.max_train_tokens,
            truncated=bool(self.writers["train"].full),
            encode_seconds=round(self.seconds_before + time.perf_counter() - self.t_encode, 3),
        )
        (self.partial / PROGRESS).unlink()
        install(self.partial, self.dest, manifest)
        self.say("write", 1, 1)
        return manifest

    def _segment(self, src, split, route_heldout, first_chunks, tok, sep, dtype, total_rows) -> None:
        """Encode one split from the recorded position: all to val (the val split), or train with
        held-out documents to val."""
        prog = self.prog
        heldout = route_heldout == HELDOUT
        into_val = route_heldout is None
        train_w, val_w = self.writers["train"], self.writers["val"]
        # the chunks read for the tokenizer sample come first; the reader continues after them
        state = first_chunks[-1].state if first_chunks else prog["state"]
        reader = ChunkReader(lambda: iter_chunks(src, split, self.cfg.text_field, state, CHUNK_BYTES))
        chunks = chain(first_chunks, reader) if first_chunks else reader
        consistent = True
        try:
            for chunk in chunks:
                if not into_val and train_w.full:
                    break
                id_lists = encode_texts(tok, chunk.texts)
                n = len(id_lists)
                if into_val:
                    val_ids = [id_lists[i] for i in range(n)]
                    train_ids: list[list[int]] = []
                elif heldout:
                    mask = heldout_mask(prog["docs_seen"], n, self.cfg.val_fraction)
                    train_ids = [ids for ids, m in zip(id_lists, mask) if not m]
                    val_ids = [ids for ids, m in zip(id_lists, mask) if m]
                else:
                    train_ids, val_ids = id_lists, []
                train_flat = flatten(train_ids, sep, dtype)
                val_flat = flatten(val_ids, sep, dtype)
                del id_lists
                # from here until the position is updated the writers are ahead of progress.json
                consistent = False
                train_w.add(train_flat)
                val_w.add(val_flat)
                prog["docs"]["train"] += len(train_ids)
                prog["docs"]["val"] += len(val_ids)
                prog["docs_seen"] += n
                prog["rows"] += chunk.rows
                prog["bytes_in"] += chunk.nbytes
                prog["state"] = chunk.state
                consistent = True
                closed = train_w.closed_since_commit or val_w.closed_since_commit
                if closed or time.perf_counter() - self.last_commit >= COMMIT_SECONDS:
                    self._commit()
                self._report(total_rows)
        except KeyboardInterrupt:
            if consistent:
                self._commit()  # keep everything up to the last whole chunk
            raise
        finally:
            reader.close()

    def _report(self, total_rows: int | None) -> None:
        prog = self.prog
        done_bytes = prog["bytes_in"]
        tokens = sum(w.tokens for w in self.writers.values())
        frac = 0.0
        if total_rows:
            frac = min(1.0, prog["rows"] / total_rows)
        if self.cfg.max_train_tokens:
            frac = max(frac, self.writers["train"].tokens / self.cfg.max_train_tokens)
        total_bytes = int(done_bytes / frac) if frac > 0 else 0
        total_tokens = int(tokens / frac) if frac > 0 else 0
        self.say("encode", done_bytes, total_bytes)
        self.say("tokens", tokens, total_tokens)


def build_sharded(
    data_cfg,
    spec: RecordSpec,
    dest: Path,
    settings: dict,
    *,
    from_path: Path | None,
    force: bool,
    progress: ProgressFn | None,
    warn: Callable[[str], None],
    external_tokenizer: tuple[Path, str] | None,
    reuse: Callable[[], object | None],
):
    """Build the cache at `dest` under its lock; `reuse()` is tried first once the lock is held
    (another process may have finished it meanwhile). Returns reuse()'s result or the manifest."""
    lock = dest.parent / f".{dest.name}.lock"
    with _locked(lock, warn):
        if not force:
            got = reuse()
            if got is not None:
                return got
        job = _Job(data_cfg, spec, dest, settings, progress, external_tokenizer)
        return job.run(from_path, force, warn)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
