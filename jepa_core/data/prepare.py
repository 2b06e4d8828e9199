"""prepare / load / ensure: text -> tokenizer -> token cache -> `PreparedData`.

Two cache formats. Aliases and `text:PATH` are read whole into memory and
written as one `train.bin` / `val.bin` pair (format 1, below). Document sources
(`hf:`, `json:`, `parquet:`) are streamed into shards by `pipeline.py`
(format 2). Both load into the same `PreparedData`.

Cache keys. A token cache is keyed by what changes its tokens: the dataset
(an alias, `text:` + absolute path, or the document source with its text
field, splits and `max_train_tokens`), vocab size, lowercasing, the tokenizer
pipeline version (or the sha256 of a reused `data.tokenizer`) and, for
held-out validation, `val_fraction`. Block size, `train_fraction` and, for
format 1, `max_train_tokens` are applied when loading, so changing them never
rebuilds. A format-1 tokenizer is keyed by (sha256 of the text it was trained
on, vocab size, lowercasing, pipeline version) and shared by caches that agree
on those; a format-2 cache keeps its tokenizer inside its folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ..fsutil import atomic_write_text
from ..profiles import jepa_home
from .cache import CACHE_FORMAT, CacheMiss, cache_manifest, install, open_split, read_manifest, staging_dir, token_dtype, write_split
from .registry import DatasetSpec, RecordSpec, TextSpec, resolve_dataset
from .shards import ShardCorrupt, ShardedTokens, count_bytes
from .sources import ProgressFn, WarnFn, default_warn, fetch_alias, fetch_text
from .textfiles import sha256_text
from .tokenizer import TOKENIZER_KIND, BPETokenizer, check_vocab_size, split_for_encoding
from .valtext import split_texts, text_fingerprints, val_spec

Spec = DatasetSpec | TextSpec | RecordSpec
_DEFAULT_SAMPLE_BYTES = DataConfig.model_fields["tokenizer_sample_bytes"].default
_RECORD_ONLY = ("text_field", "train_split", "val_split")


@dataclass
class PreparedData:
    dir: Path  # the cache directory
    dataset: str  # alias (or text:PATH as given)
    tokenizer_path: Path  # tokenizer.json (the trainer copies it into the run dir)
    tokenizer_sha256: str
    vocab_size: int  # the tokenizer's actual vocab size (the model is built with this)
    # memmap views (train_fraction / max_train_tokens prefix applied); a split stored in several
    # shards is a `ShardedTokens`: len(), [i], [a:b], np.asarray() and read_windows() work on it
    train_tokens: np.ndarray | ShardedTokens
    val_tokens: np.ndarray | ShardedTokens
    train_bytes: int  # UTF-8 bytes of the normalised text per split (of the prefix for train)
    val_bytes: int
    manifest: dict
    reused: bool = False  # True when an existing cache was loaded rather than built
    seconds: float = 0.0  # wall time of the prepare_dataset / load call
    _tokenizer: BPETokenizer | None = field(default=None, repr=False, compare=False)

    def tokenizer(self) -> BPETokenizer:
        if self._tokenizer is None:
            self._tokenizer = BPETokenizer.from_file(self.tokenizer_path)
        return self._tokenizer

    @property
    def dtype(self) -> np.dtype:
        return self.train_tokens.dtype

    @property
    def format(self) -> str:
        return str(self.manifest.get("format", CACHE_FORMAT))

    def shards(self, split: str) -> list[dict]:
        """The token files of a split as the manifest lists them (one entry for format 1)."""
        entry = self.manifest["splits"][split]
        return entry.get("shards") or [{"file": entry["file"], "tokens": entry["tokens"], "bytes": entry.get("bytes")}]


# --------------------------------------------------------------------------- keys and places


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def external_tokenizer(data_cfg: DataConfig) -> tuple[Path, str] | None:
    """(path, sha256 of the file) of `data.tokenizer`, after checking it is a usable tokenizer."""
    if not data_cfg.tokenizer:
        return None
    path = Path(data_cfg.tokenizer).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise DataError(
            f"data.tokenizer {data_cfg.tokenizer} is not a tokenizer.json file (or a run directory holding one).",
            hint="Give the path of a tokenizer.json, e.g. runs/NAME/tokenizer.json, or leave data.tokenizer empty to train one.",
        )
    path = path.resolve()
    data = path.read_bytes()
    tok = BPETokenizer.from_file(path)
    try:
        decoder = (json.loads(data).get("decoder") or {}).get("type")
    except (ValueError, AttributeError):
        decoder = None
    if decoder != "ByteLevel":
        raise DataError(
            f"data.tokenizer {path} is not a byte-level tokenizer (its decoder is {decoder or 'missing'}).",
            hint="jepa counts bytes per token for bits per byte, which needs a byte-level BPE tokenizer "
            "(jepa's own, GPT-2's, Llama 3's); leave data.tokenizer empty to train one.",
        )
    if tok.vocab_size > 1 << 32:
        raise DataError(f"data.tokenizer {path} has {tok.vocab_size} tokens, more than uint32 ids hold.")
    return path, hashlib.sha256(data).hexdigest()


def _check_keys_apply(data_cfg: DataConfig, spec: Spec) -> None:
    if data_cfg.val_text and not isinstance(spec, TextSpec):
        raise DataError(
            f"data.val_text applies to text: datasets only; `{data_cfg.dataset}` has a validation split of its own.",
            hint="Remove data.val_text, or train on a local file: --set 'data.dataset=\"text:PATH\"'.",
        )
    if isinstance(spec, RecordSpec):
        return
    defaults = DataConfig()
    wrong = [k for k in _RECORD_ONLY if getattr(data_cfg, k) != getattr(defaults, k)]
    if wrong:
        raise DataError(
            f"{', '.join('data.' + k for k in wrong)} only apply to hf:/json:/parquet: datasets; `{data_cfg.dataset}` is a text stream "
            "whose validation split is its own or its tail data.val_fraction.",
            hint=f"Remove {', '.join('data.' + k for k in wrong)}, or use a document dataset.",
        )


def cache_settings(data_cfg: DataConfig, spec: Spec | None = None, ext: tuple[Path, str] | None | bool = False) -> dict:
    spec = spec or resolve_dataset(data_cfg.dataset)
    if ext is False:
        ext = external_tokenizer(data_cfg)
    if isinstance(spec, RecordSpec):
        from .pipeline import CACHE_FORMAT_V2, SHARD_TOKENS

        key = {
            "format": CACHE_FORMAT_V2,
            "dataset": spec.canonical,
            "text_field": data_cfg.text_field,
            "train_split": data_cfg.train_split,
            "val_split": data_cfg.val_split,
            "val_fraction": data_cfg.val_fraction,
            "max_train_tokens": data_cfg.max_train_tokens,
            "shard_tokens": SHARD_TOKENS,
        }
        if ext is None:
            key |= {"tokenizer": TOKENIZER_KIND, "vocab_size": data_cfg.vocab_size, "lowercase": data_cfg.lowercase, "tokenizer_sample_bytes": data_cfg.tokenizer_sample_bytes}
        else:
            key["tokenizer_sha256"] = ext[1]
        return key
    key = {
        "format": CACHE_FORMAT,
        "tokenizer": TOKENIZER_KIND,
        "dataset": f"text:{spec.path}" if isinstance(spec, TextSpec) else spec.name,
        "vocab_size": data_cfg.vocab_size,
        "lowercase": data_cfg.lowercase,
    }
    val = val_spec(data_cfg) if isinstance(spec, TextSpec) else None
    if val is not None:  # the whole of another text is the validation split: no tail is held out
        key["val_text"] = str(val.path)
    elif spec.stream:
        key["val_fraction"] = data_cfg.val_fraction
    # only non-default new settings enter the key, so caches made before they existed stay valid
    if ext is not None:
        key = {k: v for k, v in key.items() if k not in ("tokenizer", "vocab_size", "lowercase")} | {"tokenizer_sha256": ext[1]}
    elif data_cfg.tokenizer_sample_bytes != _DEFAULT_SAMPLE_BYTES:
        key["tokenizer_sample_bytes"] = data_cfg.tokenizer_sample_bytes
    return key


def _slug(spec: Spec) -> str:
    if isinstance(spec, TextSpec):
        return "text-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.path.name)[:40]
    if isinstance(spec, RecordSpec):
        if spec.kind == "hf":
            tail = spec.location + (f"-{spec.config}" if spec.config else "")
        else:
            parts = [p for p in Path(spec.location).parts if not any(c in p for c in "*?[")]
            tail = parts[-1] if parts else "files"
        return f"{spec.kind}-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", tail)[:48]
    return spec.name


def cache_dir_for(data_cfg: DataConfig) -> Path:
    """Where the token cache of this data config lives (whether or not it exists)."""
    spec = resolve_dataset(data_cfg.dataset)
    ext = external_tokenizer(data_cfg)
    key = cache_settings(data_cfg, spec, ext)
    if ext is not None:
        tok = f"tok{ext[1][:8]}"
    else:
        tok = f"bpe{data_cfg.vocab_size}" + ("-lc" if data_cfg.lowercase else "")
    return jepa_home() / "data" / f"{_slug(spec)}-{tok}-{_hash(key)[:10]}"


def _tokenizer_path(train_sha: str, vocab_size: int, lowercase: bool, sample_bytes: int | None = None) -> Path:
    key = {"kind": TOKENIZER_KIND, "train_sha256": train_sha, "vocab_size": vocab_size, "lowercase": lowercase}
    if sample_bytes is not None:
        key["sample_bytes"] = sample_bytes
    lc = "-lc" if lowercase else ""
    return jepa_home() / "tokenizers" / f"bpe{vocab_size}{lc}-{_hash(key)[:16]}.json"


def _prepare_hint(data_cfg: DataConfig) -> str:
    if isinstance(resolve_dataset(data_cfg.dataset), RecordSpec):
        return f"Run `jepa data prepare {data_cfg.dataset}` with the same data settings (e.g. --profile), or let `jepa train` prepare it."
    return f"Run `jepa data prepare {data_cfg.dataset} --vocab-size {data_cfg.vocab_size}` (`jepa train` prepares it when missing)."


# --------------------------------------------------------------------------- loading


def _train_prefix(count: int, train_fraction: float, max_tokens: int = 0) -> int:
    n = count if train_fraction >= 1.0 else int(count * train_fraction)
    return min(n, max_tokens) if max_tokens else n


def _check_block(dataset: str, n_train: int, n_val: int, block_size: int, train_fraction: float, documents: bool = False) -> None:
    need = block_size + 1  # one window: block_size inputs and their shifted targets
    if n_train >= need and n_val >= need:
        return
    prefix = f" (train_fraction {train_fraction:g})" if train_fraction < 1 else ""
    if documents:
        hint = (
            "Use a smaller data.block_size, more documents, a larger data.val_fraction (held-out validation), "
            "a data.val_split with more text, or a larger data.max_train_tokens."
        )
    else:
        hint = (
            "Use a longer text, a smaller block size (a profile with a smaller data.block_size, via --profile), "
            "or a larger val_fraction / train_fraction."
        )
    raise DataError(
        f"`{dataset}` is too short for one block: it has {n_train} train tokens{prefix} and {n_val} validation tokens, "
        f"and a block of block_size {block_size} needs {need} tokens in each.",
        hint=hint,
    )


def _check_tokenizer(path: Path, sha256: str | None) -> str:
    """The cache's tokenizer file exists and is the one the cache was built with; returns its sha256."""
    try:
        got = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        raise CacheMiss(f"The tokenizer {path} is missing.") from None
    if got != sha256:
        raise CacheMiss(f"The tokenizer {path} does not match the one the cache was built with.")
    return got


