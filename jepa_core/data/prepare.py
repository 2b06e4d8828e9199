"""prepare / load / ensure: text -> tokenizer -> token cache -> `PreparedData`.

Cache keys. A token cache is keyed by what changes its tokens: the dataset
(an alias, or `text:` + absolute path), vocab size, lowercasing, the tokenizer
pipeline version and, for single-stream datasets, `val_fraction`. Block size
and `train_fraction` are applied when loading, so changing them never rebuilds.
A tokenizer is keyed by (sha256 of the train text, vocab size, lowercasing,
pipeline version) and shared by caches that agree on those.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import DataConfig
from ..errors import DataError
from ..fsutil import atomic_write_text
from ..profiles import jepa_home
from .cache import CACHE_FORMAT, CacheMiss, install, open_split, read_manifest, staging_dir, token_dtype, write_split
from .registry import DatasetSpec, TextSpec, resolve_dataset
from .sources import ProgressFn, WarnFn, fetch_alias, fetch_text
from .textfiles import sha256_text, split_stream, text_fingerprint
from .tokenizer import SPECIAL_TOKENS, TOKENIZER_KIND, BPETokenizer, check_vocab_size, split_for_encoding


@dataclass
class PreparedData:
    dir: Path  # the cache directory
    dataset: str  # alias (or text:PATH as given)
    tokenizer_path: Path  # tokenizer.json (the trainer copies it into the run dir)
    tokenizer_sha256: str
    vocab_size: int  # the tokenizer's actual vocab size (the model is built with this)
    train_tokens: np.ndarray  # memmap view, train_fraction prefix applied
    val_tokens: np.ndarray
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


# --------------------------------------------------------------------------- keys and places


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def cache_settings(data_cfg: DataConfig, spec: DatasetSpec | TextSpec | None = None) -> dict:
    spec = spec or resolve_dataset(data_cfg.dataset)
    key = {
        "format": CACHE_FORMAT,
        "tokenizer": TOKENIZER_KIND,
        "dataset": f"text:{spec.path}" if isinstance(spec, TextSpec) else spec.name,
        "vocab_size": data_cfg.vocab_size,
        "lowercase": data_cfg.lowercase,
    }
    if spec.stream:
        key["val_fraction"] = data_cfg.val_fraction
    return key


def _slug(spec: DatasetSpec | TextSpec) -> str:
    if isinstance(spec, TextSpec):
        return "text-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.path.name)[:40]
    return spec.name


def cache_dir_for(data_cfg: DataConfig) -> Path:
    """Where the token cache of this data config lives (whether or not it exists)."""
    spec = resolve_dataset(data_cfg.dataset)
    key = cache_settings(data_cfg, spec)
    lc = "-lc" if data_cfg.lowercase else ""
    return jepa_home() / "data" / f"{_slug(spec)}-bpe{data_cfg.vocab_size}{lc}-{_hash(key)[:10]}"


def _tokenizer_path(train_sha: str, vocab_size: int, lowercase: bool) -> Path:
    key = {"kind": TOKENIZER_KIND, "train_sha256": train_sha, "vocab_size": vocab_size, "lowercase": lowercase}
    lc = "-lc" if lowercase else ""
    return jepa_home() / "tokenizers" / f"bpe{vocab_size}{lc}-{_hash(key)[:16]}.json"


def _prepare_hint(data_cfg: DataConfig) -> str:
    return f"Run `jepa data prepare {data_cfg.dataset} --vocab-size {data_cfg.vocab_size}` (`jepa train` prepares it when missing)."


# --------------------------------------------------------------------------- loading


def _train_prefix(count: int, train_fraction: float) -> int:
    return count if train_fraction >= 1.0 else int(count * train_fraction)


def _check_block(dataset: str, n_train: int, n_val: int, block_size: int, train_fraction: float) -> None:
    need = block_size + 1  # one window: block_size inputs and their shifted targets
    if n_train >= need and n_val >= need:
        return
    prefix = f" (train_fraction {train_fraction:g})" if train_fraction < 1 else ""
    raise DataError(
        f"`{dataset}` is too short for one block: it has {n_train} train tokens{prefix} and {n_val} validation tokens, "
        f"and a block of block_size {block_size} needs {need} tokens in each.",
        hint="Use a longer text, a smaller block size (a profile with a smaller data.block_size, via --profile), "
        "or a larger val_fraction / train_fraction.",
    )


def _load(data_cfg: DataConfig, spec: DatasetSpec | TextSpec) -> PreparedData:
    t0 = time.perf_counter()
    folder = cache_dir_for(data_cfg)
    manifest = read_manifest(folder)
    if manifest.get("settings") != cache_settings(data_cfg, spec):
        raise CacheMiss(f"{folder} was prepared with other settings.")
    if isinstance(spec, TextSpec) and manifest.get("source", {}).get("fingerprint") != text_fingerprint(spec.path):
        raise CacheMiss(f"{spec.path} changed since it was prepared.")
    tok = manifest.get("tokenizer", {})
    tok_path = jepa_home() / tok.get("file", "?")
    try:
        tok_sha = hashlib.sha256(tok_path.read_bytes()).hexdigest()
    except OSError:
        raise CacheMiss(f"The tokenizer {tok_path} is missing.") from None
    if tok_sha != tok.get("sha256"):
        raise CacheMiss(f"The tokenizer {tok_path} does not match the one the cache was built with.")
    train = open_split(folder, manifest, "train")
    val = open_split(folder, manifest, "val")
    n_train = _train_prefix(len(train), data_cfg.train_fraction)
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
        prepared.train_bytes = int(prepared.tokenizer().token_byte_lengths()[np.asarray(prepared.train_tokens)].sum())
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
    "tokenizer", "encode" and "write" (total 0: unknown).
    """
    t0 = time.perf_counter()
    check_vocab_size(data_cfg.vocab_size)
    spec = resolve_dataset(data_cfg.dataset)
    if not force:
        try:
            return _load(data_cfg, spec)
        except CacheMiss:
            pass
    prepared = _build(data_cfg, spec, from_path=from_path, force=force, progress=progress, warn=warn)
    prepared.reused = False
    prepared.seconds = time.perf_counter() - t0
    return prepared


