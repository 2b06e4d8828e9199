"""Source resolution: --from, mirror, earlier downloads, network (replaced by fakes here)."""

from __future__ import annotations

import hashlib
import io
import sys
import types
import urllib.error
import urllib.request

import pytest

from jepa_core.config import DataConfig
from jepa_core.data import get_dataset, prepare_dataset
from jepa_core.data.sources import fetch_alias, locate, raw_dir
from jepa_core.errors import DataError

TS_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TS_SHA = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


class _Response:
    def __init__(self, data: bytes):
        self._body = io.BytesIO(data)
        self.headers = {"Content-Length": str(len(data))}

    def read(self, n: int = -1) -> bytes:
        return self._body.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def online(monkeypatch):
    """Network allowed as far as jepa can tell, with no mirror; urlopen is replaced per test."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "JEPA_OFFLINE", "JEPA_DATA_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    calls: list[tuple[str, float]] = []

    def serve(data: bytes):
        def fake_urlopen(req, timeout=None):
            calls.append((req.full_url, timeout))
            return _Response(data)

        monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)

    return serve, calls


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the network must not be touched")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def ts_bytes(mirror) -> bytes:
    return (mirror / "tiny_shakespeare" / "input.txt").read_bytes()


# --------------------------------------------------------------------------- URL downloads


def test_download_goes_to_the_real_url_and_is_kept(online, ts_bytes, monkeypatch):
    serve, calls = online
    serve(ts_bytes)
    progress = []
    raw = fetch_alias(get_dataset("tiny_shakespeare"), progress=lambda s, d, t: progress.append((s, d, t)))
    assert calls == [(TS_URL, 30.0)]
    assert raw.splits["train"] == ts_bytes.decode("utf-8") and raw.origin == "download" and raw.verified
    assert raw.files[0]["sha256"] == TS_SHA
    kept = raw_dir() / "tiny_shakespeare" / "input.txt"
    assert kept.read_bytes() == ts_bytes
    assert progress[-1] == ("download", len(ts_bytes), len(ts_bytes))

    # afterwards, offline: the kept copy is used and the network is not
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    again = fetch_alias(get_dataset("tiny_shakespeare"))
    assert again.origin == "raw-cache" and again.splits["train"] == raw.splits["train"]


def test_download_with_wrong_sha256_is_refused_then_forced(online, ts_bytes):
    serve, calls = online
    tampered = ts_bytes.replace(b"Citizen", b"Citizeh", 1)
    bad_sha = hashlib.sha256(tampered).hexdigest()
    serve(tampered)
    warnings: list[str] = []
    with pytest.raises(DataError) as e:
        fetch_alias(get_dataset("tiny_shakespeare"), warn=warnings.append)
    assert bad_sha in e.value.message and TS_SHA in e.value.message and "--force" in e.value.hint
    assert len(warnings) == 1 and bad_sha in warnings[0] and TS_SHA in warnings[0]
    assert not (raw_dir() / "tiny_shakespeare" / "input.txt").exists()  # a refused download is not kept

    raw = fetch_alias(get_dataset("tiny_shakespeare"), force=True, warn=warnings.append)
    assert len(warnings) == 2 and raw.verified is False
    assert raw.splits["train"] == tampered.decode("utf-8")


def test_download_failure_is_a_data_error(online, monkeypatch):
    def down(req, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", down)
    with pytest.raises(DataError, match="Name or service not known") as e:
        fetch_alias(get_dataset("tiny_shakespeare"))
    assert "--from" in e.value.hint


def test_offline_without_mirror_never_downloads(no_network, monkeypatch):
    monkeypatch.delenv("JEPA_DATA_MIRROR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        fetch_alias(get_dataset("tiny_shakespeare"))
    assert "HF_HUB_OFFLINE=1" in e.value.message and "tiny_shakespeare/input.txt" in e.value.message
    assert "--from" in e.value.hint and "JEPA_DATA_MIRROR" in e.value.hint and TS_URL in e.value.hint


# --------------------------------------------------------------------------- local sources


def test_mirror_is_used_and_verified(mirror, no_network):
    raw = fetch_alias(get_dataset("tiny_shakespeare"))
    assert raw.origin == "mirror" and raw.verified
    assert raw.files[0]["path"] == str(mirror / "tiny_shakespeare" / "input.txt")
    assert locate(get_dataset("tiny_shakespeare")) == {"train": ("mirror", str(mirror / "tiny_shakespeare" / "input.txt"))}


def test_from_comes_before_the_mirror(tmp_path, ts_bytes, mirror, no_network):
    f = tmp_path / "copy.txt"
    f.write_bytes(ts_bytes)
    raw = fetch_alias(get_dataset("tiny_shakespeare"), from_path=f)
    assert raw.origin == "from" and raw.files[0]["path"] == str(f)
    f.write_bytes(ts_bytes[:-1])
    with pytest.raises(DataError, match="sha256"):
        fetch_alias(get_dataset("tiny_shakespeare"), from_path=f, warn=lambda m: None)
    with pytest.raises(DataError, match="does not exist"):
        fetch_alias(get_dataset("tiny_shakespeare"), from_path=tmp_path / "nope.txt")


def test_wikitext2_from_a_folder(tmp_path, mirror, no_network):
    valid = (mirror / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
    d = tmp_path / "wt2"
    d.mkdir()
    (d / "train.txt").write_text(valid[:60_000], encoding="utf-8")
    (d / "valid.txt").write_text(valid[60_000:80_000], encoding="utf-8")
    p = prepare_dataset(DataConfig(dataset="wikitext2", vocab_size=400, block_size=32), from_path=d)
    tok = p.tokenizer()
    assert tok.decode(p.train_tokens) == valid[:60_000]
    assert tok.decode(p.val_tokens) == valid[60_000:80_000]
    assert {f["origin"] for f in p.manifest["source"]["files"]} == {"from"}
    assert p.manifest["val_fraction"] is None  # wikitext2 has its own validation split


def test_wikitext2_from_a_train_file_takes_val_from_the_mirror(tmp_path, mirror, no_network):
    valid = (mirror / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
    f = tmp_path / "my-train.txt"
    f.write_text(valid[:50_000], encoding="utf-8")
    raw = fetch_alias(get_dataset("wikitext2"), from_path=f)
    assert raw.splits["train"] == valid[:50_000] and raw.splits["val"] == valid
    assert [(x["split"], x["origin"]) for x in raw.files] == [("train", "from"), ("val", "mirror")]


# --------------------------------------------------------------------------- the Hugging Face hub


def _fake_datasets(monkeypatch, rows: dict[str, list[str]] | None, calls: list):
    mod = types.ModuleType("datasets")

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        if rows is None:
            raise AssertionError("datasets.load_dataset must not be called offline")
        return {split: {"text": r} for split, r in rows.items()}

    mod.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", mod)


ROWS_TRAIN = ["", " = Valkyria Chronicles III = \n", "", " Senjō no Valkyria 3 : Unrecorded Chronicles .\n"] * 120
ROWS_VAL = ["", " = Homarus gammarus = \n", "", " Homarus gammarus , known as the European lobster .\n"] * 40


def test_wikitext2_from_the_hub(online, monkeypatch):
    calls: list = []
    _fake_datasets(monkeypatch, {"train": ROWS_TRAIN, "validation": ROWS_VAL, "test": ["x\n"]}, calls)
    cfg = DataConfig(dataset="wikitext2", vocab_size=300, block_size=16)
    p = prepare_dataset(cfg)
    assert calls == [("wikitext", "wikitext-2-raw-v1")]
    tok = p.tokenizer()
    assert tok.decode(p.train_tokens) == "".join(ROWS_TRAIN)
    assert tok.decode(p.val_tokens) == "".join(ROWS_VAL)
    assert (raw_dir() / "wikitext-2" / "train.txt").read_text(encoding="utf-8") == "".join(ROWS_TRAIN)

    # offline afterwards: the kept copies are enough
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _fake_datasets(monkeypatch, None, calls)
    again = prepare_dataset(cfg, force=True)
    assert {f["origin"] for f in again.manifest["source"]["files"]} == {"raw-cache"}
    assert again.manifest["splits"]["train"]["text_sha256"] == p.manifest["splits"]["train"]["text_sha256"]


def test_hub_failure_is_a_data_error(online, monkeypatch):
    mod = types.ModuleType("datasets")

    def load_dataset(path, name=None, **kwargs):
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub (LocalEntryNotFoundError)")

    mod.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", mod)
    with pytest.raises(DataError, match="Couldn't reach"):
        fetch_alias(get_dataset("wikitext2"))


def test_wikitext2_offline_error_is_immediate_and_complete(mirror, monkeypatch, no_network):
    calls: list = []
    _fake_datasets(monkeypatch, None, calls)
    with pytest.raises(DataError) as e:
        prepare_dataset(DataConfig(dataset="wikitext2"))
    assert calls == []  # datasets was never asked to load anything: no network attempt, no retries
    msg, hint = e.value.message, e.value.hint
    assert "train split (wikitext-2/train.txt)" in msg
    assert f"JEPA_DATA_MIRROR={mirror} has no wikitext-2/train.txt" in msg
    assert "HF_HUB_OFFLINE=1" in msg
    # the three ways, and the small offline alternative
    assert "--from PATH" in hint and "JEPA_DATA_MIRROR" in hint and "network" in hint
    assert f"text:{mirror / 'wikitext-2' / 'valid.txt'}" in hint
    assert not (raw_dir().parent / "data").exists()
