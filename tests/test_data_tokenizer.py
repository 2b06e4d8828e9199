"""Byte-level BPE: exact round trips, byte accounting, seam-free chunked encoding."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from jepa_core.data import MIN_VOCAB, SPECIAL_TOKENS, BPETokenizer, check_vocab_size
from jepa_core.data.tokenizer import split_for_encoding
from jepa_core.errors import DataError

NON_ASCII = "naïve café — Ωμέγα, 日本語のテキスト, emoji 😀👍🏽, Zürich  \t tabs\n\n  indented\r\nCRLF line\n"


@pytest.fixture(scope="module")
def shakespeare(mirror) -> str:
    return (mirror / "tiny_shakespeare" / "input.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tok(shakespeare) -> BPETokenizer:
    # a slice keeps training fast; 512 merges' worth of vocabulary is plenty for these checks
    return BPETokenizer.train(shakespeare[:200_000], 512)


def test_specials_come_first_and_vocab_is_as_asked(tok):
    assert [tok.token_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tok.unk_id, tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.vocab_size == 512


@pytest.mark.parametrize(
    "text",
    [
        "First Citizen:\nBefore we proceed any further, hear me speak.\n",
        NON_ASCII,
        "   leading and trailing spaces   ",
        "\n\n\n",
        "a",
        "x" * 3000 + " " + "y" * 17,
        "".join(chr(c) for c in range(0x20, 0x7F)),
    ],
)
def test_round_trip_is_exact(tok, text):
    assert unicodedata.normalize("NFKC", text) == text  # NFKC-stable input, so exactness is the claim
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.unk_id not in ids  # byte level: nothing is unknown


def test_nfkc_is_applied(tok):
    # the ligature "ﬁ" (U+FB01) is compatibility-equivalent to "fi"
    assert tok.decode(tok.encode("ﬁne")) == "fine"


def test_lowercase_option(shakespeare):
    lower = BPETokenizer.train(shakespeare[:50_000], 300, lowercase=True)
    assert lower.decode(lower.encode("HeLLo WORLD Ä")) == "hello world ä"


def test_token_byte_lengths_count_utf8_bytes(tok):
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (tok.vocab_size,)
    assert lengths[:4].tolist() == [0, 0, 0, 0]
    assert (lengths[4:] >= 1).all()
    # the 256 single-byte tokens follow the specials and each decode to exactly one byte
    assert (lengths[4:260] == 1).all()
    ids = tok.encode(NON_ASCII)
    assert int(lengths[ids].sum()) == len(NON_ASCII.encode("utf-8"))
    # a window of ASCII tokens cuts no character, so its bytes are its decoded length
    window = tok.encode("First Citizen:\nBefore we proceed any further")[2:9]
    assert int(lengths[window].sum()) == len(tok.decode(window).encode("utf-8")) > 7


def test_special_ids_decode_to_nothing(tok):
    ids = tok.encode("abc")
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == "abc"


def test_decode_accepts_arrays(tok):
    ids = tok.encode("to be or not to be")
    assert tok.decode(np.asarray(ids, dtype=np.uint16)) == "to be or not to be"


def test_chunked_encoding_equals_whole_text(tok, shakespeare):
    text = shakespeare[200_000:420_000]
    pieces = split_for_encoding(text, target=4096)
    assert len(pieces) > 20 and "".join(pieces) == text
    whole = tok.encode(text)
    assert tok.encode_stream(pieces).tolist() == whole
    assert tok.encode_stream(text).tolist() == tok.encode(text)


def test_chunked_encoding_on_awkward_whitespace(tok):
    # whitespace around newlines is where a naive cut changes the GPT-2 pre-tokenisation
    text = ("word \n  next\n\nthird  \nX\n \n y\n" * 400)[:-1]
    pieces = split_for_encoding(text, target=64)
    assert "".join(pieces) == text and len(pieces) > 10
    assert tok.encode_stream(pieces).tolist() == tok.encode(text)


def test_split_without_clean_breaks_still_round_trips(tok):
    text = "\r\n".join(["some words here"] * 2000)  # CRLF: no safe cut points, falls back to spaces
    pieces = split_for_encoding(text, target=500)
    assert "".join(pieces) == text and len(pieces) > 5
    assert tok.decode(tok.encode_stream(pieces)) == text


def test_training_is_deterministic(shakespeare):
    a = BPETokenizer.train(shakespeare[:60_000], 400)
    b = BPETokenizer.train(shakespeare[:60_000], 400)
    assert a.to_str() == b.to_str()
    assert BPETokenizer.from_str(a.to_str()).encode("Romeo") == a.encode("Romeo")


def test_vocab_too_small_is_a_data_error():
    assert MIN_VOCAB == 260
    check_vocab_size(260)
    with pytest.raises(DataError, match="260"):
        check_vocab_size(259)
    with pytest.raises(DataError, match="special tokens"):
        BPETokenizer.train("some text", 100)