def _load_sharded(data_cfg: DataConfig, spec: RecordSpec, folder: Path, manifest: dict, t0: float) -> PreparedData:
    from .records import files_fingerprint, list_local_files

    if spec.kind != "hf":
        if manifest.get("source", {}).get("fingerprint") != files_fingerprint(list_local_files(spec)):
            raise CacheMiss(f"The files of `{spec.name}` changed since they were prepared.")
    tok = manifest.get("tokenizer", {})
    tok_path = folder / tok.get("file", "?")
    tok_sha = _check_tokenizer(tok_path, tok.get("sha256"))
    try:
        dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
        train = ShardedTokens.from_files(folder, manifest["splits"]["train"]["shards"], dtype)
        val = ShardedTokens.from_files(folder, manifest["splits"]["val"]["shards"], dtype)
    except ShardCorrupt as e:
        raise CacheMiss(f"{e.message} The cache is incomplete.") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CacheMiss(f"The manifest in {folder} is incomplete ({e!r}).") from None
    n_train = _train_prefix(len(train), data_cfg.train_fraction)  # max_train_tokens was applied when encoding
    _check_block(data_cfg.dataset, n_train, len(val), data_cfg.block_size, data_cfg.train_fraction, documents=True)
    train_view = train.prefix(n_train)
    prepared = PreparedData(
        dir=folder,
        dataset=data_cfg.dataset,
        tokenizer_path=tok_path,
        tokenizer_sha256=tok_sha,
        vocab_size=int(manifest["vocab_size"]),
        train_tokens=train_view.parts[0] if train_view.n_shards == 1 else train_view,
        val_tokens=val.parts[0] if val.n_shards == 1 else val,
        train_bytes=int(manifest["splits"]["train"]["bytes"]),
        val_bytes=int(manifest["splits"]["val"]["bytes"]),
        manifest=manifest,
        reused=True,
    )
    if n_train < len(train):
        # whole shards from the manifest, only the cut one counted
        lengths = prepared.tokenizer().token_byte_lengths()
        total, seen = 0, 0
        for entry, part in zip(manifest["splits"]["train"]["shards"], train_view.parts):
            if len(part) == int(entry["tokens"]):
                total += int(entry["bytes"])
            else:
                total += count_bytes(part, lengths)
            seen += len(part)
        prepared.train_bytes = total
    prepared.seconds = time.perf_counter() - t0
    return prepared


