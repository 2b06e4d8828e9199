"""hf:OWNER/NAME[:CONFIG]: offline errors, the hub path up to the network call, local copies of a repository."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from jepa_core.config import DataConfig
from jepa_core.data import prepare_dataset, records, resolve_dataset
from jepa_core.errors import DataError

from test_data_records import docs, heldout, reference, write_files  # noqa: F401  (docs is a fixture)

OFFLINE = ("JEPA_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def test_hub_names_parse():
    s = resolve_dataset("hf:HuggingFaceFW/fineweb-edu:sample-10BT")
    assert (s.kind, s.location, s.config) == ("hf", "HuggingFaceFW/fineweb-edu", "sample-10BT")
    s = resolve_dataset("hf:wikitext")
    assert (s.location, s.config) == ("wikitext", None)
    for bad in ("hf:", "hf:a/b/c", "hf:/x", "hf:a/b:c:d"):
        with pytest.raises(DataError):
            resolve_dataset(bad)


def test_offline_cli_exits_2_at_once_with_every_way_to_provide_it(tmp_path):
    env = dict(os.environ, COLUMNS="200", JEPA_HOME=str(tmp_path / "h"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", JEPA_DATA_MIRROR=str(tmp_path / "mirror"))
    r = subprocess.run(  # the timeout bounds it; with HF_HUB_OFFLINE no request is even tried
        [sys.executable, "-m", "jepa_cli", "data", "prepare", "hf:HuggingFaceFW/fineweb-edu:sample-10BT"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    msg = " ".join(r.stderr.split())
    assert "Traceback" not in msg and msg.startswith("error: ")
    assert "`hf:HuggingFaceFW/fineweb-edu:sample-10BT` is not available" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "huggingface-cli download HuggingFaceFW/fineweb-edu --repo-type dataset" in msg and "--from DIR" in msg
    assert "JEPA_DATA_MIRROR" in msg and "hf/HuggingFaceFW/fineweb-edu" in msg and "parquet:DIR" in msg
    assert not (tmp_path / "h" / "data").exists() or all(p.name.startswith(".") and p.suffix == ".lock" for p in (tmp_path / "h" / "data").iterdir())


def test_jepa_offline_alone_never_calls_the_hub(monkeypatch):
    for var in OFFLINE:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JEPA_OFFLINE", "1")

    def no(*a, **k):
        raise AssertionError("the hub was called")

    monkeypatch.setattr(records, "_hub_revision", no)
    monkeypatch.setattr(records, "_load_hub", no)
    with pytest.raises(DataError, match="network is disabled \\(JEPA_OFFLINE=1\\)"):
        prepare_dataset(DataConfig(dataset="hf:someone/corpus"))


def _hub_streams(train_docs, val_docs):
    from datasets import Dataset, IterableDatasetDict

    def ds(texts):
        return Dataset.from_dict({"text": texts, "url": ["u"] * len(texts)}).to_iterable_dataset(num_shards=2)

    return IterableDatasetDict({"train": ds(train_docs), "validation": ds(val_docs)})


def test_the_hub_path_up_to_the_network_call(monkeypatch, docs):
    """Online: the revision is resolved first and the dataset opened at that commit, streaming."""
    for var in OFFLINE:
        monkeypatch.delenv(var, raising=False)
    real = [d for d in docs if d]
    train_docs, val_docs = real[:-50], real[-50:]
    calls = []
    monkeypatch.setattr(records, "_hub_revision", lambda repo: calls.append(("revision", repo)) or "0123abcd" * 5)

    def load(path, config, revision):
        calls.append(("load", path, config, revision))
        return _hub_streams(train_docs, val_docs)

    monkeypatch.setattr(records, "_load_hub", load)
    p = prepare_dataset(DataConfig(dataset="hf:someone/corpus:small", vocab_size=400, block_size=16))
    assert calls[0] == ("revision", "someone/corpus")
    assert calls[1] == ("load", "someone/corpus", "small", "0123abcd" * 5)
    src = p.manifest["source"]
    assert (src["repo"], src["config"], src["revision"], src["origin"]) == ("someone/corpus", "small", "0123abcd" * 5, "hub")
    assert src["val_split"] == "validation"
    tok = p.tokenizer()
    assert np.array_equal(np.asarray(p.train_tokens, dtype=np.int64), reference(tok, train_docs)[0])
    assert np.array_equal(np.asarray(p.val_tokens, dtype=np.int64), reference(tok, val_docs)[0])
    # prepared once, it is reused without the hub
    monkeypatch.setattr(records, "_load_hub", lambda *a: pytest.fail("the hub was called again"))
    assert prepare_dataset(DataConfig(dataset="hf:someone/corpus:small", vocab_size=400, block_size=16)).reused


def test_hub_errors_online_are_data_errors(monkeypatch):
    for var in OFFLINE:
        monkeypatch.delenv(var, raising=False)

    def fail(*a):
        raise ConnectionError("Couldn't reach 'someone/corpus' on the Hub (ConnectTimeout)")

    monkeypatch.setattr(records, "_hub_revision", fail)
    with pytest.raises(DataError) as e:
        prepare_dataset(DataConfig(dataset="hf:someone/corpus"))
    assert "Could not open someone/corpus on the Hugging Face hub" in e.value.message and "ConnectTimeout" in e.value.message


def test_a_local_copy_of_the_repository(tmp_path, docs, monkeypatch):
    """--from DIR (what `huggingface-cli download --local-dir DIR` makes), then the mirror, offline."""
    real = [d for d in docs if d]
    repo = tmp_path / "copy"
    write_files(repo / "data", real[:-40], "parquet", n_files=2, field="text", stem="train")
    write_files(repo / "data", real[-40:], "parquet", n_files=1, field="text", stem="validation")
    c = DataConfig(dataset="hf:someone/corpus", vocab_size=400, block_size=16)
    with pytest.raises(DataError, match="is not available"):
        prepare_dataset(c)
    p = prepare_dataset(c, from_path=repo)
    src = p.manifest["source"]
    assert src["origin"] == "from" and src["local_repo"] == str(repo) and src["val_split"] == "validation"
    assert len(src["files"]) == 3 and all(len(f["sha256"]) == 64 for f in src["files"])
    tok = p.tokenizer()
    assert np.array_equal(np.asarray(p.val_tokens, dtype=np.int64), reference(tok, real[-40:])[0])
    # the same repository found in the mirror: same tokens
    mirror = tmp_path / "mirror"
    (mirror / "hf" / "someone").mkdir(parents=True)
    os.symlink(repo, mirror / "hf" / "someone" / "corpus")
    monkeypatch.setenv("JEPA_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("JEPA_HOME", str(tmp_path / "other"))
    q = prepare_dataset(c)
    assert q.manifest["source"]["origin"] == "mirror"
    assert np.array_equal(np.asarray(q.train_tokens), np.asarray(p.train_tokens))


def test_locate_says_where_document_data_would_come_from(tmp_path, monkeypatch, docs):
    """What `jepa preflight` reports before anything is prepared (nothing is read)."""
    from jepa_core.data.sources import locate

    monkeypatch.setenv("JEPA_DATA_MIRROR", str(tmp_path / "mirror"))
    assert locate(resolve_dataset("hf:someone/corpus"))["train"][0] == "missing"
    (tmp_path / "mirror" / "hf" / "someone" / "corpus").mkdir(parents=True)
    assert locate(resolve_dataset("hf:someone/corpus")) == {"train": ("mirror", str(tmp_path / "mirror" / "hf" / "someone" / "corpus"))}
    for var in OFFLINE:
        monkeypatch.delenv(var, raising=False)
    assert locate(resolve_dataset("hf:other/corpus:cfg")) == {"train": ("hub", "other/corpus (cfg)")}
    write_files(tmp_path / "d", docs, "json", n_files=2, stem="train")
    assert locate(resolve_dataset(f"json:{tmp_path / 'd'}")) == {"train": ("local", f"2 files under {tmp_path / 'd'}")}
    assert locate(resolve_dataset(f"json:{tmp_path / 'nope'}"))["train"][0] == "missing"
