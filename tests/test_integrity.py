"""Trust every byte (issue 33): payload digests checked before any checkpoint is used, a metrics file
or run folder that vanishes mid-run, the mode of a run's files, the temp files of a refused resume.

Corrupt checkpoints through the CLI (exit 2, one paragraph) are rows of test_bad_inputs.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from jepa_core import rundir as rd
from jepa_core.errors import CheckpointError, ConfigError
from jepa_core.train import checkpoint as ck
from jepa_core.train.loop import TrainCallbacks, resolve_resume, train

from cli_helpers import cli  # noqa: F401 (fixture)
from train_helpers import _use_home, home, read_metrics, small_config, spoil_tensor_bytes, text  # noqa: F401 (fixtures)


def _cfg(text, tmp, *extra):
    return small_config(text, tmp / "runs", "train.sample_tokens=0", "train.eval_tokens=256", "jepa.eval_pairs=8", *extra)


# --------------------------------------------------------------------------- the digest itself


def _all_dtypes() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 5, generator=g),
        "bf16": torch.randn(7, generator=g).to(torch.bfloat16),
        "f16": torch.randn(2, 2, generator=g).to(torch.float16),
        "f64": torch.randn(4, generator=g).double(),
        "i64": torch.arange(-3, 3),
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "i16": torch.tensor([-2, 9], dtype=torch.int16),
        "i8": torch.tensor([-1, 1, 7], dtype=torch.int8),
        "u8": torch.get_rng_state()[:50].clone(),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


def test_the_digest_from_memory_is_the_digest_of_the_file(tmp_path):
    """The writer hashes tensors in memory, the reader the bytes on disk: the same value for every dtype
    safetensors stores, and, for sha256, the value a hand-built hash of the documented layout gives."""
    from safetensors.torch import _TYPES, save_file

    assert {v: k for k, v in _TYPES.items() if v in ck._SAFETENSORS_DTYPES} == {k: v for k, v in ck._SAFETENSORS_DTYPES.items() if k in _TYPES.values()}
    tensors = _all_dtypes()
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    header = rd.read_header(path, whole=True)
    for algorithm in ("xxh3_128", "sha256"):
        assert ck.tensors_digest(tensors, algorithm) == rd.digest.file_digest(header, algorithm)

    # sha256 by hand: per tensor in name order, the JSON line [name, dtype, shape], then its little-endian bytes
    def raw(t):
        return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()

    names = {"f32": "F32", "bf16": "BF16", "f16": "F16", "f64": "F64", "i64": "I64", "i32": "I32", "i16": "I16", "i8": "I8",
             "u8": "U8", "bool": "BOOL", "scalar": "F32", "empty": "F32"}
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(json.dumps([name, names[name], list(tensors[name].shape)], separators=(",", ":")).encode() + b"\n")
        h.update(raw(tensors[name]))
    assert ck.tensors_digest(tensors, "sha256") == "sha256:" + h.hexdigest()
    assert raw(torch.tensor([1.0])) == b"\x00\x00\x80\x3f"  # little-endian, as safetensors writes


def _write(path: Path, tensors: dict, meta: dict) -> Path:
    ck._save_tensors(rd.RunFolder.create(path.parent), path.name, tensors, meta)
    return path


def test_check_file_finds_a_changed_byte_a_swapped_name_and_accepts_old_files(tmp_path):
    from safetensors.torch import save_file

    a, b = torch.arange(64, dtype=torch.float32), torch.arange(64, 128, dtype=torch.float32)
    good = _write(tmp_path / "good.safetensors", {"a": a, "b": b}, {"step": "1"})
    check = rd.check_file(good)
    assert check.problem is None and check.unverified is None
    assert check.metadata[rd.digest.DIGEST_KEY].startswith(rd.digest.default_algorithm() + ":")

    flipped = tmp_path / "flipped.safetensors"
    shutil.copy(good, flipped)
    spoil_tensor_bytes(flipped, n=1)
    problem = rd.check_file(flipped).problem
    assert problem is not None and "is corrupt" in problem and "do not match" in problem and "flipped.safetensors" in problem

    # the header's names swapped (same dtype and shape): each name now points at the other's bytes
    swapped = tmp_path / "swapped.safetensors"
    data = good.read_bytes()
    n = int.from_bytes(data[:8], "little")
    head = data[8 : 8 + n].replace(b'"a":', b'"@@":').replace(b'"b":', b'"a":').replace(b'"@@":', b'"b":')
    assert len(head) == n and head != data[8 : 8 + n]
    swapped.write_bytes(data[:8] + head + data[8 + n :])
    assert rd.read_header(swapped, whole=True).metadata == rd.read_header(good).metadata  # the header alone is fine
    assert "is corrupt" in rd.check_file(swapped).problem

    old = tmp_path / "old.safetensors"  # as written before digests: used, with a note
    save_file({"a": a}, str(old), metadata={"step": "1"})
    check = rd.check_file(old)
    assert check.problem is None and "before checkpoints carried a payload digest" in check.unverified
    other = tmp_path / "other.safetensors"
    save_file({"a": a}, str(other), metadata={"step": "1", rd.digest.DIGEST_KEY: "blake9:00ff"})
    check = rd.check_file(other)
    assert check.problem is None and "blake9" in check.unverified
    save_file({"a": a}, str(other), metadata={"step": "1", rd.digest.DIGEST_KEY: "nonsense"})
    assert "not ALGORITHM:HEX" in rd.check_file(other).problem


# --------------------------------------------------------------------------- resume, sample, export, inspect


class _OnStep(TrainCallbacks):
    def __init__(self, at, action):
        self.at, self.action = at, action

    def on_step(self, step, max_steps):
        if step == self.at:
            self.action()


def _losses(run_dir):
    return {r["step"]: (r["loss"], r["lm_loss"], r["grad_norm"]) for r in read_metrics(run_dir) if r["type"] == "train"}


def test_resume_falls_back_past_corrupt_tensor_bytes_and_continues_bitwise(tmp_path, text):
    """Bytes changed inside a tensor of the newest checkpoint: resume sets it aside, falls back to the
    previous one with a note, and the continuation from there equals an uninterrupted run bit for bit."""
    cfg = _cfg(text, tmp_path, "train.checkpoint_every=2", "train.max_steps=8", "train.keep_best=false")
    one = train(cfg, run_dir=tmp_path / "one", handle_signals=False)
    assert one.status == "finished"

    run = tmp_path / "two"
    assert train(cfg, run_dir=run, stop_after=6, handle_signals=False).step == 6
    ckpts = run / rd.CKPT_DIR
    newest = ckpts / rd.weights_name(6)
    before = newest.read_bytes()
    spoil_tensor_bytes(newest)
    assert rd.read_header(newest, whole=True)  # the header still says the file is whole: only the digest can tell

    cfg2, ref = resolve_resume(str(run), cfg, cfg.name)
    assert ref.step == 4 and ref.weights == ckpts / rd.weights_name(4)
    assert "latest.json names step 6" in ref.note and "is corrupt" in ref.note and "resuming from step 4" in ref.note
    assert [c.step for c in ref.rejected] == [6] and ref.unverified == ()
    rest = train(cfg2, resume=ref, handle_signals=False)
    assert rest.status == "finished" and rest.step == 8

    resumed = [r for r in read_metrics(run) if r.get("event") == "resume"][-1]
    assert resumed["from_step"] == 4 and "is corrupt" in resumed["fallback"]
    assert sorted(resumed["set_aside"]) == sorted([rd.weights_name(6) + ".corrupt", rd.state_name(6) + ".corrupt"])
    spoiled = (ckpts / (rd.weights_name(6) + ".corrupt")).read_bytes()
    assert len(spoiled) == len(before) and spoiled != before  # kept for a look, the bytes as found

    # steps 5..8 retrained from step 4: the same losses and the same final weights as the run never interrupted
    a, b = _losses(tmp_path / "one"), _losses(run)
    assert sorted(a) == list(range(1, 9)) and all(a[s] == b[s] for s in range(1, 9))
    wa, wb = ck.load_tensors(rd.read_latest(tmp_path / "one").weights), ck.load_tensors(rd.read_latest(run).weights)
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)


def _strip_digest(path: Path) -> None:
    """Rewrite a checkpoint file as jepa wrote it before payload digests existed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k != rd.digest.DIGEST_KEY}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata=meta)