def _load(data_cfg: DataConfig, spec: Spec) -> PreparedData:
    t0 = time.perf_counter()
    _check_keys_apply(data_cfg, spec)
    folder = cache_dir_for(data_cfg)
    manifest = read_manifest(folder)
    if manifest.get("settings") != cache_settings(data_cfg, spec):
        raise CacheMiss(f"{folder} was prepared with other settings.")
    if isinstance(spec, RecordSpec):
        return _load_sharded(data_cfg, spec, folder, manifest, t0)
    if isinstance(spec, TextSpec) and manifest.get("source", {}).get("fingerprint") != text_fingerprints(spec, val_spec(data_cfg)):
        raise CacheMiss(f"{spec.path} (or data.val_text) changed since it was prepared.")
    tok = manifest.get("tokenizer", {})
    tok_path = jepa_home() / tok.get("file", "?")
    tok_sha = _check_tokenizer(tok_path, tok.get("sha256"))
    train = open_split(folder, manifest, "train")
    val = open_split(folder, manifest, "val")
    n_train = _train_prefix(len(train), data_cfg.train_fraction, data_cfg.max_train_tokens)
    _check_block(data_cfg.dataset, n_train, len(val), data_cfg.block_size, data_cfg.train_fraction)
    prepared = PreparedData(
        dir=folder,
        dataset=data_cfg.dataset,
        tokenizer_path=tok_path,
        tokenizer_sha256=tok_sha,
        vocab_size=int(manifest["vocab_size"]),
        train_tokens=train[:n_train],
        val_tokens=val,
        train_bytes=int(manifest["splits"]["train"]["bytes"]),
        val_bytes=int(manifest["splits"]["val"]["bytes"]),
        manifest=manifest,
        reused=True,
    )
    if n_train < len(train):
        prepared.train_bytes = count_bytes(prepared.train_tokens, prepared.tokenizer().token_byte_lengths())
    prepared.seconds = time.perf_counter() - t0
    return prepared