def _build(
    data_cfg: DataConfig,
    spec: DatasetSpec | TextSpec,
    *,
    from_path: Path | None,
    force: bool,
    progress: ProgressFn | None,
    warn: WarnFn | None,
) -> PreparedData:
    t0 = time.perf_counter()
    say = progress or (lambda stage, done, total: None)
    if isinstance(spec, TextSpec):
        if from_path is not None:
            raise DataError("`text:PATH` already names its file; --from is for dataset aliases.", hint="Drop --from.")
        fingerprint = text_fingerprint(spec.path)
        raw = fetch_text(spec, progress=progress)
    else:
        fingerprint = None
        raw = fetch_alias(spec, from_path=from_path, force=force, progress=progress, warn=warn)
    if spec.stream:
        train_text, val_text = split_stream(raw.splits["train"], data_cfg.val_fraction)
    else:
        train_text, val_text = raw.splits["train"], raw.splits["val"]

    train_pieces = split_for_encoding(train_text)
    val_pieces = split_for_encoding(val_text)
    train_sha = sha256_text(train_text)
    tok_path = _tokenizer_path(train_sha, data_cfg.vocab_size, data_cfg.lowercase)
    tokenizer = None
    if tok_path.is_file() and not force:
        try:
            tokenizer = BPETokenizer.from_file(tok_path)
        except DataError:
            tokenizer = None  # unreadable: train it again
    new_tokenizer = tokenizer is None
    say("tokenizer", 0, 1)
    if tokenizer is None:
        tokenizer = BPETokenizer.train(train_pieces, data_cfg.vocab_size, lowercase=data_cfg.lowercase)
    say("tokenizer", 1, 1)

    total = len(train_pieces) + len(val_pieces)
    train_ids = tokenizer.encode_stream(train_pieces, progress=lambda d, _t: say("encode", d, total))
    val_ids = tokenizer.encode_stream(val_pieces, progress=lambda d, _t: say("encode", len(train_pieces) + d, total))
    n_train = _train_prefix(len(train_ids), data_cfg.train_fraction)
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
        manifest = {
            "format": CACHE_FORMAT,
            "dataset": spec.name,
            "settings": cache_settings(data_cfg, spec),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "jepa_version": __version__,
            "source": {
                "origin": raw.origin,
                "files": raw.files,
                "verified_sha256": raw.verified,
                "fingerprint": fingerprint,
            },
            "splits": splits,
            "val_fraction": data_cfg.val_fraction if spec.stream else None,
            "vocab_size": vocab,
            "requested_vocab_size": data_cfg.vocab_size,
            "dtype": token_dtype(vocab).name,
            "tokenizer": {
                "file": tok_path.relative_to(jepa_home()).as_posix(),
                "sha256": hashlib.sha256(tok_text.encode("utf-8")).hexdigest(),
                "kind": TOKENIZER_KIND,
                "lowercase": data_cfg.lowercase,
                "special_tokens": list(SPECIAL_TOKENS),
                "reused": not new_tokenizer,
            },
            "prepare_seconds": round(time.perf_counter() - t0, 3),
        }
        install(tmp, dest, manifest)
    say("write", 1, 1)
    prepared = _load(data_cfg, spec)
    prepared._tokenizer = tokenizer
    return prepared


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
