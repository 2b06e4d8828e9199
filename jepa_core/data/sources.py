"""Finding a dataset's raw text: `--from`, the mirror, earlier downloads, the network.

The documented order is: the prepared cache (checked by the caller), `--from
PATH`, `$JEPA_DATA_MIRROR`, then the network. Downloads are kept under
`$JEPA_HOME/raw` with the mirror's layout, so a machine that downloaded once
works offline afterwards; that folder is consulted just before the network.

The network is never touched when `HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE` or
`JEPA_OFFLINE` is set: without this check `datasets` retries for ~25 s before
failing, and a machine with no route can hang on a URL for the full timeout.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import DataError
from ..fsutil import atomic_write_bytes
from ..profiles import jepa_home
from .registry import DatasetSpec, SourceFile, TextSpec
from .textfiles import decode_text, join_texts, read_text_file, read_text_tree, sha256_text

ProgressFn = Callable[[str, int, int], None]
WarnFn = Callable[[str], None]

OFFLINE_VARS = ("JEPA_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
DOWNLOAD_TIMEOUT_S = 30.0


class DataWarning(UserWarning):
    """A data problem worth telling the user about that does not stop the run by itself."""


def default_warn(message: str) -> None:
    warnings.warn(message, DataWarning, stacklevel=3)


@dataclass
class RawSplits:
    """The text of each split of a dataset (before the stream split, `val` may be absent)."""

    splits: dict[str, str]
    origin: str  # "mirror", "from", "raw-cache", "download", "hub", "text" or a mix, for the manifest
    files: list[dict] = field(default_factory=list)  # provenance of each file read
    verified: bool = True  # every file with a known sha256 matched it


def offline_reason() -> str | None:
    """Why the network is off (the variable that says so), or None when it may be used."""
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() not in ("", "0", "false", "no", "off"):
            return f"{var}={os.environ[var]}"
    return None


def mirror_dir() -> Path | None:
    env = os.environ.get("JEPA_DATA_MIRROR", "").strip()
    return Path(env).expanduser() if env else None


def raw_dir() -> Path:
    return jepa_home() / "raw"


# --------------------------------------------------------------------------- text:PATH


def fetch_text(spec: TextSpec, progress: ProgressFn | None = None) -> RawSplits:
    files = read_text_tree(spec.path)
    text = join_texts([f.text for f in files])
    if progress:
        progress("read", 1, 1)
    return RawSplits(
        splits={"train": text},
        origin="text",
        files=[{"split": "train", "origin": "text", "path": str(f.path), "size": f.size, "sha256": f.sha256} for f in files],
    )


# --------------------------------------------------------------------------- aliases


def _local_candidates(split: str, sf: SourceFile, from_path: Path | None) -> list[tuple[str, Path]]:
    """(origin, path) pairs to try for one split, in the documented order."""
    out: list[tuple[str, Path]] = []
    base = Path(sf.mirror_path).name
    if from_path is not None:
        if from_path.is_dir():
            out += [("from", from_path / sf.mirror_path), ("from", from_path / base)]
        elif split == "train":
            out.append(("from", from_path))
        else:
            # --from names the train file; look for the other splits beside it
            out.append(("from", from_path.parent / base))
    m = mirror_dir()
    if m is not None:
        out.append(("mirror", m / sf.mirror_path))
    out.append(("raw-cache", raw_dir() / sf.mirror_path))
    return out


def _check_sha(spec: DatasetSpec, sf: SourceFile, origin: str, path: str, actual: str, force: bool, warn: WarnFn) -> bool:
    if sf.sha256 is None or actual == sf.sha256:
        return True
    what = {"from": "--from file", "mirror": "Mirror file", "raw-cache": "Cached download", "download": "Download"}[origin]
    warn(f"{what} {path} for `{spec.name}` has sha256 {actual}, expected {sf.sha256}.")
    if not force:
        raise DataError(
            f"Refusing to use {path}: its sha256 {actual} does not match the expected {sf.sha256} for `{spec.name}`.",
            hint="Replace it with the original file, or re-run with --force to use it anyway.",
        )
    return False


def fetch_alias(
    spec: DatasetSpec,
    *,
    from_path: Path | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    warn: WarnFn | None = None,
) -> RawSplits:
    """The text of every split of `spec`, from the first source that has it."""
    warn = warn or default_warn
    if from_path is not None:
        from_path = Path(from_path).expanduser()
        if not from_path.exists():
            raise DataError(f"--from {from_path} does not exist.", hint="Give a text file, or a folder laid out like the mirror.")
    texts: dict[str, str] = {}
    files: list[dict] = []
    origins: set[str] = set()
    verified = True
    missing: dict[str, SourceFile] = {}
    for split, sf in spec.files().items():
        for origin, path in _local_candidates(split, sf, from_path):
            if not path.is_file():
                continue
            tf = read_text_file(path, label=f"{spec.name} {split} split")
            verified &= _check_sha(spec, sf, origin, str(path), tf.sha256, force, warn)
            texts[split] = tf.text
            files.append({"split": split, "origin": origin, "path": str(path), "size": tf.size, "sha256": tf.sha256})
            origins.add(origin)
            break
        else:
            missing[split] = sf
        if progress:
            progress("read", len(texts), len(spec.files()))
    if missing:
        downloaded, dl_files, dl_verified = _fetch_remote(spec, missing, force=force, progress=progress, warn=warn, from_path=from_path)
        texts.update(downloaded)
        files += dl_files
        verified &= dl_verified
        origins.add("hub" if spec.hf is not None and not all(sf.url for sf in missing.values()) else "download")
    return RawSplits(splits=texts, origin="+".join(sorted(origins)), files=files, verified=verified)


def _missing_message(spec: DatasetSpec, missing: dict[str, SourceFile], from_path: Path | None, reason: str) -> DataError:
    m = mirror_dir()
    names = ", ".join(f"the {split} split ({sf.mirror_path})" for split, sf in missing.items())
    looked = [f"--from {from_path}" if from_path else "no --from PATH was given"]
    looked.append(f"JEPA_DATA_MIRROR={m} has no {' or '.join(sf.mirror_path for sf in missing.values())}" if m else "JEPA_DATA_MIRROR is not set")
    looked.append(f"nothing was downloaded to {raw_dir()}")
    looked.append(reason)
    first = next(iter(missing.values()))
    remote = (
        f"the network (unset {', '.join(OFFLINE_VARS)} on a machine with internet access; "
        + (f"it downloads {first.url})" if first.url else f"`datasets` downloads {spec.hf.path}/{spec.hf.name})" if spec.hf else "")
    )
    hint = (
        "Provide it one of three ways: "
        f"(1) `jepa data prepare {spec.name} --from PATH`, PATH being the file or a folder that holds {Path(first.mirror_path).name}; "
        f"(2) a mirror folder with {first.mirror_path}, named by JEPA_DATA_MIRROR; "
        f"(3) {remote}."
    )
    if spec.name == "wikitext2" and m is not None and (m / "wikitext-2" / "valid.txt").is_file():
        hint += f" For a small offline run, `text:{m / 'wikitext-2' / 'valid.txt'}` trains on the validation text."
    return DataError(f"`{spec.name}` needs {names}, which is not available: {'; '.join(looked)}.", hint=hint)


def _fetch_remote(
    spec: DatasetSpec,
    missing: dict[str, SourceFile],
    *,
    force: bool,
    progress: ProgressFn | None,
    warn: WarnFn,
    from_path: Path | None,
) -> tuple[dict[str, str], list[dict], bool]:
    can_url = all(sf.url for sf in missing.values())
    if not can_url and spec.hf is None:
        raise _missing_message(spec, missing, from_path, f"`{spec.name}` has no download source")
    reason = offline_reason()
    if reason is not None:
        raise _missing_message(spec, missing, from_path, f"the network is disabled ({reason})")
    texts: dict[str, str] = {}
    files: list[dict] = []
    verified = True
    if can_url:
        for split, sf in missing.items():
            data = download(sf.url, expected_size=sf.size, progress=progress)
            actual = hashlib.sha256(data).hexdigest()
            ok = _check_sha(spec, sf, "download", sf.url, actual, force, warn)
            verified &= ok
            texts[split] = decode_text(data, f"Download {sf.url}")
            # keep only verified downloads (or ones the user forced) so the next run can be offline
            atomic_write_bytes(raw_dir() / sf.mirror_path, data)
            files.append({"split": split, "origin": "download", "path": sf.url, "size": len(data), "sha256": actual})
        return texts, files, verified
    hub = load_hub_splits(spec, progress=progress)
    for split, text in hub.items():
        if split in missing:
            data = text.encode("utf-8")
            atomic_write_bytes(raw_dir() / missing[split].mirror_path, data)
            texts[split] = text
            files.append({"split": split, "origin": "hub", "path": f"{spec.hf.path}/{spec.hf.name}", "size": len(data), "sha256": sha256_text(text)})
    return texts, files, verified


def download(url: str, *, expected_size: int | None = None, progress: ProgressFn | None = None) -> bytes:
    """GET `url` into memory (one try, a timeout, no retries), reporting bytes as they arrive."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": f"jepa/{__version__}"})
    chunks: list[bytes] = []
    try:
        with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or expected_size or 0)
            done = 0
            while True:
                block = resp.read(1 << 16)
                if not block:
                    break
                chunks.append(block)
                done += len(block)
                if progress:
                    progress("download", done, total)
    except urllib.error.HTTPError as e:
        raise DataError(f"Download of {url} failed: HTTP {e.code} {e.reason}.") from None
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", None) or e
        raise DataError(
            f"Download of {url} failed: {why}.",
            hint="Check the connection, or use a local copy with --from PATH or JEPA_DATA_MIRROR.",
        ) from None
    return b"".join(chunks)


