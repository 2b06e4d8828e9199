"""prepare / load / ensure and the token cache: split sizes, reuse, atomicity, dtypes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jepa_core.config import DataConfig
from jepa_core.data import (
    CacheMiss,
    DatasetSpec,
    SourceFile,
    cache_dir_for,
    ensure_prepared,
    list_prepared,
    load_prepared,
    prepare_dataset,
    register_dataset,
    token_dtype,
    unregister_dataset,
)
from jepa_core.data.cache import open_split, read_manifest, write_split
from jepa_core.errors import DataError

TS_BYTES = 1_115_394
TS_TRAIN_CHARS = 1_003_854  # int(1_115_394 * 0.9), by hand: 1_003_854.6 -> 1_003_854
TS_SHA = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@pytest.fixture(scope="module")
def shared(shared_home, mirror):
    """tiny_shakespeare prepared once per session in the shared JEPA_HOME (later modules reuse it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JEPA_HOME", str(shared_home))
        prepared = ensure_prepared(DataConfig())
    return shared_home, prepared


@pytest.fixture
def in_shared(shared, monkeypatch):
    home, prepared = shared
    monkeypatch.setenv("JEPA_HOME", str(home))
    return prepared


@pytest.fixture(scope="module")
def text(mirror) -> str:
    raw = (mirror / "tiny_shakespeare" / "input.txt").read_bytes()
    assert len(raw) == TS_BYTES
    return raw.decode("utf-8")


def test_split_sizes_and_contents(in_shared, text):
    p = in_shared
    assert p.dataset == "tiny_shakespeare"
    assert p.vocab_size == 1024
    assert p.train_tokens.dtype == np.uint16 and isinstance(p.train_tokens, np.memmap)
    m = p.manifest
    assert m["splits"]["train"]["chars"] == TS_TRAIN_CHARS
    assert m["splits"]["val"]["chars"] == TS_BYTES - TS_TRAIN_CHARS
    # the text is ASCII, so bytes == chars, and NFKC leaves it alone
    assert (p.train_bytes, p.val_bytes) == (TS_TRAIN_CHARS, TS_BYTES - TS_TRAIN_CHARS)
    tok = p.tokenizer()
    assert tok.decode(p.train_tokens) == text[:TS_TRAIN_CHARS]
    assert tok.decode(p.val_tokens) == text[TS_TRAIN_CHARS:]
    lengths = tok.token_byte_lengths()
    assert int(lengths[np.asarray(p.train_tokens)].sum()) == p.train_bytes
    assert m["splits"]["train"]["tokens"] == len(p.train_tokens)
    assert m["source"]["files"][0]["sha256"] == TS_SHA and m["source"]["verified_sha256"] is True


def test_files_match_manifest(in_shared):
    p = in_shared
    for split, arr in (("train", p.train_tokens), ("val", p.val_tokens)):
        f = p.dir / f"{split}.bin"
        assert f.stat().st_size == 2 * len(arr)
        assert np.array_equal(np.fromfile(f, dtype="<u2"), np.asarray(arr))
    assert p.tokenizer_path.is_file() and p.tokenizer_path.parent.name == "tokenizers"
    import hashlib

    assert hashlib.sha256(p.tokenizer_path.read_bytes()).hexdigest() == p.tokenizer_sha256


def test_reuse_is_identical(in_shared):
    again = prepare_dataset(DataConfig())  # its speed is measured by benchmarks, not asserted here
    assert again.reused
    assert again.dir == in_shared.dir
    assert np.array_equal(np.asarray(again.val_tokens), np.asarray(in_shared.val_tokens))


def test_train_fraction_is_a_prefix(in_shared):
    part = load_prepared(DataConfig(train_fraction=0.25))
    full = in_shared.manifest["splits"]["train"]["tokens"]
    assert len(part.train_tokens) == int(full * 0.25)
    assert np.array_equal(np.asarray(part.train_tokens), np.asarray(in_shared.train_tokens[: int(full * 0.25)]))
    assert part.dir == in_shared.dir  # same cache: the prefix is taken at load time
    assert part.train_bytes == len(part.tokenizer().decode(part.train_tokens).encode("utf-8"))
    assert part.val_bytes == in_shared.val_bytes


def test_block_size_checked_at_load(in_shared):
    n_val = len(in_shared.val_tokens)
    load_prepared(DataConfig(block_size=n_val - 1))
    with pytest.raises(DataError, match="too short for one block"):
        load_prepared(DataConfig(block_size=n_val))


def test_load_prepared_missing_says_how(mirror):
    with pytest.raises(CacheMiss) as e:
        load_prepared(DataConfig(vocab_size=300))
    assert "jepa data prepare tiny_shakespeare --vocab-size 300" in e.value.hint


def test_list_prepared(in_shared):
    entries = [e for e in list_prepared() if e["dir"] == str(in_shared.dir)]
    assert len(entries) == 1 and entries[0]["vocab_size"] == 1024


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("vocab,dtype", [(260, "uint16"), (65_536, "uint16"), (65_537, "uint32"), (70_000, "uint32")])
def test_token_dtype(vocab, dtype):
    assert token_dtype(vocab).name == dtype


def test_uint32_path_round_trips(tmp_path):
    ids = np.array([0, 1, 65_535, 65_536, 69_999, 12], dtype=np.int64)
    entry = write_split(tmp_path, "train", ids, vocab_size=70_000)
    assert entry == {"file": "train.bin", "tokens": 6, "dtype": "uint32"}
    assert (tmp_path / "train.bin").stat().st_size == 6 * 4
    back = open_split(tmp_path, {"splits": {"train": entry}}, "train")
    assert back.dtype == np.uint32 and back.tolist() == ids.tolist()
    with pytest.raises(ValueError):
        write_split(tmp_path, "val", np.array([70_000]), vocab_size=70_000)


def test_uint16_would_truncate_so_big_ids_need_uint32(tmp_path):
    # the reason for the switch: 65_536 stored as uint16 reads back as 0
    assert np.array([65_536]).astype(np.uint16)[0] == 0
    entry = write_split(tmp_path, "val", np.array([65_535]), vocab_size=65_536)
    assert entry["dtype"] == "uint16"


# --------------------------------------------------------------------------- robustness (small texts)


def _small_text(tmp_path: Path, text: str, n: int = 60) -> Path:
    f = tmp_path / "small.txt"
    f.write_text(text * n, encoding="utf-8")
    return f


SAMPLE = "The quick brown fox jumps over the lazy dog. Sphinx of black quartz, judge my vow!\n"


def test_text_file_prepares_and_splits_by_val_fraction(tmp_path):
    f = _small_text(tmp_path, SAMPLE)
    cfg = DataConfig(dataset=f"text:{f}", vocab_size=300, block_size=16, val_fraction=0.25)
    p = prepare_dataset(cfg)
    n = len(SAMPLE) * 60
    assert p.manifest["splits"]["train"]["chars"] == int(n * 0.75)
    tok = p.tokenizer()
    assert tok.decode(p.train_tokens) + tok.decode(p.val_tokens) == SAMPLE * 60
    other = prepare_dataset(cfg.model_copy(update={"val_fraction": 0.5}))
    assert other.dir != p.dir  # val_fraction changes the tokens, so it is part of the key


def test_one_corpus_under_two_tokenizers_never_shares_a_cache(tmp_path):
    """The cache is keyed by the tokenizer (a run started with --init-from encodes with the source's):
    one text under a trained tokenizer and under two reused ones lands in three caches, each the text
    encoded by its own tokenizer, and preparing one never replaces or serves another."""
    from jepa_core.data.textfiles import split_stream
    from jepa_core.data.tokenizer import BPETokenizer

    f = _small_text(tmp_path, SAMPLE)
    base = DataConfig(dataset=f"text:{f}", vocab_size=300, block_size=16)
    trained = prepare_dataset(base)
    configs, tokenizers = {}, {}
    for name, vocab in (("a", 280), ("b", 320)):  # other merges: other ids for the same text
        tok = BPETokenizer.train([SAMPLE * 5], vocab)
        (tmp_path / f"{name}.json").write_text(tok.to_str())
        configs[name] = base.model_copy(update={"tokenizer": str(tmp_path / f"{name}.json")})
        tokenizers[name] = tok
    prepared = {name: prepare_dataset(c) for name, c in configs.items()}
    assert len({trained.dir, prepared["a"].dir, prepared["b"].dir}) == 3
    train_text, val_text = split_stream(SAMPLE * 60, base.val_fraction)
    for name in ("a", "b"):
        again = load_prepared(configs[name])  # after both were prepared: each still its own
        tok = tokenizers[name]
        assert again.dir == prepared[name].dir and again.vocab_size == tok.vocab_size
        assert np.array_equal(np.asarray(again.train_tokens), tok.encode(train_text))
        assert np.array_equal(np.asarray(again.val_tokens), tok.encode(val_text))
    assert len(prepared["a"].train_tokens) != len(prepared["b"].train_tokens)
    assert np.array_equal(np.asarray(load_prepared(base).train_tokens), np.asarray(trained.train_tokens))


def test_text_folder_concatenates_sorted_txt_files(tmp_path):
    d = tmp_path / "corpus"
    (d / "b").mkdir(parents=True)
    (d / "a.txt").write_text(SAMPLE * 30, encoding="utf-8")
    (d / "b" / "c.txt").write_text("no newline at the end" * 40, encoding="utf-8")
    (d / "empty.txt").write_text("", encoding="utf-8")
    (d / "ignored.md").write_text("not text", encoding="utf-8")
    p = prepare_dataset(DataConfig(dataset=f"text:{d}", vocab_size=300, block_size=16))
    tok = p.tokenizer()
    whole = tok.decode(p.train_tokens) + tok.decode(p.val_tokens)
    assert whole == SAMPLE * 30 + "no newline at the end" * 40


def test_edited_text_is_rebuilt(tmp_path):
    f = _small_text(tmp_path, SAMPLE)
    cfg = DataConfig(dataset=f"text:{f}", vocab_size=300, block_size=16)
    first = prepare_dataset(cfg)
    f.write_text(SAMPLE * 61, encoding="utf-8")
    with pytest.raises(CacheMiss, match="changed"):
        load_prepared(cfg)
    again = ensure_prepared(cfg)
    assert not again.reused and again.manifest["splits"]["train"]["chars"] > first.manifest["splits"]["train"]["chars"]


def test_truncated_cache_is_never_used(tmp_path):
    f = _small_text(tmp_path, SAMPLE)
    cfg = DataConfig(dataset=f"text:{f}", vocab_size=300, block_size=16)
    p = prepare_dataset(cfg)
    good = np.asarray(p.train_tokens).copy()
    with open(p.dir / "train.bin", "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(CacheMiss, match="incomplete"):
        load_prepared(cfg)
    rebuilt = ensure_prepared(cfg)
    assert not rebuilt.reused and np.array_equal(np.asarray(rebuilt.train_tokens), good)


def test_no_manifest_means_no_cache(tmp_path):
    f = _small_text(tmp_path, SAMPLE)
    cfg = DataConfig(dataset=f"text:{f}", vocab_size=300, block_size=16)
    p = prepare_dataset(cfg)
    (p.dir / "manifest.json").unlink()  # what a crash before the last write would leave
    with pytest.raises(CacheMiss):
        load_prepared(cfg)


def test_failed_prepare_leaves_nothing(tmp_path, monkeypatch):
    f = _small_text(tmp_path, SAMPLE)
    cfg = DataConfig(dataset=f"text:{f}", vocab_size=300, block_size=16)
    import jepa_core.data.prepare as prep

    def boom(*a, **k):
        raise RuntimeError("disk full")


    monkeypatch.setattr(prep, "install", boom)
    with pytest.raises(RuntimeError):
        prepare_dataset(cfg)
    data_root = cache_dir_for(cfg).parent
    assert list(data_root.iterdir()) == []  # the staging folder was removed


def test_force_rebuilds_in_place(tmp_path):
    f = _small_text(tmp_path, SAMPLE)
    cfg = DataConfig(dataset=f"text:{f}", vocab_size=300, block_size=16)
    a = prepare_dataset(cfg)
    b = prepare_dataset(cfg, force=True)
    assert not b.reused and b.dir == a.dir
    assert [p.name for p in a.dir.parent.iterdir()] == [a.dir.name]  # no leftover old/tmp folders
    assert read_manifest(b.dir)["created"] >= a.manifest["created"]


def test_registering_a_new_alias(tmp_path, monkeypatch, mirror):
    mirror2 = tmp_path / "mirror"
    (mirror2 / "pieces").mkdir(parents=True)
    body = (SAMPLE * 80).encode("utf-8")
    (mirror2 / "pieces" / "train.txt").write_bytes(body)
    (mirror2 / "pieces" / "val.txt").write_bytes(body[:2000])
    import hashlib

    spec = DatasetSpec(
        name="pieces_test",
        description="a test alias with its own val file",
        train=SourceFile("pieces/train.txt", sha256=hashlib.sha256(body).hexdigest(), size=len(body)),
        val=SourceFile("pieces/val.txt"),
    )
    register_dataset(spec)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_dataset(spec)
        monkeypatch.setenv("JEPA_DATA_MIRROR", str(mirror2))
        p = prepare_dataset(DataConfig(dataset="pieces_test", vocab_size=300, block_size=16))
        tok = p.tokenizer()
        assert tok.decode(p.train_tokens) == body.decode()
        assert tok.decode(p.val_tokens) == body[:2000].decode()
        assert p.manifest["val_fraction"] is None and "val_fraction" not in p.manifest["settings"]
        assert json.loads(json.dumps(p.manifest)) == p.manifest
    finally:
        unregister_dataset("pieces_test")
    with pytest.raises(DataError, match="Unknown dataset"):
        load_prepared(DataConfig(dataset="pieces_test"))
