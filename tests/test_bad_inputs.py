"""The bad-input corpus: every input a user got wrong that once ended in a traceback, a wrong
exit code or a silent acceptance, and the ones like it. Each must end with exit code 2 and one
`error:` paragraph (the message, then its hint), and no traceback.

One table, grown with every fault-injection pass (issues 16, 17 and 26 so far). Rows run through
the real entry point in this process (`cli_helpers.cli`), each in a fresh temporary folder with
its own copy of one small finished run; a read-only folder needs a real read-only mount (root
ignores chmod), so that row runs in a subprocess in a private mount namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jepa_core import rundir as rd
from jepa_core.train.loop import train

from cli_helpers import cli  # noqa: F401 (fixture)
from train_helpers import _use_home, home, small_config, small_overrides, spoil_tensor_bytes, text  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Ctx:
    tmp: Path
    run: Path  # a copy of a small finished run (checkpoints at steps 2 and 4), the row's to spoil
    text: Path

    def sets(self, *extra: str) -> list[str]:
        """The small run's shape as --set arguments; a new run trains 2 steps."""
        sets = small_overrides(self.text, "train.max_steps=2", "train.eval_every=2", "train.checkpoint_every=2",
                               "train.sample_tokens=0", f'train.out_dir="{self.tmp / "runs"}"', *extra)
        return [w for s in sets for w in ("--set", s)]


@dataclass
class Bad:
    id: str
    argv: Callable[[Ctx], list]  # after `jepa`
    needle: str | Callable[[Ctx], str] = ""  # in the error paragraph
    stdin: Callable[[Ctx], str] | None = None
    env: Callable[[Ctx], dict[str, str]] | None = None
    mode: str = "cli"  # "cli": in this process; "ro_mount": the run's folder mounted read-only, in a subprocess

    def param(self):
        marks = []
        if self.mode == "ro_mount":
            marks.append(pytest.mark.slow)
        return pytest.param(self, id=self.id, marks=marks)