@pytest.fixture(scope="module")
def spoiled(tmp_path_factory, text, home):
    """A finished run (checkpoints 2 and 4), its step-4 weights spoiled inside a tensor."""
    tmp = tmp_path_factory.mktemp("spoiled")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JEPA_HOME", str(home))
        cfg = _cfg(text, tmp, "train.checkpoint_every=2", "train.max_steps=4", "train.eval_every=4", "train.keep_best=false",
                   "model.logit_bias=false", "model.lm_bridge=false")  # exportable as a plain Llama
        assert train(cfg, run_dir=tmp / "run", handle_signals=False).status == "finished"
    spoil_tensor_bytes(tmp / "run" / rd.CKPT_DIR / rd.weights_name(4))
    return tmp / "run"


def test_sample_and_export_use_the_newest_checkpoint_that_verifies(spoiled, tmp_path, cli):
    from jepa_core.tools.sample import load_for_sampling

    run = tmp_path / "run"
    shutil.copytree(spoiled, run)
    names = sorted(os.listdir(run / rd.CKPT_DIR))
    sm = load_for_sampling(run, "cpu")
    assert sm.step == 2 and sm.ref.weights.name == rd.weights_name(2)
    assert len(sm.integrity) == 1 and "is corrupt" in sm.integrity[0] and "using step 2" in sm.integrity[0]
    r = cli("sample", str(run), "--tokens", "3", "--seed", "1", "--device", "cpu")
    assert r.returncode == 0 and "note:" in r.stderr and "is corrupt" in " ".join(r.stderr.split())
    r = cli("export", str(run), str(tmp_path / "hf"))
    assert r.returncode == 0 and "note:" in r.stderr and "step 2" in r.stdout
    assert sorted(os.listdir(run / rd.CKPT_DIR)) == names  # readers rename nothing: the trainer sets files aside


