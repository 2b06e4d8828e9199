"""Byte-level BPE over Hugging Face `tokenizers`: NFKC (+ optional lowercase), 4 specials.

Byte-level means every byte has a token, so any text encodes without `<unk>`
and, when not lowercased, decodes back exactly (for text already in NFKC form,
which NFKC leaves unchanged). No prefix space is added, for the same reason.

Long texts are encoded in pieces with `encode_batch` (parallel in Rust). The
pieces are cut only at a newline with a non-space character on both sides:
there the GPT-2 pre-tokenizer regex splits anyway, so the pieces' tokens are
exactly the tokens of the whole text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("<unk>", "<pad>", "<bos>", "<eos>")
MIN_VOCAB = len(SPECIAL_TOKENS) + 256  # every byte needs a token
TOKENIZER_KIND = "bytelevel-bpe/nfkc/v1"  # bump when the pipeline changes: it is part of cache keys

_SAFE_BREAK = re.compile(r"\S\n(?=\S)")


def split_for_encoding(text: str, target: int = 1 << 15) -> list[str]:
    """Cut `text` into pieces of about `target` characters whose tokens concatenate to the whole's."""
    pieces: list[str] = []
    start, n = 0, len(text)
    while n - start > target:
        window_end = min(n, start + 4 * target)
        m = _SAFE_BREAK.search(text, start + target, window_end)
        if m is not None:
            cut = m.end()
        else:
            # no clean line break nearby (one huge line, or \r\n endings): cut before a space.
            # Decoding stays exact; only the tokens at the seam may differ from one-call encoding.
            cut = text.rfind(" ", start + 1, window_end)
            if cut <= start:
                cut = window_end
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def check_vocab_size(vocab_size: int) -> None:
    from ..errors import DataError

    if vocab_size < MIN_VOCAB:
        raise DataError(
            f"Vocabulary size {vocab_size} is too small: byte-level BPE needs {len(SPECIAL_TOKENS)} special tokens "
            f"({' '.join(SPECIAL_TOKENS)}) + 256 byte tokens = {MIN_VOCAB} before any merge.",
            hint=f"Use --vocab-size {MIN_VOCAB} or more (1024 is a good small default).",
        )


class BPETokenizer:
    """A trained byte-level BPE tokenizer (wraps `tokenizers.Tokenizer`)."""

    def __init__(self, tok) -> None:
        self._tok = tok
        self._byte_lengths: np.ndarray | None = None

    # ------------------------------------------------------------ construction

    @staticmethod
    def _pipeline(lowercase: bool):
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        norms = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        tok.normalizer = normalizers.Sequence(norms)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        return tok

    @classmethod
    def train(
        cls,
        text: str | Iterable[str],
        vocab_size: int,
        *,
        lowercase: bool = False,
    ) -> "BPETokenizer":
        """Train on `text` (one string, or pieces already cut with `split_for_encoding`)."""
        from tokenizers import pre_tokenizers, trainers

        check_vocab_size(vocab_size)
        pieces = split_for_encoding(text) if isinstance(text, str) else list(text)
        tok = cls._pipeline(lowercase)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(pieces, trainer, length=len(pieces))
        return cls(tok)

    @classmethod
    def from_str(cls, s: str) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(s))

    @classmethod
    def from_file(cls, path: str | Path) -> "BPETokenizer":
        from ..errors import DataError

        try:
            return cls.from_str(Path(path).read_text(encoding="utf-8"))
        except Exception as e:  # OSError, UnicodeDecodeError, or tokenizers' plain Exception on bad JSON
            raise DataError(f"Cannot load tokenizer {path}: {e}.", hint="Re-run `jepa data prepare` to rebuild it.") from None

    def to_str(self) -> str:
        return self._tok.to_str()

    def sha256(self) -> str:
        return hashlib.sha256(self.to_str().encode("utf-8")).hexdigest()

    @property
    def inner(self):
        """The wrapped `tokenizers.Tokenizer`."""
        return self._tok

    # ------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise KeyError(token)
        return i

    @property
    def unk_id(self) -> int:
        return self.token_id("<unk>")

    @property
    def pad_id(self) -> int:
        return self.token_id("<pad>")

    @property
    def bos_id(self) -> int:
        return self.token_id("<bos>")

    @property
    def eos_id(self) -> int:
        return self.token_id("<eos>")

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes each token id decodes to (0 for the specials), int64 of length vocab_size.

        A byte-level token's string has one character per byte, so its length is
        its byte count; summing this over any window of ids gives the bytes of
        that window's text, which is what bits per byte divides by.
        """
        if self._byte_lengths is None:
            lengths = np.zeros(self.vocab_size, dtype=np.int64)
            special = set(SPECIAL_TOKENS)
            # a reused tokenizer (data.tokenizer) may bring its own specials (<|endoftext|>) and added
            # tokens, whose strings are plain text rather than one character per byte
            added = self._tok.get_added_tokens_decoder()
            special |= {a.content for a in added.values() if a.special}
            plain = {a.content for a in added.values() if not a.special}
            for tok, i in self._tok.get_vocab(with_added_tokens=True).items():
                lengths[i] = 0 if tok in special else len(tok.encode("utf-8")) if tok in plain else len(tok)
            lengths.setflags(write=False)
            self._byte_lengths = lengths
        return self._byte_lengths

    # ------------------------------------------------------------ encode / decode

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_stream(
        self,
        text: str | Sequence[str],
        *,
        dtype=np.int64,
        progress: Callable[[int, int], None] | None = None,
        group: int = 16,
    ) -> np.ndarray:
        """Token ids of a long text as one array, encoded in parallel pieces."""
        pieces = split_for_encoding(text) if isinstance(text, str) else list(text)
        out: list[np.ndarray] = []
        # batches of `group` pieces: parallel enough for a few cores, frequent enough for a progress bar
        step = max(group, len(pieces) // 20 + 1)
        for i in range(0, len(pieces), step):
            for ids in self.encode_batch(pieces[i : i + step]):
                out.append(np.asarray(ids, dtype=dtype))
            if progress:
                progress(min(i + step, len(pieces)), len(pieces))
        return np.concatenate(out) if out else np.zeros(0, dtype=dtype)

    def decode(self, ids) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)
