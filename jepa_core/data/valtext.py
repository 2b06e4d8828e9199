"""`data.val_text`: a text: dataset evaluated on the whole of another text.

The train split is then all of `data.dataset`'s text (no tail is held out), the validation split
all of the other's; both files' fingerprints are what a cache built from them is checked against.
"""

from __future__ import annotations

from jepa_core.config.schema import DataConfig

from .registry import TEXT_PREFIX, TextSpec, resolve_dataset
from .sources import ProgressFn, RawSplits, fetch_text
from .textfiles import split_stream, text_fingerprint


def val_spec(data_cfg: DataConfig) -> TextSpec | None:
    """data.val_text as a TextSpec (resolved against the working directory), or None."""
    if not data_cfg.val_text:
        return None
    spec = resolve_dataset(TEXT_PREFIX + data_cfg.val_text)
    assert isinstance(spec, TextSpec)
    return spec


def split_texts(raw: RawSplits, spec, val: TextSpec | None, val_fraction: float, progress: ProgressFn | None) -> tuple[str, str]:
    """The train and val text: data.val_text's whole text as val, else the stream's tail, else the alias's split."""
    if val is not None:
        val_raw = fetch_text(val, progress=progress)
        raw.files = raw.files + [dict(f, split="val") for f in val_raw.files]
        return raw.splits["train"], val_raw.splits["train"]
    if spec.stream:
        return split_stream(raw.splits["train"], val_fraction)
    return raw.splits["train"], raw.splits["val"]


def text_fingerprints(spec: TextSpec, val: TextSpec | None) -> list:
    """What a text cache is checked against on load: the train text's files, and the val text's
    when data.val_text names one (the same shape as before val_text existed, when it does not)."""
    if val is None:
        return text_fingerprint(spec.path)
    return [text_fingerprint(spec.path), text_fingerprint(val.path)]
