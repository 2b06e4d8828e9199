"""Data: dataset registry, offline-safe sources, byte-level BPE, token cache, batching.

`ensure_prepared(cfg.data)` gives a `PreparedData` (memmapped train/val token
streams, the tokenizer, bytes per split for bits per byte); `TrainBatcher` cuts
it into random (x, y) training windows, `val_windows` / `iter_val_batches` the
validation split into windows that score every token once. Aliases and `text:PATH` are read
whole; `hf:`, `json:` and `parquet:` document datasets are streamed through
`datasets` into sharded caches (`pipeline.py`), read back as one
`ShardedTokens` stream. The batching names import torch, so they are loaded
on first use: `jepa data prepare` and `jepa data list` never pay for
importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cache import CacheMiss, token_dtype
from .prepare import PreparedData, cache_dir_for, ensure_prepared, list_prepared, load_prepared, prepare_dataset
from .registry import (
    DatasetSpec,
    HFSource,
    RecordSpec,
    SourceFile,
    TextSpec,
    get_dataset,
    list_datasets,
    register_dataset,
    resolve_dataset,
    unregister_dataset,
)
from .shards import ShardedTokens
from .sources import DataWarning, offline_reason
from .tokenizer import MIN_VOCAB, SPECIAL_TOKENS, BPETokenizer, check_vocab_size

if TYPE_CHECKING:
    from .batching import iter_val_batches, val_blocks, val_windows
    from .sampling import TrainBatcher

_LAZY = {"iter_val_batches", "val_blocks", "val_windows"}


def __getattr__(name: str):
    if name == "TrainBatcher":
        from .sampling import TrainBatcher

        return TrainBatcher
    if name in _LAZY:
        from . import batching

        return getattr(batching, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BPETokenizer",
    "CacheMiss",
    "DataWarning",
    "DatasetSpec",
    "HFSource",
    "MIN_VOCAB",
    "PreparedData",
    "RecordSpec",
    "SPECIAL_TOKENS",
    "ShardedTokens",
    "SourceFile",
    "TextSpec",
    "TrainBatcher",
    "cache_dir_for",
    "check_vocab_size",
    "ensure_prepared",
    "get_dataset",
    "list_datasets",
    "list_prepared",
    "load_prepared",
    "offline_reason",
    "prepare_dataset",
    "register_dataset",
    "resolve_dataset",
    "token_dtype",
    "unregister_dataset",
    "iter_val_batches",
    "val_blocks",
    "val_windows",
]