def load_hub_splits(spec: DatasetSpec, progress: ProgressFn | None = None) -> dict[str, str]:
    """Every split of `spec.hf`, each the concatenation of its rows."""
    assert spec.hf is not None
    import datasets

    if progress:
        progress("download", 0, 0)
    try:
        ds = datasets.load_dataset(spec.hf.path, spec.hf.name)
    except Exception as e:  # the hub raises many unrelated types (ConnectionError, HfHubHTTPError, ...)
        raise DataError(
            f"Could not load {spec.hf.path}/{spec.hf.name} from the Hugging Face hub: {type(e).__name__}: {e}",
            hint="Check the connection, or use a local copy with --from PATH or JEPA_DATA_MIRROR.",
        ) from None
    out: dict[str, str] = {}
    for split, hf_split in spec.hf.splits.items():
        if hf_split not in ds:
            raise DataError(f"{spec.hf.path}/{spec.hf.name} has no `{hf_split}` split (it has {', '.join(ds)}).")
        # wikitext rows keep their "\n", so joining with "" rebuilds the running text
        out[split] = decode_text("".join(ds[hf_split][spec.hf.column]).encode("utf-8"), f"{spec.hf.path} {hf_split}")
    if progress:
        progress("download", 1, 1)
    return out


def _locate_records(spec, from_path: Path | None) -> dict[str, tuple[str, str]]:
    reason = offline_reason()
    if spec.kind != "hf":
        from .records import list_local_files

        try:
            files = list_local_files(spec)
        except DataError as e:
            return {"train": ("missing", e.message)}
        return {split: ("local", f"{len(fs)} file{'s' if len(fs) != 1 else ''} under {spec.location}") for split, fs in files.items()}
    if from_path is not None and Path(from_path).is_dir():
        return {"train": ("from", str(from_path))}
    m = mirror_dir()
    if m is not None and (m / "hf" / spec.location).is_dir():
        return {"train": ("mirror", str(m / "hf" / spec.location))}
    if reason is None:
        return {"train": ("hub", spec.location + (f" ({spec.config})" if spec.config else ""))}
    return {"train": ("missing", f"no local copy of {spec.location} (network disabled by {reason})")}


def locate(spec: DatasetSpec, from_path: Path | None = None) -> dict[str, tuple[str, str]]:
    """Split -> (origin, where) that `fetch_alias` would use now, without reading anything.

    origin is "from", "mirror", "raw-cache", "download", "hub" or "missing" ("local" for the
    files of json:/parquet:; a hub dataset reports its train split only, its splits being
    known once it is opened).
    """
    if getattr(spec, "kind", None) in ("hf", "json", "parquet"):
        return _locate_records(spec, from_path)
    out: dict[str, tuple[str, str]] = {}
    reason = offline_reason()
    for split, sf in spec.files().items():
        for origin, path in _local_candidates(split, sf, from_path):
            if path.is_file():
                out[split] = (origin, str(path))
                break
        else:
            if reason is None and sf.url:
                out[split] = ("download", sf.url)
            elif reason is None and spec.hf is not None:
                out[split] = ("hub", f"{spec.hf.path}/{spec.hf.name}")
            else:
                why = f"network disabled by {reason}" if reason else "no download source"
                out[split] = ("missing", f"{sf.mirror_path} not found ({why})")
    return out
