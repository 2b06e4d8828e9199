"""Text from a trained checkpoint: load its weights, config and tokenizer, then sample.

`load_for_sampling(path)` takes what `jepa inspect` takes (a run directory, its
checkpoints/ folder, a weights or state file, `RUN:best`, `RUN:step-N`) and rebuilds the model
from the config stored in the checkpoint, so no profile is needed. The tokenizer is
the run's own `tokenizer.json`, checked against the hash the checkpoint recorded.

`stream_sample` yields the continuation piece by piece as it is generated. Each
piece comes from `JepaLM.generate` asked for one token with the same generator, so
the text is exactly what one `generate` call for all the tokens would give (a test
holds it to that), and a seed makes it repeatable on a given device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from jepa_core import rundir as rd
from jepa_core.config import Config, config_from_toml
from jepa_core.errors import CheckpointError, ConfigError

DEFAULT_TOKENS = 200
#: At most this many tokens a call: hours of CPU and megabytes of text already, where a typo's
#: 10**20 would run until killed (and a number past 64 bits overflow deep in torch).
MAX_TOKENS = 1_000_000
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 50


@dataclass
class SamplingModel:
    model: Any  # JepaLM, in eval mode, on `device`
    tokenizer: Any  # BPETokenizer
    cfg: Config
    ref: rd.CheckpointRef
    device: torch.device
    step: int
    metrics: dict[str, Any] = field(default_factory=dict)  # the checkpoint's last eval
    note: str | None = None  # how a directory was resolved to a file
    # said before sampling: a fallback past a checkpoint that failed verification, or one used without a digest check
    integrity: list[str] = field(default_factory=list)

    @property
    def block_size(self) -> int:
        return self.cfg.data.block_size


def _device(spec: str) -> torch.device:
    from jepa_core.train.device import resolve_device

    try:
        return resolve_device(spec)
    except ConfigError as e:
        # resolve_device speaks of train.device; here the choice is --device
        raise ConfigError(e.message.replace("`train.device`", "--device"), hint="Use --device auto, cpu, cuda, cuda:N or mps.") from None


def load_for_sampling(path: str | Path, device: str = "auto") -> SamplingModel:
    """The model and tokenizer of a checkpoint, ready to sample; CheckpointError on anything unusable."""
    import json

    from jepa_core.data.tokenizer import BPETokenizer
    from jepa_core.model import JepaLM
    from jepa_core.train.checkpoint import WEIGHTS_FORMAT, load_weights_into, read_metadata

    ref, note = rd.resolve_checkpoint(path)
    if not ref.weights.is_file():
        raise CheckpointError(
            f"{ref.weights} does not exist (the state file {ref.state.name} has no weights file next to it).",
            hint="Pass a run directory or a step-*.safetensors weights file; `jepa inspect RUN` lists what a run holds.",
        )
    # the weights' header and tensor bytes, checked (the state file is not needed to sample)
    ref, note = rd.verified_checkpoint(path, state=False)
    integrity = [n for n in (ref.note, rd.unverified_note(ref)) if n]
    if ref.note:  # a fallback: its note tells the whole story ("latest.json names step 6, but ...")
        note = None
    meta = read_metadata(ref.weights)
    if meta.get("format") != WEIGHTS_FORMAT or "config" not in meta:
        kind = meta.get("kind") or meta.get("format") or "no jepa metadata"
        raise CheckpointError(
            f"{ref.weights} is not a jepa weights checkpoint ({kind}).",
            hint="Pass a run directory or a step-*.safetensors file written by `jepa train`; `jepa inspect FILE` shows what a file holds.",
        )
    cfg = config_from_toml(meta["config"], source=str(ref.weights))
    tok_path = rd.checkpoint_tokenizer(ref, meta.get("tokenizer_sha256"))
    tokenizer = BPETokenizer.from_file(tok_path)
    dev = _device(device)
    with torch.device("meta"):
        model = JepaLM.from_config(cfg, tokenizer.vocab_size)
    # built on the meta device (no random init of weights about to be replaced), then given real storage
    model = model.to_empty(device=dev)
    model.reset_rope_tables()
    load_weights_into(model, ref.weights)
    model.eval()
    try:
        metrics = json.loads(meta.get("metrics") or "{}")
    except ValueError:
        metrics = {}
    step = int(meta["step"]) if str(meta.get("step", "")).isdigit() else ref.step
    return SamplingModel(model, tokenizer, cfg, ref, dev, step, metrics if isinstance(metrics, dict) else {}, note, integrity)


def check_sampling_args(tokens: int, temperature: float, top_k: int | None, seed: int | None = None) -> None:
    if not 1 <= tokens <= MAX_TOKENS:
        raise ConfigError(f"--tokens must be between 1 and {MAX_TOKENS:,}, got {tokens:,}.",
                          hint=f"For example --tokens {DEFAULT_TOKENS}; for more text, run it again with another --seed or a new --prompt.")
    if not temperature >= 0 or temperature == float("inf"):
        raise ConfigError(f"--temperature must be a number >= 0, got {temperature}.", hint="0 is greedy (always the likeliest token); 0.8 is a usual choice.")
    if top_k is not None and top_k < 0:
        raise ConfigError(f"--top-k must be >= 0, got {top_k}.", hint="0 samples from the whole vocabulary; 50 is a usual choice.")
    # torch.Generator.manual_seed takes a 64-bit value; beyond it, an OverflowError deep in torch
    if seed is not None and not 0 <= seed < 2**64:
        raise ConfigError(f"--seed must be between 0 and 2**64 - 1, got {seed}.", hint="Any smaller whole number, e.g. --seed 1.")


def prompt_text(raw: str | bytes) -> tuple[str, str | None]:
    """`raw` as text the tokenizer accepts, and a note when some of it was not UTF-8.

    Bytes that are not UTF-8 (a Latin-1 file piped in, a binary blob) reach us as bytes
    from stdin, or from argv as lone surrogates (Python's surrogateescape); the tokenizer
    takes neither. Each invalid sequence becomes U+FFFD, as a UTF-8 terminal shows it:
    refusing would make `cat old.txt | jepa sample RUN --prompt -` fail over a few accented
    letters, while the replacement keeps the rest of the prompt and the note says what changed.
    """
    if isinstance(raw, str):
        try:
            raw.encode("utf-8")
            return raw, None
        except UnicodeEncodeError:
            pass
        try:
            data = raw.encode("utf-8", "surrogateescape")  # the bytes argv or stdin really held
        except UnicodeEncodeError:  # a surrogate that no decoder produced: invalid either way
            data = raw.encode("utf-8", "surrogatepass")
    else:
        data = bytes(raw)
    text = data.decode("utf-8", errors="replace")
    replaced = text.count("\ufffd") - data.count("\ufffd".encode())
    if not replaced:
        return text, None
    seqs = "sequence" if replaced == 1 else "sequences"
    return text, f"the prompt is not valid UTF-8: {replaced:,} invalid byte {seqs} replaced by U+FFFD."


def encode_prompt(sm: SamplingModel, prompt: str) -> list[int]:
    ids = sm.tokenizer.encode(prompt)
    if not ids:
        raise ConfigError(
            f"The prompt {prompt!r} encodes to no tokens; the model needs at least one to continue from.",
            hint='Give some text, e.g. --prompt "ROMEO:", or leave --prompt out to start from a newline.',
        )
    return ids


def stream_sample(
    sm: SamplingModel,
    prompt_ids: list[int],
    tokens: int,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int | None = DEFAULT_TOP_K,
    seed: int = 0,
) -> Iterator[str]:
    """Yield the continuation of `prompt_ids` as text, a piece per generated token (or a few).

    Pieces are cut where the decoded text is stable: a byte-level token can end in
    the middle of a UTF-8 character, so text ending in U+FFFD is held back until the
    next token completes it.
    """
    check_sampling_args(tokens, temperature, top_k, seed)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    # generate crops its context to the last max_seq_len tokens anyway; cropping here keeps a
    # huge prompt (a megabyte piped in) from being copied on every generated token
    keep = sm.model.transformer.max_seq_len
    ids = torch.tensor([prompt_ids[-keep:]], dtype=torch.long, device=sm.device)
    n0 = ids.shape[1]
    k = top_k if top_k else None
    shown = ""
    with torch.inference_mode():
        for i in range(tokens):
            ids = sm.model.generate(ids, 1, temperature=temperature, top_k=k, generator=gen)
            text = sm.tokenizer.decode(ids[0, n0:].tolist())
            if text.endswith("\ufffd") and i < tokens - 1:
                continue
            # byte-level decoding is prefix-stable once a trailing partial character is held back
            piece, shown = text[len(shown) :], text
            if piece:
                yield piece


def sample_text(sm: SamplingModel, prompt: str, tokens: int, **kw: Any) -> str:
    """The whole continuation of `prompt` as one string (tests, scripts)."""
    return "".join(stream_sample(sm, encode_prompt(sm, prompt), tokens, **kw))