def _file(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _home_is_a_file(ctx: Ctx) -> dict[str, str]:
    return {"JEPA_HOME": str(_file(ctx.tmp / "home-file"))}


def _foreign_safetensors(ctx: Ctx) -> Path:
    import torch
    from safetensors.torch import save_file

    path = ctx.tmp / "model.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    return path


def _cut_short(ctx: Ctx) -> Path:
    path = ctx.run / "checkpoints" / rd.weights_name(4)
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _spoiled(ctx: Ctx, step: int) -> Path:
    """The weights file of `step`, 64 bytes changed inside one of its tensors (the header intact)."""
    path = ctx.run / "checkpoints" / rd.weights_name(step)
    spoil_tensor_bytes(path)
    return path


def _all_spoiled(ctx: Ctx) -> Path:
    """The run, both of its checkpoints spoiled as `_spoiled` does."""
    for step in (2, 4):
        _spoiled(ctx, step)
    return ctx.run


def _early_run_elsewhere(ctx: Ctx) -> Path:
    """A run under another out_dir that stopped before its first checkpoint."""
    from jepa_cli.tui.fakerun import write_fake_run

    return write_fake_run(ctx.tmp / "elsewhere" / "tiny-early", steps=50, finished=False, overrides=('train.out_dir="elsewhere"',))


def _gpt2_dir(ctx: Ctx) -> Path:
    """A Hugging Face folder in GPT-2 layout, as transformers saves one."""
    pytest.importorskip("transformers")
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(ctx.tmp / "gpt2")
    return ctx.tmp / "gpt2"


def _llama_dir(ctx: Ctx, tokenizer_vocab: int | None = None) -> Path:
    """A random Llama saved by transformers (vocabulary 300), with a tokenizer of `tokenizer_vocab` tokens."""
    pytest.importorskip("transformers")
    from hf_helpers import save_llama

    from jepa_core.data.tokenizer import BPETokenizer

    out = save_llama(ctx.tmp / "llama")
    if tokenizer_vocab is not None:
        (out / "tokenizer.json").write_text(BPETokenizer.train([ctx.text.read_text()[:20000]], tokenizer_vocab).to_str())
    return out


def _pickled_only(ctx: Ctx) -> Path:
    out = ctx.tmp / "pickled"
    _file(out / "config.json", b'{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 300, "hidden_size": 32, '
          b'"intermediate_size": 80, "num_hidden_layers": 2, "num_attention_heads": 2}')
    _file(out / "pytorch_model.bin", b"PK\x03\x04 a torch.save zip")
    return out


# the sets that fit the random Llama of `_llama_dir` (what the shape error's hint prints)
LLAMA_SETS = ["--set", "model.ff_multiplier=2.5", "--set", "model.ff_round=1", "--set", "model.rope_base=500.0", "--set", "model.logit_bias=false"]


def _json_docs(ctx: Ctx) -> Path:
    """JSON-lines documents with a `body` field and a train split only."""
    from test_data_records import write_files

    docs = [d for d in ctx.text.read_text(encoding="utf-8").split("\n\n") if d.strip()][:200]
    write_files(ctx.tmp / "docs", docs, "json")
    return ctx.tmp / "docs"


def _earlier_export(ctx: Ctx) -> Path:
    """A folder holding what an earlier JepaForCausalLM export left: its modeling file."""
    return _file(ctx.tmp / "exported" / "modeling_jepa.py", b"# an earlier export's\n").parent


def _export_folder(ctx: Ctx) -> Path:
    """A folder that is not a run: an HF export, with the tokenizer.json a run would overwrite."""
    _file(ctx.tmp / "export" / "tokenizer.json", b'{"model": {"type": "BPE"}}')
    return ctx.tmp / "export"


def _metrics_a_folder(ctx: Ctx) -> Path:
    (ctx.run / rd.METRICS).unlink()
    (ctx.run / rd.METRICS).mkdir()
    return ctx.run


def _without_checkpoints(ctx: Ctx) -> Path:
    """The run as if killed before its first checkpoint."""
    shutil.rmtree(ctx.run / rd.CKPT_DIR)
    return ctx.run


CORPUS = [
    # ---- issue 32: `jepa export` (every run exports now; what is left to refuse is the folder and the options)
    Bad("export_over_an_earlier_export", lambda c: ["export", c.run, _earlier_export(c)], "modeling_jepa.py"),
    Bad("export_out_is_a_file", lambda c: ["export", c.run, _file(c.tmp / "out.txt")], "is not a folder"),
    Bad("export_unknown_format", lambda c: ["export", c.run, c.tmp / "out", "--format", "gguf"], "--format"),
    Bad("export_missing_run", lambda c: ["export", c.tmp / "nope", c.tmp / "out"], "does not exist"),
    # ---- issue 33: a folder that is not a run, empty options
    Bad("run_dir_holds_a_tokenizer_json", lambda c: ["train", "--profile", "tiny", *c.sets(), "--run-dir", _export_folder(c), "--no-tui"],
        "holds tokenizer.json"),
    Bad("run_dir_empty", lambda c: ["train", "--profile", "tiny", *c.sets(), "--run-dir", "", "--no-tui"], "--run-dir '' names nothing"),
    Bad("profile_empty", lambda c: ["train", "--profile", "", "--no-tui"], "--profile '' names nothing"),
    Bad("resume_empty", lambda c: ["train", "--resume", "", "--no-tui"], "--resume '' names nothing"),
    Bad("run_dir_holds_a_run_without_a_checkpoint",
        lambda c: ["train", "--profile", "tiny", *c.sets(), "--run-dir", _without_checkpoints(c), "--no-tui"],
        "stopped before its first checkpoint: there is nothing in it to resume"),
    Bad("set_with_a_line_break", lambda c: ["train", "--profile", "tiny", "--set", "train.max_steps=5\ntrain.seed=3", "--no-tui"],
        "holds a line break"),
    Bad("sample_tokens_past_any_meaning", lambda c: ["sample", c.run, "--tokens", "100000000000000000000"], "between 1 and 1,000,000"),
    Bad("runs_on_a_run_whose_metrics_is_a_folder", lambda c: ["runs", _metrics_a_folder(c)], "metrics.jsonl cannot be read: it is a folder"),
    Bad("watch_on_a_run_whose_metrics_is_a_folder", lambda c: ["watch", _metrics_a_folder(c)], "metrics.jsonl cannot be read: it is a folder"),
    # ---- issue 26, items 2-4: crashes and acceptances. (Item 1, undecodable or huge `jepa sample`
    # prompts, is no bad input any more: the bytes are replaced and a note says how many, exit 0;
    # tests/test_sample.py holds those cases.)
    Bad("jepa_home_is_a_file_prepare", lambda c: ["data", "prepare", "tiny_shakespeare"], "JEPA_HOME",
        env=_home_is_a_file),
    Bad("jepa_home_is_a_file_train", lambda c: ["train", "--profile", "tiny", "--no-tui"], "JEPA_HOME",
        env=_home_is_a_file),
    Bad("run_dir_is_a_runs_checkpoints_folder",
        lambda c: ["train", "--profile", "tiny", *c.sets(), "--no-tui", "--run-dir", c.run / "checkpoints"], lambda c: str(c.run)),
    Bad("out_dir_is_a_run", lambda c: ["train", "--profile", "tiny", *c.sets(f'train.out_dir="{c.run}"'), "--no-tui"], lambda c: str(c.run)),
    Bad("max_steps_past_any_meaning",
        lambda c: ["train", "--profile", "tiny", "--set", "train.max_steps=1000000000000000000000000000000",
                   "--set", f'data.dataset="text:{c.tmp / "missing.txt"}"', "--no-tui"], "max_steps"),
    # ---- issue 26, item 8: wording
    Bad("runs_on_a_file", lambda c: ["runs", c.run / rd.METRICS], "is a file, not a folder of runs"),
    Bad("runs_on_a_checkpoint_file", lambda c: ["runs", c.run / "checkpoints" / rd.weights_name(4)], "jepa inspect FILE"),
    Bad("refused_resume_keeps_out_dir", lambda c: ["train", "--resume", _early_run_elsewhere(c).relative_to(c.tmp), "--no-tui"],
        'train.out_dir="elsewhere"'),
    Bad("read_only_run_directory", lambda c: ["train", "--resume", c.run, "--no-tui"],
        "Cannot write to the run directory", mode="ro_mount"),
    # ---- issue 33, item 1: tensor bytes that do not match the digest written with them (a file named
    # explicitly is never substituted; a run directory falls back, and refuses only when none verifies)
    Bad("resume_corrupt_payload_file_named", lambda c: ["train", "--resume", _spoiled(c, 4), "--no-tui"], "do not match"),
    Bad("resume_no_checkpoint_verifies", lambda c: ["train", "--resume", _all_spoiled(c), "--no-tui"], "no checkpoint verifies"),
    Bad("sample_corrupt_payload_file_named", lambda c: ["sample", _spoiled(c, 4), "--tokens", "2"], "do not match"),
    Bad("sample_no_checkpoint_verifies", lambda c: ["sample", _all_spoiled(c), "--tokens", "2"], "no checkpoint verifies"),
    Bad("export_corrupt_payload_file_named", lambda c: ["export", _spoiled(c, 4), c.tmp / "hf"], "do not match"),
    Bad("inspect_verify_corrupt_payload", lambda c: ["inspect", _spoiled(c, 4), "--verify"], "does not verify"),
    # ---- earlier passes (issues 16 and 17) and their neighbours
    Bad("no_profile", lambda c: ["train", "--no-tui"], "--profile"),
    Bad("unknown_profile", lambda c: ["train", "--profile", "nonexistent", "--no-tui"], "nonexistent"),
    Bad("set_without_equals", lambda c: ["train", "--profile", "tiny", "--set", "train.max_steps", "--no-tui"], "section.key=value"),
    Bad("set_unknown_key", lambda c: ["train", "--profile", "tiny", "--set", "optim.lrr=3e-4", "--no-tui"], "optim.lrr"),
    Bad("set_out_of_range", lambda c: ["train", "--profile", "tiny", "--set", "train.max_steps=-5", "--no-tui"], "train.max_steps"),
    Bad("set_broken_list", lambda c: ["train", "--profile", "tiny", "--set", "jepa.horizons=[1,", "--no-tui"], "jepa.horizons"),
    Bad("resume_missing_path", lambda c: ["train", "--resume", c.tmp / "runs" / "nope", "--no-tui"], "Cannot resume"),
    Bad("resume_foreign_safetensors", lambda c: ["train", "--resume", _foreign_safetensors(c), "--no-tui"], "not written by `jepa train`"),
    Bad("resume_damaged_file_named", lambda c: ["train", "--resume", _cut_short(c), "--no-tui"], rd.weights_name(2)),
    Bad("resume_with_a_changed_config", lambda c: ["train", "--profile", "tiny", *c.sets("jepa.tau=0.5"), "--resume", c.run, "--no-tui"],
        "jepa.tau"),
    Bad("run_dir_holds_a_run", lambda c: ["train", "--profile", "tiny", *c.sets(), "--run-dir", c.run, "--no-tui"], "already holds a run"),
    Bad("inspect_not_safetensors", lambda c: ["inspect", _file(c.tmp / "notes.txt", b"hello, not tensors")], "not a safetensors file"),
    Bad("inspect_missing", lambda c: ["inspect", c.tmp / "nope.safetensors"], "does not exist"),
    Bad("sample_zero_tokens", lambda c: ["sample", c.run, "--tokens", "0"], "--tokens"),
    Bad("sample_negative_temperature", lambda c: ["sample", c.run, "--temperature", "-1"], "--temperature"),
    Bad("prepare_missing_text_file", lambda c: ["data", "prepare", f"text:{c.tmp / 'nope.txt'}"], "nope.txt"),
    Bad("prepare_unknown_dataset", lambda c: ["data", "prepare", "no_such_dataset"], "Unknown dataset"),
    Bad("prepare_json_without_the_text_field", lambda c: ["data", "prepare", f"json:{_json_docs(c)}", "--text-field", "content"],
        "no text field `content`"),
    Bad("prepare_json_unknown_split",
        lambda c: ["data", "prepare", f"json:{_json_docs(c)}", "--text-field", "body", "--train-split", "training"], "no split `training`"),
    Bad("prepare_vocab_too_small", lambda c: ["data", "prepare", "tiny_shakespeare", "--vocab-size", "10"], "--vocab-size"),
    Bad("runs_missing_folder", lambda c: ["runs", c.tmp / "nope"], "does not exist"),
    # ---- issue 32: --init-from SRC
    Bad("init_from_shape_mismatch", lambda c: ["train", "--profile", "tiny", *c.sets("model.d_model=64"), "--init-from", c.run, "--no-tui"],
        "model.d_model (32 in the source, 64 here)"),
    Bad("init_from_with_resume", lambda c: ["train", "--resume", c.run, "--init-from", c.run, "--no-tui"],
        "--init-from and --resume cannot be used together"),
    Bad("init_from_missing", lambda c: ["train", "--init-from", c.tmp / "nope", "--no-tui"], "there is no such file or folder"),
    Bad("init_from_damaged_file", lambda c: ["train", "--profile", "tiny", *c.sets(), "--init-from", _cut_short(c), "--no-tui"], "truncated"),
    Bad("init_from_no_such_step", lambda c: ["train", "--profile", "tiny", *c.sets(), "--init-from", f"{c.run}:step-3", "--no-tui"],
        "no checkpoint of step 3: its checkpoints are of steps 2, 4"),
    Bad("init_from_gpt2_layout", lambda c: ["train", "--profile", "tiny", *c.sets(), "--init-from", f"hf:{_gpt2_dir(c)}", "--no-tui"],
        "its architecture is GPT2LMHeadModel"),
    Bad("init_from_pickled_weights_only", lambda c: ["train", "--profile", "tiny", *c.sets(), "--init-from", f"hf:{_pickled_only(c)}", "--no-tui"],
        "only in pytorch_model.bin"),
    Bad("init_from_hf_without_profile", lambda c: ["train", "--init-from", f"hf:{_llama_dir(c)}", "--no-tui"], "needs --profile"),
    Bad("init_from_hf_without_tokenizer", lambda c: ["train", "--profile", "tiny", *c.sets(), *LLAMA_SETS, "--init-from", f"hf:{_llama_dir(c)}", "--no-tui"],
        "has no tokenizer.json"),
    Bad("init_from_tokenizer_vocab_mismatch",
        lambda c: ["train", "--profile", "tiny", *c.sets(), *LLAMA_SETS, "--init-from", f"hf:{_llama_dir(c, 320)}", "--no-tui"],
        "but the token embedding has 300 rows"),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, text, home) -> Path:
    tmp = tmp_path_factory.mktemp("corpus")
    run = tmp / "base"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JEPA_HOME", str(home))
        cfg = small_config(text, tmp / "runs", "train.max_steps=4", "train.checkpoint_every=2", "train.sample_tokens=0",
                           "train.eval_every=4", "train.keep_best=false")
        assert train(cfg, run_dir=run, handle_signals=False).status == "finished"
    return run


def _assert_one_error_paragraph(code: int, out: str, err: str, needle: str) -> None:
    assert "Traceback" not in out + err, err[-3000:]
    assert code == 2, f"exit {code}\n{out[-1500:]}\n{err[-3000:]}"
    lines = err.rstrip("\n").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(starts) == 1, err[-3000:]
    paragraph = lines[starts[0]:]
    # the hint follows the message directly; nothing else is said after the error
    assert all(line.strip() and not line.startswith(("error:", "warning:", "note:")) for line in paragraph[1:]), err[-3000:]
    assert needle in " ".join(" ".join(paragraph).split()), err[-3000:]


def _can_mount() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"], capture_output=True, timeout=30)
    return probe.returncode == 0


def _run_read_only(ctx: Ctx, argv: list[str], home: Path) -> tuple[int, str, str]:
    import shlex

    if not _can_mount():
        pytest.skip("needs `unshare -m` and mount (root or CAP_SYS_ADMIN)")
    cmd = " ".join(shlex.quote(str(w)) for w in [sys.executable, "-m", "jepa_cli", *argv])
    script = f"mount --bind {ctx.run} {ctx.run} && mount -o remount,bind,ro {ctx.run} {ctx.run} && {cmd}"
    env = dict(os.environ, JEPA_HOME=str(home), PYTHONWARNINGS="ignore", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("JEPA_DEBUG", None)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, cwd=ctx.tmp, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("bad", [b.param() for b in CORPUS])
def test_bad_input_is_one_clean_error(bad: Bad, tmp_path, finished_run, text, home, cli, monkeypatch):
    ctx = Ctx(tmp=tmp_path, run=tmp_path / "run", text=text)
    shutil.copytree(finished_run, ctx.run)
    monkeypatch.chdir(tmp_path)  # a run a row starts by mistake lands here, not in the repository
    argv = [str(w) for w in bad.argv(ctx)]
    if bad.mode == "ro_mount":
        code, out, err = _run_read_only(ctx, argv, home)
    else:
        for key, value in (bad.env(ctx) if bad.env else {}).items():
            monkeypatch.setenv(key, value)
        r = cli(*argv, stdin=bad.stdin(ctx) if bad.stdin else None)
        code, out, err = r.returncode, r.stdout, r.stderr
    _assert_one_error_paragraph(code, out, err, bad.needle(ctx) if callable(bad.needle) else bad.needle)


def test_the_corpus_ids_are_unique():
    ids = [b.id for b in CORPUS]
    assert len(ids) == len(set(ids))
