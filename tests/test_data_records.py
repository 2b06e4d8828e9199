"""json:/parquet: document datasets, made here with `datasets`, against a reference built by hand.

The reference token stream of a split is: every non-empty document in file
order, NFKC-normalised and encoded on its own, followed by `<eos>`; validation
holds out documents d with d % 10 == 9 (val_fraction 0.1) when the data has no
validation split.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from jepa_core.config import DataConfig
from jepa_core.data import BPETokenizer, load_prepared, prepare_dataset
from jepa_core.data import pipeline
from jepa_core.errors import DataError

from train_helpers import small_text

EXTRA = ["Grüße aus Köln — ﬁne ﬂowers", "", None, "x"]  # non-ASCII (NFKC folds the ligatures), empty, null, one byte


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> list[str | None]:
    text = small_text(tmp_path_factory.mktemp("text"), 60_000).read_text(encoding="utf-8")
    paras = [p for p in text.split("\n\n")]
    return paras[:5] + EXTRA + paras[5:]


def write_files(folder: Path, docs: list, kind: str, n_files: int = 3, field: str = "body", stem: str = "part") -> list[Path]:
    """Contiguous slices of `docs` in n_files files, with an extra column, written by `datasets`."""
    from datasets import Dataset

    folder.mkdir(parents=True, exist_ok=True)
    k = -(-len(docs) // n_files)
    paths = []
    for i in range(n_files):
        part = docs[i * k : (i + 1) * k]
        ds = Dataset.from_dict({field: part, "n": list(range(len(part)))})
        path = folder / f"{stem}-{i:05d}.{'parquet' if kind == 'parquet' else 'jsonl'}"
        if kind == "parquet":
            ds.to_parquet(str(path))
        else:
            ds.to_json(str(path))  # JSON lines
        paths.append(path)
    return paths


def reference(tok: BPETokenizer, texts: list[str]) -> tuple[np.ndarray, int]:
    eos = tok.eos_id
    ids = [i for t in texts for i in tok.encode(t) + [eos]]
    nbytes = sum(len(unicodedata.normalize("NFKC", t).encode("utf-8")) for t in texts)
    return np.array(ids, dtype=np.int64), nbytes


def heldout(docs: list) -> tuple[list[str], list[str]]:
    real = [d for d in docs if d]
    return [d for i, d in enumerate(real) if i % 10 != 9], [d for i, d in enumerate(real) if i % 10 == 9]


def cfg(name: str, **kw) -> DataConfig:
    return DataConfig(dataset=name, text_field=kw.pop("text_field", "body"), vocab_size=kw.pop("vocab_size", 400), block_size=16, **kw)


def test_parquet_and_jsonl_prepare_to_the_reference_stream(tmp_path, docs):
    files = {kind: write_files(tmp_path / kind, docs, kind) for kind in ("parquet", "json")}
    got = {}
    for kind in ("parquet", "json"):
        p = prepare_dataset(cfg(f"{kind}:{tmp_path / kind}"))
        assert not p.reused and p.format == "jepa-token-cache/2"
        tok = p.tokenizer()
        train_docs, val_docs = heldout(docs)
        ref_train, train_bytes = reference(tok, train_docs)
        ref_val, val_bytes = reference(tok, val_docs)
        assert np.array_equal(np.asarray(p.train_tokens, dtype=np.int64), ref_train)
        assert np.array_equal(np.asarray(p.val_tokens, dtype=np.int64), ref_val)
        assert (p.train_bytes, p.val_bytes) == (train_bytes, val_bytes)
        m = p.manifest
        assert (m["splits"]["train"]["docs"], m["splits"]["val"]["docs"]) == (len(train_docs), len(val_docs))
        assert m["source"]["val_split"] == "heldout" and m["source"]["text_field"] == "body"
        assert m["separator"] == {"token": "<eos>", "id": tok.eos_id}
        assert m["dtype"] == "uint16" and p.train_tokens.dtype == np.uint16
        # the manifest names every input file with its sha256, and every shard with its own
        assert [(f["path"], f["sha256"]) for f in m["source"]["files"]] == [
            (str(f), hashlib.sha256(f.read_bytes()).hexdigest()) for f in files[kind]
        ]
        for split in ("train", "val"):
            for e in m["splits"][split]["shards"]:
                assert e["sha256"] == hashlib.sha256((p.dir / e["file"]).read_bytes()).hexdigest()
        assert [e["file"] for e in m["splits"]["train"]["shards"]] == ["train-00000.bin"]
        assert m["tokenizer"]["sha256"] == hashlib.sha256(p.tokenizer_path.read_bytes()).hexdigest() == p.tokenizer_sha256
        got[kind] = p
    # the same documents give the same tokenizer and the same tokens whatever the file format
    assert got["parquet"].tokenizer_sha256 == got["json"].tokenizer_sha256
    assert np.array_equal(np.asarray(got["parquet"].train_tokens), np.asarray(got["json"].train_tokens))


def test_reuse_and_edits_rebuild(tmp_path, docs):
    files = write_files(tmp_path / "d", docs, "json")
    c = cfg(f"json:{tmp_path / 'd'}")
    first = prepare_dataset(c)
    again = prepare_dataset(c)
    assert again.reused and again.dir == first.dir
    assert np.array_equal(np.asarray(again.train_tokens), np.asarray(first.train_tokens))
    # loading never imports datasets (a fresh process stays fast)
    code = (
        "import sys, time; from jepa_core.config import DataConfig; from jepa_core.data import load_prepared; "
        f"p = load_prepared(DataConfig(dataset={c.dataset!r}, text_field='body', vocab_size=400, block_size=16)); "
        "print(len(p.train_tokens), 'datasets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert out.stdout.split() == [str(len(first.train_tokens)), "False"], out.stderr
    # an edited file (a new document at the end) is noticed and the cache rebuilt
    with open(files[-1], "a", encoding="utf-8") as f:
        f.write(json.dumps({"body": "A late addition.", "n": 0}) + "\n")
    rebuilt = prepare_dataset(c)
    assert not rebuilt.reused
    assert rebuilt.manifest["splits"]["train"]["docs"] + rebuilt.manifest["splits"]["val"]["docs"] == len([d for d in docs if d]) + 1


def test_shards_of_any_size_hold_the_same_stream(tmp_path, docs, monkeypatch):
    write_files(tmp_path / "d", docs, "parquet")
    one = prepare_dataset(cfg(f"parquet:{tmp_path / 'd'}"))
    monkeypatch.setattr(pipeline, "SHARD_TOKENS", 997)
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 5_000)
    many = prepare_dataset(cfg(f"parquet:{tmp_path / 'd'}"))
    assert many.dir != one.dir  # the shard size is part of the key
    shards = many.manifest["splits"]["train"]["shards"]
    assert len(shards) > 5
    assert [e["file"] for e in shards] == [f"train-{i:05d}.bin" for i in range(len(shards))]
    assert all(e["tokens"] == 997 for e in shards[:-1]) and 0 < shards[-1]["tokens"] <= 997
    assert sorted(p.name for p in many.dir.iterdir()) == sorted(
        ["manifest.json", "tokenizer.json"] + [e["file"] for e in shards] + [e["file"] for e in many.manifest["splits"]["val"]["shards"]]
    )
    assert many.train_tokens.n_shards == len(shards)
    assert np.array_equal(np.asarray(many.train_tokens), np.asarray(one.train_tokens))
    assert np.array_equal(np.asarray(many.val_tokens), np.asarray(one.val_tokens))
    assert many.train_bytes == one.train_bytes
    # train_fraction cuts the stream inside a shard; its bytes are counted exactly
    part = load_prepared(cfg(f"parquet:{tmp_path / 'd'}", train_fraction=0.5))
    n = int(len(one.train_tokens) * 0.5)
    assert len(part.train_tokens) == n
    lengths = one.tokenizer().token_byte_lengths()
    assert part.train_bytes == int(lengths[np.asarray(one.train_tokens)[:n]].sum())


def test_a_validation_split_found_by_file_name(tmp_path, docs):
    real = [d for d in docs if d]
    train_docs, val_docs = real[:-40], real[-40:]
    write_files(tmp_path / "d", train_docs, "json", n_files=2, stem="train")
    write_files(tmp_path / "d", val_docs, "json", n_files=1, stem="validation")
    p = prepare_dataset(cfg(f"json:{tmp_path / 'd'}"))
    assert p.manifest["source"]["val_split"] == "validation"
    tok = p.tokenizer()
    assert np.array_equal(np.asarray(p.train_tokens, dtype=np.int64), reference(tok, train_docs)[0])
    assert np.array_equal(np.asarray(p.val_tokens, dtype=np.int64), reference(tok, val_docs)[0])
    # holding out anyway, and naming a split that is not there
    held = prepare_dataset(cfg(f"json:{tmp_path / 'd'}", val_split="heldout"))
    assert held.manifest["splits"]["val"]["docs"] == len(train_docs) // 10
    with pytest.raises(DataError) as e:
        prepare_dataset(cfg(f"json:{tmp_path / 'd'}", val_split="test"))
    assert "no split `test`" in e.value.message and "train, validation" in e.value.message and "data.val_split" in e.value.message


def test_max_train_tokens_stops_exactly(tmp_path, docs, monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 3_000)  # small chunks: reading stops soon after the limit
    write_files(tmp_path / "d", docs, "json")
    full = prepare_dataset(cfg(f"json:{tmp_path / 'd'}"))
    cut = prepare_dataset(cfg(f"json:{tmp_path / 'd'}", max_train_tokens=5_000))
    assert len(cut.train_tokens) == 5_000 and cut.manifest["truncated"] is True
    assert np.array_equal(np.asarray(cut.train_tokens), np.asarray(full.train_tokens)[:5_000])
    # validation holds the held-out documents read until then: a prefix of the full run's
    assert 0 < len(cut.val_tokens) < len(full.val_tokens)
    assert np.array_equal(np.asarray(cut.val_tokens), np.asarray(full.val_tokens)[: len(cut.val_tokens)])


@pytest.mark.slow
def test_tokenizer_trains_on_a_bounded_sample(tmp_path, docs):
    many = [d for d in docs if d] * 12  # ~ 700 KB of text per copy of the docs
    many = many + [f"{d} ({i})" for i, d in enumerate(many)]
    write_files(tmp_path / "d", many, "json", n_files=4)
    limit = 1_000_000
    p = prepare_dataset(cfg(f"json:{tmp_path / 'd'}", tokenizer_sample_bytes=limit))
    tok_info = p.manifest["tokenizer"]
    assert tok_info["sample_bytes"] == limit and tok_info["sample_limit"] == limit
    # the same tokenizer as one trained by hand on the first `limit` bytes of the train documents
    train_docs, _ = heldout(many)
    sample, got = [], 0
    for d in train_docs:
        b = d.encode("utf-8")
        if got + len(b) >= limit:
            sample.append(b[: limit - got].decode("utf-8", errors="ignore"))
            break
        sample.append(d)
        got += len(b)
    ref = BPETokenizer.train(sample, 400)
    assert p.tokenizer().to_str() == ref.to_str()
    # the whole corpus was still encoded
    assert p.manifest["splits"]["train"]["bytes"] == reference(ref, train_docs)[1] > limit


def test_a_reused_tokenizer(tmp_path, docs):
    write_files(tmp_path / "d", docs, "json")
    first = prepare_dataset(cfg(f"json:{tmp_path / 'd'}"))
    run_dir = tmp_path / "run"  # a run directory holds the tokenizer.json it trained with
    run_dir.mkdir()
    (run_dir / "tokenizer.json").write_bytes(first.tokenizer_path.read_bytes())
    again = prepare_dataset(cfg(f"json:{tmp_path / 'd'}", tokenizer=str(run_dir), vocab_size=999))
    assert again.dir != first.dir and again.vocab_size == first.vocab_size
    assert again.tokenizer_sha256 == first.tokenizer_sha256
    assert again.manifest["tokenizer"]["source"] == str(run_dir / "tokenizer.json")
    assert np.array_equal(np.asarray(again.train_tokens), np.asarray(first.train_tokens))
    # a text stream can reuse it too
    txt = tmp_path / "t.txt"
    txt.write_text("\n".join(d for d in docs if d), encoding="utf-8")
    legacy = prepare_dataset(DataConfig(dataset=f"text:{txt}", tokenizer=str(run_dir / "tokenizer.json"), block_size=16))
    assert legacy.tokenizer_sha256 == first.tokenizer_sha256 and legacy.vocab_size == first.vocab_size
    # a tokenizer that is not byte-level would make bits per byte wrong: refused
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(tmp_path / "wl.json"))
    with pytest.raises(DataError, match="not a byte-level tokenizer"):
        prepare_dataset(cfg(f"json:{tmp_path / 'd'}", tokenizer=str(tmp_path / "wl.json")))
    with pytest.raises(DataError, match="not a tokenizer.json"):
        prepare_dataset(cfg(f"json:{tmp_path / 'd'}", tokenizer=str(tmp_path / "none.json")))


def test_document_keys_do_not_apply_to_text_streams(tmp_path):
    with pytest.raises(DataError, match="data.text_field only apply"):
        prepare_dataset(DataConfig(dataset="tiny_shakespeare", text_field="body"))


# --------------------------------------------------------------------------- bad inputs


def _no_cache_left(home: Path) -> None:
    data = home / "data"
    left = [p.name for p in data.iterdir() if not p.name.endswith(".lock")] if data.exists() else []
    assert left == []  # no cache and no partial folder


def test_missing_field_names_it_and_the_columns(tmp_path, docs):
    write_files(tmp_path / "d", docs, "parquet")
    with pytest.raises(DataError) as e:
        prepare_dataset(cfg(f"parquet:{tmp_path / 'd'}", text_field="text"))
    assert "no text field `text`" in e.value.message and "body, n" in e.value.message
    assert "data.text_field" in e.value.hint
    _no_cache_left(Path(os.environ["JEPA_HOME"]))


def test_empty_datasets(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "empty.jsonl").write_bytes(b"")
    with pytest.raises(DataError):
        prepare_dataset(cfg(f"json:{tmp_path / 'e' / 'empty.jsonl'}"))
    write_files(tmp_path / "blank", ["", None, ""], "parquet", n_files=1)
    with pytest.raises(DataError) as e:
        prepare_dataset(cfg(f"parquet:{tmp_path / 'blank'}"))
    assert "no text in field `body`" in e.value.message and "train split" in e.value.message
    _no_cache_left(Path(os.environ["JEPA_HOME"]))


@pytest.mark.parametrize("kind", ["json", "parquet"])
def test_a_binary_file_is_named(tmp_path, kind):
    path = tmp_path / f"blob.{'jsonl' if kind == 'json' else 'parquet'}"
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)))
    with pytest.raises(DataError) as e:
        prepare_dataset(cfg(f"{kind}:{path}"))
    assert str(path) in e.value.message and "Could not read" in e.value.message
    _no_cache_left(Path(os.environ["JEPA_HOME"]))


def test_unknown_split_and_non_text_field(tmp_path, docs):
    write_files(tmp_path / "d", docs, "json")
    with pytest.raises(DataError) as e:
        prepare_dataset(cfg(f"json:{tmp_path / 'd'}", train_split="nope"))
    assert "no split `nope`" in e.value.message and "data.train_split" in e.value.message and "it has train" in e.value.message
    with pytest.raises(DataError, match="field `n` of the train split holds int values"):
        prepare_dataset(cfg(f"json:{tmp_path / 'd'}", text_field="n"))
    with pytest.raises(DataError, match="does not exist"):
        prepare_dataset(cfg(f"json:{tmp_path / 'nowhere'}"))
    with pytest.raises(DataError, match="no file matches"):
        prepare_dataset(cfg(f"json:{tmp_path / 'd' / '*.parquet'}"))


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", JEPA_HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("JEPA_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "jepa_cli", *args], capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.slow
def test_cli_bad_inputs_exit_2_naming_the_field_or_split(tmp_path, docs):
    write_files(tmp_path / "d", docs, "json")
    for args, needle in (
        (("--text-field", "content"), "no text field `content`"),
        (("--text-field", "body", "--train-split", "training"), "no split `training`"),
    ):
        r = _cli("data", "prepare", f"json:{tmp_path / 'd'}", *args, home=tmp_path / "h")
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and r.stderr.startswith("error: ")
        assert needle in " ".join(r.stderr.split())
        _no_cache_left(tmp_path / "h")


def test_a_second_preparation_waits_for_the_first(tmp_path, docs):
    import fcntl
    import threading
    import time

    from jepa_core.data import cache_dir_for

    write_files(tmp_path / "d", docs, "json")
    c = cfg(f"json:{tmp_path / 'd'}")
    dest = cache_dir_for(c)
    dest.parent.mkdir(parents=True, exist_ok=True)
    held = open(dest.parent / f".{dest.name}.lock", "w")
    fcntl.flock(held, fcntl.LOCK_EX)  # as a preparation of the same cache in another process would
    said, out = [], {}
    t = threading.Thread(target=lambda: out.setdefault("p", prepare_dataset(c, warn=said.append)))
    t.start()
    deadline = time.monotonic() + 60
    while not said and time.monotonic() < deadline:
        time.sleep(0.05)
    assert said and "Another process is preparing this dataset" in said[0]
    time.sleep(0.2)
    assert t.is_alive() and not dest.exists()  # it waits instead of writing beside the other one
    held.close()  # the other process is done
    t.join(120)
    assert not out["p"].reused and out["p"].dir == dest
