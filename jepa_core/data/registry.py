"""Dataset aliases: what a name like `tiny_shakespeare` means and where its text lives.

A `DatasetSpec` names one file per split, each with the path it has inside a
mirror directory (`$JEPA_DATA_MIRROR`, laid out like `../shared/data`) and,
optionally, a URL and sha256 for downloading it. A dataset without a `val`
file is one stream whose tail `data.val_fraction` becomes the validation split.
`hf` names a Hugging Face dataset (`datasets.load_dataset(path, name)`) used
when a split is found nowhere else. `text:PATH` is not registered: it is
resolved on the fly by `resolve_dataset`, and so are the document sources
`hf:OWNER/NAME[:CONFIG]`, `json:PATH` and `parquet:PATH` (`RecordSpec`), which
are read row by row through `datasets` and tokenized into sharded caches.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

TEXT_PREFIX = "text:"
RECORD_KINDS = ("hf", "json", "parquet")
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SourceFile:
    """One split's text file, as found in a mirror or downloaded."""

    mirror_path: str  # relative path inside a mirror directory (and inside $JEPA_HOME/raw)
    url: str | None = None
    sha256: str | None = None
    size: int | None = None  # bytes, for `jepa data list` and download progress


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face dataset whose rows (`column`) joined give each split's text."""

    path: str
    name: str | None = None
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "validation"})
    column: str = "text"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    train: SourceFile
    val: SourceFile | None = None  # None: the tail val_fraction of the train stream
    hf: HFSource | None = None
    size_hint: str = ""  # shown by `jepa data list` when the size is not a single file's

    @property
    def stream(self) -> bool:
        return self.val is None

    def files(self) -> dict[str, SourceFile]:
        out = {"train": self.train}
        if self.val is not None:
            out["val"] = self.val
        return out

    def source_label(self) -> str:
        if self.train.url:
            return self.train.url
        if self.hf is not None:
            return f"HF hub {self.hf.path}" + (f" ({self.hf.name})" if self.hf.name else "")
        return "mirror only"


@dataclass(frozen=True)
class TextSpec:
    """`text:PATH`: a local file or a folder of .txt files (val = tail val_fraction)."""

    name: str  # as given, e.g. "text:../shared/data/wikitext-2/valid.txt"
    path: Path  # resolved absolute path

    stream = True


@dataclass(frozen=True)
class RecordSpec:
    """A dataset of documents (rows with a text column) read through `datasets`.

    kind "hf": `location` is the hub id OWNER/NAME and `config` its optional
    configuration. kind "json"/"parquet": `location` is a file, a folder or a
    glob, made absolute against the cwd (a glob keeps its pattern).
    """

    name: str  # as given
    kind: str  # "hf", "json" or "parquet"
    location: str
    config: str | None = None

    stream = False  # its val split is a split or held-out documents, never a text tail

    @property
    def canonical(self) -> str:
        """The name with an absolute path: what cache keys use."""
        tail = f":{self.config}" if self.config else ""
        return f"{self.kind}:{self.location}{tail}"

    @property
    def is_glob(self) -> bool:
        return any(c in self.location for c in "*?[")

    def files(self) -> dict[str, SourceFile]:
        """Where its data is looked for, in the shape aliases have (for `locate` and messages):
        a hub dataset's local copy in the mirror, or the local location."""
        where = f"hf/{self.location}" if self.kind == "hf" else self.location
        return {"train": SourceFile(mirror_path=where)}


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    if spec.name.startswith(TEXT_PREFIX) or not spec.name or any(c in spec.name for c in "/\\ "):
        raise ValueError(f"invalid dataset alias {spec.name!r}: no spaces, slashes or `text:` prefix")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"dataset alias {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    _REGISTRY.pop(name, None)


def list_datasets() -> list[DatasetSpec]:
    return list(_REGISTRY.values())


def get_dataset(name: str) -> DatasetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        near = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.5)
        guess = f" Did you mean `{near[0]}`?" if near else ""
        raise DataError(
            f"Unknown dataset `{name}`.{guess}",
            hint=f"Known aliases: {', '.join(_REGISTRY)}; or `text:PATH` for a local .txt file or folder, "
            "`json:PATH` / `parquet:PATH` for local documents, `hf:OWNER/NAME[:CONFIG]` for a Hugging Face dataset. "
            "`jepa data list` shows them.",
        ) from None


def _record_spec(name: str, kind: str, raw: str) -> RecordSpec:
    if kind == "hf":
        repo, _, config = raw.partition(":")
        if not _HUB_ID.match(repo) or ":" in config:
            raise DataError(
                f"`{name}` is not a Hugging Face dataset id.",
                hint="Write hf:OWNER/NAME or hf:OWNER/NAME:CONFIG, e.g. hf:HuggingFaceFW/fineweb-edu:sample-10BT.",
            )
        return RecordSpec(name=name, kind="hf", location=repo, config=config or None)
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    # resolve() would drop a trailing glob part that does not exist yet; normalise only the plain parts
    location = str(path.resolve()) if not any(c in raw for c in "*?[") else str(path)
    return RecordSpec(name=name, kind=kind, location=location)


def resolve_dataset(name: str) -> DatasetSpec | TextSpec | RecordSpec:
    """An alias's spec, a `TextSpec` for `text:PATH`, or a `RecordSpec` for hf:/json:/parquet:
    (paths resolved against the cwd)."""
    if name.startswith(TEXT_PREFIX):
        raw = name[len(TEXT_PREFIX) :].strip()
        if not raw:
            raise DataError("`text:` needs a path, e.g. `text:notes.txt` or `text:corpus/`.")
        return TextSpec(name=name, path=Path(raw).expanduser().resolve())
    kind, sep, raw = name.partition(":")
    if sep and kind in RECORD_KINDS:
        raw = raw.strip()
        if not raw:
            example = "hf:OWNER/NAME[:CONFIG]" if kind == "hf" else f"{kind}:PATH (a file, a folder or a glob)"
            raise DataError(f"`{kind}:` needs a location: {example}.")
        return _record_spec(name, kind, raw)
    return get_dataset(name)


register_dataset(
    DatasetSpec(
        name="tiny_shakespeare",
        description="Tiny Shakespeare (char-rnn), one stream, 90/10 train/val by default",
        train=SourceFile(
            mirror_path="tiny_shakespeare/input.txt",
            url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            size=1_115_394,
        ),
    )
)

register_dataset(
    DatasetSpec(
        name="wikitext2",
        description="WikiText-2 raw (wikitext-2-raw-v1), its own train/validation splits",
        train=SourceFile(mirror_path="wikitext-2/train.txt"),
        # No sha256 here: the hub's rows joined are not byte-identical to wiki.*.raw,
        # and both are legitimate sources of the same split.
        val=SourceFile(mirror_path="wikitext-2/valid.txt", size=1_146_846),
        hf=HFSource(path="wikitext", name="wikitext-2-raw-v1"),
        size_hint="~12 MB",
    )
)