def load_prepared(data_cfg: DataConfig) -> PreparedData:
    """The prepared data of this config; a DataError that says how to prepare it when missing."""
    spec = resolve_dataset(data_cfg.dataset)
    try:
        return _load(data_cfg, spec)
    except CacheMiss as e:
        raise CacheMiss(e.message, hint=_prepare_hint(data_cfg)) from None


def ensure_prepared(data_cfg: DataConfig, progress: ProgressFn | None = None, *, warn: WarnFn | None = None) -> PreparedData:
    """Load the prepared data, or prepare it first when missing (what `jepa train` uses)."""
    try:
        return load_prepared(data_cfg)
    except CacheMiss:
        return prepare_dataset(data_cfg, progress=progress, warn=warn)


# --------------------------------------------------------------------------- preparing


def prepare_dataset(
    data_cfg: DataConfig,
    *,
    from_path: Path | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> PreparedData:
    """Tokenizer + token cache for `data_cfg`; reuses a valid cache unless `force`.

    progress(stage, done, total) is called with the stages "read", "download",
    "sample" (bytes of the tokenizer sample), "tokenizer", "encode" (for
    document datasets: bytes of text, the total an estimate), "tokens" (ids
    written, the total an estimate), "resume" (shards kept from an interrupted
    run, tokens in them) and "write" (total 0: unknown).
    """
    t0 = time.perf_counter()
    spec = resolve_dataset(data_cfg.dataset)
    _check_keys_apply(data_cfg, spec)
    ext = external_tokenizer(data_cfg)
    if ext is None:
        check_vocab_size(data_cfg.vocab_size)
    if not force:
        try:
            return _load(data_cfg, spec)
        except CacheMiss:
            pass
    if isinstance(spec, RecordSpec):
        from .pipeline import build_sharded

        def reuse():
            try:
                return _load(data_cfg, spec)
            except CacheMiss:
                return None

        got = build_sharded(
            data_cfg,
            spec,
            cache_dir_for(data_cfg),
            cache_settings(data_cfg, spec, ext),
            from_path=from_path,
            force=force,
            progress=progress,
            warn=warn or default_warn,
            external_tokenizer=ext,
            reuse=reuse,
        )
        if isinstance(got, PreparedData):  # another process finished it while we waited for the lock
            got.seconds = time.perf_counter() - t0
            return got
        prepared = _load(data_cfg, spec)
        prepared.reused = False
        prepared.seconds = time.perf_counter() - t0
        return prepared
    prepared = _build(data_cfg, spec, from_path=from_path, force=force, progress=progress, warn=warn, ext=ext)
    prepared.reused = False
    prepared.seconds = time.perf_counter() - t0
    return prepared


def kept_when_interrupted(data_cfg: DataConfig) -> tuple[bool, str]:
    """(whether a run of the same command continues, what is kept) for a preparation of `data_cfg`
    interrupted once encoding began: the message after Ctrl-C must not promise work that is gone.

    Document datasets go through the sharded pipeline, which commits whole chunks as it goes; a
    text file or a text alias is encoded whole, in memory, and written at the end, so nothing of
    its encoding survives (an alias's downloaded files do: they are written as they arrive).
    """
    try:
        spec = resolve_dataset(data_cfg.dataset)
    except DataError:
        return False, "nothing of the encoding is kept"
    if isinstance(spec, RecordSpec):
        return True, "the work up to the last whole chunk is kept"
    if isinstance(spec, TextSpec):
        return False, "nothing of the encoding is kept (a text file is encoded whole, in one pass)"
    return False, "nothing of the encoding is kept (a text is encoded whole, in one pass; its downloaded files are kept)"


def _build(
    data_cfg: DataConfig,
    spec: DatasetSpec | TextSpec,
    *,
    from_path: Path | None,
    force: bool,
    progress: ProgressFn | None,
    warn: WarnFn | None,
    ext: tuple[Path, str] | None = None,
) -> PreparedData:
    t0 = time.perf_counter()
    say = progress or (lambda stage, done, total: None)
    val_src = val_spec(data_cfg) if isinstance(spec, TextSpec) else None
    if isinstance(spec, TextSpec):
        if from_path is not None:
            raise DataError("`text:PATH` already names its file; --from is for dataset aliases.", hint="Drop --from.")
        fingerprint = text_fingerprints(spec, val_src)
        raw = fetch_text(spec, progress=progress)
    else:
        fingerprint = None
        raw = fetch_alias(spec, from_path=from_path, force=force, progress=progress, warn=warn)
    train_text, val_text = split_texts(raw, spec, val_src, data_cfg.val_fraction, progress)

    train_pieces = split_for_encoding(train_text)
    val_pieces = split_for_encoding(val_text)
    sample_pieces, sample_bytes = _sample(train_pieces, data_cfg.tokenizer_sample_bytes)
    tokenizer = None
    if ext is not None:
        # a reused tokenizer is copied under its hash, so the cache never depends on the user's file staying put
        tok_path = jepa_home() / "tokenizers" / f"external-{ext[1][:16]}.json"
        if not tok_path.is_file():
            atomic_write_text(tok_path, ext[0].read_text(encoding="utf-8"))
        tokenizer = BPETokenizer.from_file(tok_path)
    else:
        truncated = sample_bytes is not None
        sample_sha = sha256_text("".join(sample_pieces)) if truncated else sha256_text(train_text)
        tok_path = _tokenizer_path(sample_sha, data_cfg.vocab_size, data_cfg.lowercase, sample_bytes)
        if tok_path.is_file() and not force:
            try:
                tokenizer = BPETokenizer.from_file(tok_path)
            except DataError:
                tokenizer = None  # unreadable: train it again
    new_tokenizer = tokenizer is None
    say("tokenizer", 0, 1)
    if tokenizer is None:
        tokenizer = BPETokenizer.train(sample_pieces, data_cfg.vocab_size, lowercase=data_cfg.lowercase)
    say("tokenizer", 1, 1)

    total = len(train_pieces) + len(val_pieces)
    train_ids = tokenizer.encode_stream(train_pieces, progress=lambda d, _t: say("encode", d, total))
    val_ids = tokenizer.encode_stream(val_pieces, progress=lambda d, _t: say("encode", len(train_pieces) + d, total))
    n_train = _train_prefix(len(train_ids), data_cfg.train_fraction, data_cfg.max_train_tokens)
    _check_block(data_cfg.dataset, n_train, len(val_ids), data_cfg.block_size, data_cfg.train_fraction)

    lengths = tokenizer.token_byte_lengths()
    vocab = tokenizer.vocab_size
    tok_text = tokenizer.to_str()
    dest = cache_dir_for(data_cfg)
    say("write", 0, 1)
    with staging_dir(dest) as tmp:
        splits = {}
        for split, ids, text in (("train", train_ids, train_text), ("val", val_ids, val_text)):
            entry = write_split(tmp, split, ids, vocab)
            entry["bytes"] = int(lengths[ids].sum())
            entry["chars"] = len(text)
            entry["text_sha256"] = sha256_text(text)
            splits[split] = entry
        if new_tokenizer or not tok_path.is_file():
            atomic_write_text(tok_path, tok_text)
        manifest = cache_manifest(
            format=CACHE_FORMAT,
            dataset=spec.name,
            settings=cache_settings(data_cfg, spec),
            source={"origin": raw.origin, "files": raw.files, "verified_sha256": raw.verified, "fingerprint": fingerprint},
            splits=splits,
            vocab_size=vocab,
            requested_vocab_size=data_cfg.vocab_size,
            dtype=token_dtype(vocab).name,
            tokenizer={
                "file": tok_path.relative_to(jepa_home()).as_posix(),
                "sha256": hashlib.sha256(tok_path.read_bytes()).hexdigest(),
                "reused": not new_tokenizer,
                "source": "trained" if ext is None else str(ext[0]),
                "sample_bytes": (sample_bytes if sample_bytes is not None else splits["train"]["bytes"]) if ext is None else 0,
            },
            external=ext is not None,
            lowercase=data_cfg.lowercase,
            t0=t0,
            val_fraction=data_cfg.val_fraction if spec.stream and val_src is None else None,
        )
        install(tmp, dest, manifest)
    say("write", 1, 1)
    prepared = _load(data_cfg, spec)
    prepared._tokenizer = tokenizer
    return prepared


def _sample(pieces: list[str], limit: int) -> tuple[list[str], int | None]:
    """The leading pieces holding at most `limit` UTF-8 bytes (the last one cut), and that byte
    count; (pieces, None) when everything fits."""
    out: list[str] = []
    got = 0
    for p in pieces:
        b = len(p.encode("utf-8"))
        if got + b > limit:
            cut = p.encode("utf-8")[: limit - got].decode("utf-8", errors="ignore")
            if cut:
                out.append(cut)
                got += len(cut.encode("utf-8"))
            return out, got
        out.append(p)
        got += b
    return out, None


# --------------------------------------------------------------------------- listing


def list_prepared() -> list[dict]:
    """Every complete token cache under $JEPA_HOME/data: its manifest plus `dir`."""
    root = jepa_home() / "data"
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            manifest = read_manifest(folder)
        except CacheMiss:
            continue
        out.append({**manifest, "dir": str(folder)})
    return out