def test_inspect_verify_says_verified_not_verified_or_fails(spoiled, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(spoiled, run)
    good, bad = run / rd.CKPT_DIR / rd.weights_name(2), run / rd.CKPT_DIR / rd.weights_name(4)
    r = cli("inspect", str(good), "--verify", "--json")
    assert r.returncode == 0
    verified = json.loads(r.stdout)["verified"]
    assert [(Path(v["file"]).name, v["status"]) for v in verified] == [(good.name, "verified"), (rd.state_name(2), "verified")]
    r = cli("inspect", str(bad), "--verify")
    assert r.returncode == 2 and "does not verify" in " ".join(r.stderr.split()) and "FAILED" in r.stdout
    assert cli("inspect", str(bad)).returncode == 0  # without --verify only the header is read, as before
    _strip_digest(good)
    r = cli("inspect", str(good), "--verify")
    assert r.returncode == 0 and "not verified" in r.stdout


def test_checkpoints_written_before_digests_still_resume_with_a_note(tmp_path, text, cli):
    run = tmp_path / "old"
    cfg = _cfg(text, tmp_path, "train.checkpoint_every=2", "train.max_steps=4", "train.keep_best=false")
    assert train(cfg, run_dir=run, handle_signals=False).status == "finished"
    for p in (run / rd.CKPT_DIR).glob("step-00000004*.safetensors"):
        _strip_digest(p)
    cfg2, ref = resolve_resume(str(run), _cfg(text, tmp_path, "train.checkpoint_every=2", "train.max_steps=6", "train.keep_best=false"), "tiny")
    assert ref.step == 4 and ref.note is None and ref.unverified == (rd.weights_name(4), rd.state_name(4))
    assert "payload digest" in rd.unverified_note(ref)
    r = cli("train", "--resume", str(run), "--set", "train.max_steps=6", "--no-tui")
    assert r.returncode == 0, r.stderr
    assert "note:" in r.stderr and "payload digest" in " ".join(r.stderr.split())
    resumed = [x for x in read_metrics(run) if x.get("event") == "resume"][-1]
    assert resumed["unverified"] == [rd.weights_name(4), rd.state_name(4)]
    assert rd.check_file(rd.read_latest(run).weights).unverified is None  # what this run wrote carries a digest


# --------------------------------------------------------------------------- a metrics file or run folder that vanishes


def test_metrics_jsonl_deleted_mid_run_ends_write_failed_with_a_final_checkpoint(tmp_path, text):
    run = tmp_path / "m"
    cfg = _cfg(text, tmp_path, "train.max_steps=20", "train.checkpoint_every=8")
    res = train(cfg, run_dir=run, callbacks=_OnStep(3, lambda: (run / rd.METRICS).unlink()), handle_signals=False)
    assert res.status == "write_failed" and res.exit_code == 2 and res.step == 3
    assert "metrics.jsonl" in res.message and "removed" in res.message and f"jepa train --resume {run}" in res.message
    assert not (run / rd.METRICS).exists()  # not recreated behind the user's back
    # the folder still works: the steps trained are kept in a final checkpoint, which verifies
    assert res.last_checkpoint == run / rd.CKPT_DIR / rd.weights_name(3) and rd.read_latest(run).step == 3
    assert rd.verify_checkpoint(rd.read_latest(run)) is None


def test_metrics_jsonl_replaced_mid_run_is_left_alone(tmp_path, text):
    run = tmp_path / "r"
    mine = b'{"not": "the run\'s"}\n'

    def replace():
        (run / "other.jsonl").write_bytes(mine)
        os.replace(run / "other.jsonl", run / rd.METRICS)  # as an editor's save does

    res = train(_cfg(text, tmp_path, "train.max_steps=20"), run_dir=run, callbacks=_OnStep(3, replace), handle_signals=False)
    assert res.status == "write_failed" and res.exit_code == 2 and "replaced" in res.message
    assert (run / rd.METRICS).read_bytes() == mine


class _OnEval(TrainCallbacks):
    """Acts when the eval record of `step` is emitted: after the stop check, before the checkpoint."""

    def __init__(self, step, action):
        self.step, self.action = step, action

    def on_record(self, rec):
        if rec["type"] == "eval" and rec["step"] == self.step:
            self.action()


@pytest.mark.parametrize("how", ["deleted", "moved", "moved_and_replaced"])
def test_a_run_folder_gone_before_a_checkpoint_is_never_recreated(tmp_path, text, how):
    run, moved = tmp_path / "here", tmp_path / "there"

    def vanish():
        if how == "deleted":
            shutil.rmtree(run)
        else:
            run.rename(moved)
            if how == "moved_and_replaced":
                run.mkdir()  # someone's new folder at the old path: not the run's

    cfg = _cfg(text, tmp_path, "train.max_steps=12", "train.eval_every=4", "train.checkpoint_every=4")
    res = train(cfg, run_dir=run, callbacks=_OnEval(4, vanish), handle_signals=False)
    assert res.status == "write_failed" and res.exit_code == 2 and res.step == 4
    assert "deleted, moved or replaced" in res.message and res.last_checkpoint is None
    if how == "moved_and_replaced":
        assert run.is_dir() and list(run.iterdir()) == []  # nothing of the run was written into the stranger's folder
    else:
        assert not run.exists()  # neither recreated nor split in two
    if how != "deleted":
        assert not (moved / rd.CKPT_DIR).exists()  # the checkpoint went nowhere rather than to a second folder
        end = read_metrics(moved)[-1]  # the open metrics file moved with the folder and says why
        assert end["event"] == "run_end" and end["status"] == "write_failed"


def test_a_write_racing_the_deletion_still_creates_no_folder(tmp_path):
    """The identity check and the write are two steps: a folder deleted between them must not come
    back either (writes into a run never create folders)."""
    run = tmp_path / "run"
    folder = rd.RunFolder.create(run)
    (run / rd.CKPT_DIR).mkdir()
    shutil.rmtree(run)
    folder.check = lambda: folder.path  # the check passed just before the deletion
    for write in (lambda: folder.write_text(f"{rd.CKPT_DIR}/{rd.LATEST}", "{}"), lambda: folder.mkdir(rd.CKPT_DIR)):
        with pytest.raises(FileNotFoundError):
            write()
        assert not run.exists()
    with pytest.raises(rd.RunFolderGone):
        rd.RunFolder.check(folder)


# --------------------------------------------------------------------------- file modes, temp files


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_file_of_a_run_gets_the_mode_the_umask_gives(tmp_path, text, umask):
    old = os.umask(umask)
    try:
        cfg = _cfg(text, tmp_path, "train.max_steps=2", "train.checkpoint_every=2", "train.eval_every=2")
        assert train(cfg, run_dir=tmp_path / "run", handle_signals=False).status == "finished"
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {rd.weights_name(2), rd.state_name(2), rd.LATEST, rd.METRICS, rd.CONFIG, rd.TOKENIZER, rd.HEARTBEAT, rd.LOCKFILE} <= names
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_a_refused_resume_sweeps_the_temp_files_of_a_killed_write(tmp_path, text):
    # a run killed while writing its first checkpoint: nothing to resume, a temp file megabytes long left
    early = tmp_path / "early"
    (early / rd.CKPT_DIR).mkdir(parents=True)
    (early / rd.CONFIG).write_text("name = 'tiny'\n")
    (early / rd.LOCKFILE).touch()
    tmp1 = early / rd.CKPT_DIR / ".step-00000004.safetensors.k1ll3d.tmp"
    tmp1.write_bytes(b"\0" * 1000)
    with pytest.raises(CheckpointError):
        resolve_resume(str(early), None, None)
    assert not tmp1.exists() and (early / rd.CONFIG).exists()

    # refused for a changed config: swept too; refused because a trainer holds the run: left (they may be its writes)
    run = tmp_path / "run"
    cfg = _cfg(text, tmp_path, "train.max_steps=2", "train.checkpoint_every=2")
    assert train(cfg, run_dir=run, handle_signals=False).status == "finished"
    tmp2 = run / rd.CKPT_DIR / ".step-00000004.state.safetensors.x.tmp"
    tmp2.write_bytes(b"\0")
    lock = rd.RunLock(run).acquire()
    try:
        with pytest.raises(rd.RunBusy):
            resolve_resume(str(run), cfg, cfg.name)
        assert tmp2.exists()
    finally:
        lock.release()
    with pytest.raises(ConfigError, match="jepa.tau"):
        resolve_resume(str(run), _cfg(text, tmp_path, "train.max_steps=2", "train.checkpoint_every=2", "jepa.tau=0.5"), "tiny")
    assert not tmp2.exists()
    # a folder that never held a run: nothing is touched and no lock file is made
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / ".notes.txt.tmp").write_text("mine")
    assert rd.sweep_if_idle(stranger) == [] and sorted(os.listdir(stranger)) == [".notes.txt.tmp"]
