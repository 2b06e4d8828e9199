"""`jepa sample`: text from a trained run, deterministic with a seed, streamed, and clean errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jepa_core.errors import CheckpointError, ConfigError
from jepa_core.tools.sample import encode_prompt, load_for_sampling, sample_text, stream_sample
from cli_helpers import cli  # noqa: F401  (fixture)
from train_helpers import finished_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run of the small shape, trained for 8 steps on CPU (a few seconds), with checkpoints."""
    torch.set_num_threads(1)
    return finished_run(tmp_path_factory.mktemp("sample"), "small", 'train.sample_prompt="ROMEO:"')


def jepa(*args: str, stdin: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess (slow: it imports torch); most tests use `cli` instead."""
    env = dict(os.environ, COLUMNS="200", JEPA_DEBUG="")
    return subprocess.run([sys.executable, "-m", "jepa_cli", *args], capture_output=True, text=True, timeout=timeout, env=env, input=stdin)


def test_same_seed_same_text_other_seed_other_text(trained):
    sm = load_for_sampling(trained, "cpu")
    a = sample_text(sm, "ROMEO:", 24, seed=1)
    b = sample_text(sm, "ROMEO:", 24, seed=1)
    c = sample_text(sm, "ROMEO:", 24, seed=2)
    assert a == b and a != c
    assert len(sm.tokenizer.encode(a)) >= 12  # 24 tokens of text (re-encoding may merge a few)


def test_streamed_pieces_are_exactly_one_generate_call(trained):
    """The stream is `JepaLM.generate` for all tokens at once, cut into pieces: nothing lost, nothing added."""
    sm = load_for_sampling(trained, "cpu")
    ids = encode_prompt(sm, "KING:")
    pieces = list(stream_sample(sm, ids, 30, temperature=0.9, top_k=20, seed=7))
    assert len(pieces) > 1  # streamed, not returned in one go
    gen = torch.Generator(device="cpu").manual_seed(7)
    with torch.inference_mode():
        out = sm.model.generate(torch.tensor([ids]), 30, temperature=0.9, top_k=20, generator=gen)
    assert "".join(pieces) == sm.tokenizer.decode(out[0, len(ids) :].tolist())


def test_greedy_ignores_the_seed(trained):
    sm = load_for_sampling(trained, "cpu")
    assert sample_text(sm, "ROMEO:", 12, temperature=0, seed=1) == sample_text(sm, "ROMEO:", 12, temperature=0, seed=99)


def test_loads_from_every_kind_of_path(trained):
    ckpt = trained / "checkpoints"
    weights = sorted(ckpt.glob("step-*[0-9].safetensors"))[-1]
    state = weights.with_name(weights.stem + ".state.safetensors")
    texts = {sample_text(load_for_sampling(p, "cpu"), "A", 8, seed=3) for p in (trained, ckpt, weights, state)}
    assert len(texts) == 1  # run dir, checkpoints/, weights and state file name the same checkpoint
    assert load_for_sampling(trained, "cpu").step == 8


def test_bad_arguments_are_user_errors(trained):
    sm = load_for_sampling(trained, "cpu")
    ids = encode_prompt(sm, "A")
    for kw in ({"temperature": -1.0}, {"top_k": -3}):
        with pytest.raises(ConfigError):
            list(stream_sample(sm, ids, 5, **kw))
    with pytest.raises(ConfigError):
        list(stream_sample(sm, ids, 0))
    with pytest.raises(ConfigError, match="no tokens"):
        encode_prompt(sm, "")


def test_bad_checkpoints_are_user_errors(trained, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_for_sampling(tmp_path / "nope", "cpu")
    pickle = tmp_path / "model.safetensors"
    pickle.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(CheckpointError):
        load_for_sampling(pickle, "cpu")
    # a run whose tokenizer.json is not the one its checkpoints were trained with
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "tokenizer.json").write_text((copy / "tokenizer.json").read_text().replace('"<unk>"', '"<UNK>"', 1))
    with pytest.raises(CheckpointError, match="not the tokenizer"):
        load_for_sampling(copy, "cpu")
    (copy / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="No tokenizer.json"):
        load_for_sampling(copy, "cpu")


def test_cli_streams_repeatably_with_a_seed(trained, cli):
    a = jepa("sample", str(trained), "--prompt", "ROMEO:", "--tokens", "16", "--seed", "5", "--device", "cpu")  # the real entry point
    b = cli("sample", str(trained), "--prompt", "ROMEO:", "--tokens", "16", "--seed", "5", "--device", "cpu")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("ROMEO:")
    assert "seed 5" in a.stderr and "step 8" in a.stderr  # what was loaded goes to stderr, not into the text
    text = sample_text(load_for_sampling(trained, "cpu"), "ROMEO:", 16, seed=5)
    assert a.stdout.rstrip("\n") == ("ROMEO:" + text).rstrip("\n")


def test_cli_prompt_from_stdin_and_default_prompt(trained, cli):
    r = cli("sample", str(trained), "--prompt", "-", "--tokens", "4", "--seed", "1", "--device", "cpu", stdin="KING:")
    assert r.returncode == 0 and r.stdout.startswith("KING:")
    r = cli("sample", str(trained), "--tokens", "4", "--seed", "1", "--device", "cpu")
    assert r.returncode == 0 and r.stdout.startswith("ROMEO:")  # the run's train.sample_prompt
    r = cli("sample", str(trained), "--prompt", "A " * 40, "--tokens", "2", "--seed", "1", "--device", "cpu")
    assert r.returncode == 0 and "sees only its last 32" in " ".join(r.stderr.split())  # block_size 32


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--tokens", "0"], "--tokens"),
        (["--temperature", "-1"], "--temperature"),
        (["--top-k", "-1"], "--top-k"),
        (["--tokens", "many"], "--tokens"),
        (["--tokens", "100000000000000000000"], "between 1 and 1,000,000"),
    ],
)
def test_cli_bad_options_exit_2(trained, cli, args, fragment):
    r = cli("sample", str(trained), *args)
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr


def test_tokens_are_bounded_at_a_million():
    """`--tokens 100000000000000000000` ran until killed; the bound is said in --help, repeated there
    without torch (commands/sample.py) and equal to the core's."""
    from jepa_cli.commands import sample as command
    from jepa_core.tools.sample import MAX_TOKENS, check_sampling_args

    assert MAX_TOKENS == command.MAX_TOKENS == 1_000_000
    check_sampling_args(1, 0.8, 50)
    check_sampling_args(1_000_000, 0.8, 50)
    for n in (1_000_001, 10**20, 0, -3):
        with pytest.raises(ConfigError, match="between 1 and 1,000,000"):
            check_sampling_args(n, 0.8, 50)


def test_cli_bad_checkpoint_exits_2(tmp_path, cli):
    r = cli("sample", str(tmp_path / "missing"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "x.safetensors").write_text("not a checkpoint")
    r = cli("sample", str(tmp_path / "x.safetensors"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_sampling_is_repeatable(trained):
    sm = load_for_sampling(trained, "cuda")
    assert sm.device.type == "cuda"
    assert sample_text(sm, "ROMEO:", 16, seed=4) == sample_text(sm, "ROMEO:", 16, seed=4)


# ---------------------------------------------------------------- prompts that are not UTF-8, or huge (issue 26)

ISSUE_BYTES = b"ROMEO:\xff\xfe abc"


def test_prompt_text_replaces_invalid_bytes_and_says_so():
    from jepa_core.tools.sample import prompt_text

    assert prompt_text("ROMEO: caf\u00e9 \ufffd") == ("ROMEO: caf\u00e9 \ufffd", None)  # valid text, a real U+FFFD included
    for raw in (ISSUE_BYTES, ISSUE_BYTES.decode("utf-8", "surrogateescape")):  # stdin bytes; argv as Python decodes it
        text, note = prompt_text(raw)
        assert text == "ROMEO:\ufffd\ufffd abc"
        assert note is not None and "not valid UTF-8" in note and "2 invalid byte sequences" in note
    text, note = prompt_text("a\ud800b")  # a lone surrogate no decoder made
    assert "\ud800" not in text and text.startswith("a") and text.endswith("b") and note


def test_undecodable_prompt_bytes_sample_with_a_note(trained, cli, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(ISSUE_BYTES), encoding="utf-8", errors="strict"))
    r = cli("sample", str(trained), "--prompt", "-", "--tokens", "3", "--seed", "1", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO:\ufffd\ufffd abc")  # what the model was given, shown as it was given
    assert "note:" in r.stderr and "not valid UTF-8" in r.stderr
    r = cli("sample", str(trained), "--prompt", ISSUE_BYTES.decode("utf-8", "surrogateescape"), "--tokens", "3", "--seed", "1", "--device", "cpu")
    assert r.returncode == 0 and r.stdout.startswith("ROMEO:\ufffd\ufffd abc") and "not valid UTF-8" in r.stderr


def test_huge_prompt_is_cropped_to_the_context(trained):
    """Only the last block_size tokens reach the model (generate crops too), so the text is the same as from those."""
    sm = load_for_sampling(trained, "cpu")
    ids = encode_prompt(sm, "To be, or not to be, that is the question. " * 400)
    assert len(ids) > 10 * sm.block_size
    tail = ids[-sm.block_size :]
    assert "".join(stream_sample(sm, ids, 6, seed=2)) == "".join(stream_sample(sm, tail, 6, seed=2))


def test_seed_beyond_64_bits_is_a_user_error(trained, cli):
    r = cli("sample", str(trained), "--seed", str(2**64), "--tokens", "2", "--device", "cpu")
    assert r.returncode == 2 and "--seed" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_issue_26_bad_prompts_through_the_real_entry_point(trained):
    """The three reports of issue 26: the bytes on stdin, the same bytes as --prompt, 1 MB of random bytes on stdin.

    Slow (about 40 s on 2 cores): three interpreters import torch, and encoding the megabyte takes several seconds.
    """
    import random

    env = dict(os.environ, JEPA_DEBUG="", PYTHONWARNINGS="ignore")
    base = [sys.executable, "-m", "jepa_cli", "sample", str(trained), "--tokens", "3", "--seed", "1", "--device", "cpu"]
    junk = random.Random(26).randbytes(1 << 20)
    for argv, stdin in ((["--prompt", "-"], ISSUE_BYTES), ([b"--prompt", ISSUE_BYTES], None), (["--prompt", "-"], junk)):
        r = subprocess.run(base + argv, input=stdin, capture_output=True, timeout=180, env=env)
        err = r.stderr.decode("utf-8", "replace")
        assert r.returncode == 0, err[-2000:]
        assert "Traceback" not in err and "not valid UTF-8" in err
    assert "sees only its last 32" in " ".join(err.split())  # the megabyte: cropped to the context, with a note
