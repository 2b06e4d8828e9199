"""`data.val_text`: a text: dataset trained on one file and evaluated on another (the whole of it)."""

from __future__ import annotations

import numpy as np
import pytest

from jepa_core.config import load_config
from jepa_core.data import prepare_dataset as prepare
from jepa_core.data.prepare import cache_dir_for
from jepa_core.errors import ConfigError, DataError

from train_helpers import _use_home, home  # noqa: F401 (fixtures)


def _cfg(train_file, *extra):
    return load_config("tiny", [f'data.dataset="text:{train_file}"', "data.vocab_size=300", "data.block_size=64", *extra])


@pytest.fixture
def corpora(tmp_path):
    train = tmp_path / "train.txt"
    val = tmp_path / "val.txt"
    train.write_text("the first corpus, used for training only. " * 300)
    val.write_text("A second text, held out whole: quite other words here! " * 120)
    return train, val


def test_val_text_is_the_whole_validation_split_and_train_is_the_whole_file(corpora):
    train, val = corpora
    data = prepare(_cfg(train, f'data.val_text="{val}"').data)
    tok = data.tokenizer()
    # the reference: the tokenizer applied to each whole file (no tail held out of the train text)
    assert np.array_equal(np.asarray(data.val_tokens), np.asarray(tok.encode(val.read_text())))
    assert np.array_equal(np.asarray(data.train_tokens), np.asarray(tok.encode(train.read_text())))
    assert data.val_bytes == len(val.read_bytes())


def test_val_text_has_its_own_cache_and_a_changed_val_file_is_prepared_again(corpora):
    train, val = corpora
    with_val = _cfg(train, f'data.val_text="{val}"').data
    plain = _cfg(train).data
    assert cache_dir_for(with_val) != cache_dir_for(plain)
    first = prepare(with_val)
    assert prepare(with_val).reused
    val.write_text("Now the held-out text says something else entirely. " * 100)
    again = prepare(with_val)
    assert not again.reused
    assert len(again.val_tokens) != len(first.val_tokens)


def test_val_text_needs_a_text_dataset(tmp_path):
    val = tmp_path / "v.txt"
    val.write_text("x" * 1000)
    with pytest.raises(DataError, match="data.val_text applies to text: datasets only"):
        prepare(load_config("tiny", [f'data.val_text="{val}"']).data)


def test_val_text_missing_file_is_a_clean_error(corpora, tmp_path):
    train, _ = corpora
    with pytest.raises((DataError, ConfigError)):
        prepare(_cfg(train, f'data.val_text="{tmp_path / "nope.txt"}"').data)
