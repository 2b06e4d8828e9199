"""Never lose a run (issue 17), in process: one trainer per directory, a vanished run directory,
write failures, temp files, resume past a damaged checkpoint, the memory estimate before allocation.

The same situations through the CLI (real signals, pipes, file-size limits,
mounts) are in test_robustness_cli.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jepa_core import rundir as rd
from jepa_core.errors import CheckpointError, ConfigError, JepaError
from jepa_core.train import checkpoint as ck
from jepa_core.train.loop import TrainCallbacks, resolve_resume, train

from train_helpers import _use_home, home, read_metrics, small_config, small_text, text  # noqa: F401 (fixtures)




def _cfg(text, tmp, *extra):
    # evals scored on 256 tokens and 8 pairs: these tests are about files, not numbers
    return small_config(text, tmp / "runs", "train.sample_tokens=0", "train.eval_tokens=256", "jepa.eval_pairs=8", *extra)


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != rd.LOCKFILE}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _lines(run: Path) -> list[str]:
    return (run / rd.METRICS).read_text().splitlines()


# --------------------------------------------------------------------------- one trainer per run directory


def test_claim_run_dir_units(tmp_path):
    """The claim without training: busy names the holder, a taken directory names the command, stale pid files pass."""
    from jepa_core.train.session import claim_run_dir

    run = tmp_path / "u"
    run.mkdir()
    (run / rd.METRICS).write_text("")
    ref = rd.CheckpointRef(run, 4, run / "checkpoints" / rd.weights_name(4), run / "checkpoints" / rd.state_name(4))
    holder = rd.RunLock(run).acquire()
    rd.write_pidfile(run)
    try:
        for resume in (ref, None):
            for lock in (None, rd.RunLock(run)):  # the early probe and the trainer's own claim
                with pytest.raises(rd.RunBusy) as e:
                    claim_run_dir(run, resume, lock)
                assert f"process {os.getpid()} on {socket.gethostname()}" in e.value.message
    finally:
        holder.release()
    with pytest.raises(JepaError) as e:
        claim_run_dir(run, None)
    # no checkpoint yet: a resume would be refused, so none is suggested (the CLI adds the command that starts it again)
    assert "already holds a run, one that stopped before its first checkpoint" in e.value.message and "--resume" not in e.value.hint
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / rd.weights_name(4)).write_bytes(b"")
    with pytest.raises(JepaError) as e:
        claim_run_dir(run, None)
    assert "already holds a run;" in e.value.message and f"jepa train --resume {run}" in e.value.hint
    for info in ({"pid": _dead_pid(), "host": socket.gethostname()}, {"pid": 1, "host": socket.gethostname()}, {"pid": 7, "host": "elsewhere"}):
        (run / rd.PIDFILE).write_text(json.dumps({**info, "started": 0}))
        lock = rd.RunLock(run)
        claim_run_dir(run, ref, lock)  # a stale pid file never blocks
        lock.release()
    fresh = tmp_path / "fresh"
    lock = rd.RunLock(fresh)
    claim_run_dir(fresh, None, lock)  # a new directory is made and claimed
    assert (fresh / rd.LOCKFILE).exists()
    lock.release()


def test_a_run_directory_that_exists_is_not_said_to_be_created(tmp_path, monkeypatch):
    """Root ignores chmod, so the read-only folder's refusal is the OS error acquire would raise there."""
    from jepa_core.train.session import claim_run_dir

    def read_only(self):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self.path))

    monkeypatch.setattr(rd.RunLock, "acquire", read_only)
    there = tmp_path / "there"
    there.mkdir()
    with pytest.raises(JepaError) as e:
        claim_run_dir(there, None, rd.RunLock(there))
    assert e.value.message == f"Cannot write to the run directory {there}: Read-only file system (errno {errno.EROFS})."
    with pytest.raises(JepaError) as e:
        claim_run_dir(tmp_path / "new", None, rd.RunLock(tmp_path / "new"))
    assert e.value.message.startswith(f"Cannot create the run directory {tmp_path / 'new'}: ")


@pytest.mark.slow
def test_one_trainer_per_run_dir_and_stale_pid_files(tmp_path, text):
    run = tmp_path / "r"
    first = train(_cfg(text, tmp_path), run_dir=run, stop_after=4, handle_signals=False)
    assert first.status == "interrupted" and rd.read_latest(run).step == 4

    # a trainer holds the directory (its lock and its pid file, as a live `jepa train` would)
    lock = rd.RunLock(run).acquire()
    rd.write_pidfile(run)
    before = _snapshot(run)
    try:
        with pytest.raises(rd.RunBusy) as e:  # refused before building anything
            resolve_resume(str(run), _cfg(text, tmp_path), "tiny")
        assert f"process {os.getpid()} on {socket.gethostname()}" in e.value.message
        with pytest.raises(rd.RunBusy):  # and by train() itself (callers that skip resolve_resume)
            train(_cfg(text, tmp_path, "train.max_steps=6"), resume=rd.resume_checkpoint(run), handle_signals=False)
        with pytest.raises(rd.RunBusy) as e:  # --run-dir on it: busy says more than "holds a run"
            train(_cfg(text, tmp_path), run_dir=run, handle_signals=False)
        assert str(os.getpid()) in e.value.message and "jepa watch" in (e.value.hint or "")
        assert _snapshot(run) == before  # the holder's files are untouched
    finally:
        lock.release()

    # free again: --run-dir on a directory that holds a run is still refused, with the command to use
    with pytest.raises(JepaError) as e:
        train(_cfg(text, tmp_path), run_dir=run, handle_signals=False)
    assert "already holds a run" in e.value.message and f"jepa train --resume {run}" in e.value.hint
    assert _snapshot(run) == before

    # a stale pid file never blocks: a dead process on this host, a live unrelated one, another host
    for info in ({"pid": _dead_pid(), "host": socket.gethostname()}, {"pid": 1, "host": socket.gethostname()},
                 {"pid": 4242, "host": "elsewhere"}):
        (run / rd.PIDFILE).write_text(json.dumps({**info, "started": 0}))
        resolve_resume(str(run), _cfg(text, tmp_path), "tiny")
    cfg, ref = resolve_resume(str(run), _cfg(text, tmp_path, "train.max_steps=6"), "tiny")
    res = train(cfg, resume=ref, handle_signals=False)
    assert res.status == "finished" and res.step == 6
    assert not (run / rd.PIDFILE).exists()


# --------------------------------------------------------------------------- the run directory vanishes


class _OnStep(TrainCallbacks):
    def __init__(self, at: int, action):
        self.at, self.action = at, action

    def on_step(self, step, max_steps):
        if step == self.at:
            self.action()


def test_run_dir_deleted_mid_run_fails_not_finishes(tmp_path, text):
    run = tmp_path / "gone"
    res = train(_cfg(text, tmp_path, "train.max_steps=20"), run_dir=run, callbacks=_OnStep(3, lambda: shutil.rmtree(run)), handle_signals=False)
    assert res.status == "write_failed" and res.exit_code == 2 and res.step == 3
    assert "deleted or replaced" in res.message and str(run) in res.message
    assert not run.exists()  # nothing recreated it half-way (no ghost checkpoints folder)


def test_run_dir_moved_mid_run_records_why_in_the_moved_dir(tmp_path, text):
    run, moved = tmp_path / "here", tmp_path / "there"
    res = train(_cfg(text, tmp_path, "train.max_steps=20"), run_dir=run, callbacks=_OnStep(3, lambda: run.rename(moved)), handle_signals=False)
    assert res.status == "write_failed" and res.exit_code == 2
    end = read_metrics(moved)[-1]  # the open metrics file moved with the directory
    assert end["event"] == "run_end" and end["status"] == "write_failed" and "deleted or replaced" in end["message"]
    assert not run.exists()


# --------------------------------------------------------------------------- write failures


@pytest.mark.slow
def test_read_only_checkpoints_dir_is_a_clean_write_failure(tmp_path, text, monkeypatch):
    """A read-only folder, simulated (root ignores chmod; the real mount is in the CLI tests):
    every temp file the checkpoint writer opens fails with EROFS after the first checkpoint."""
    import tempfile as tempfile_mod

    from jepa_core import fsutil

    real = tempfile_mod.mkstemp
    state = {"read_only": False}

    def mkstemp(*a, dir=None, **kw):
        if state["read_only"] and Path(dir).name == rd.CKPT_DIR:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", mkstemp)
    run = tmp_path / "ro"
    cb = _OnStep(5, lambda: state.update(read_only=True))
    res = train(_cfg(text, tmp_path, "train.checkpoint_every=4", "train.max_steps=12"), run_dir=run, callbacks=cb, handle_signals=False)
    assert res.status == "write_failed" and res.exit_code == 2 and res.step == 8
    good = run / "checkpoints" / rd.weights_name(4)
    assert f"errno {errno.EROFS}" in res.message and "Read-only file system" in res.message
    assert f"the last good checkpoint is {good}" in res.message and f"jepa train --resume {run}" in res.message
    assert rd.read_latest(run).step == 4 and rd.verify_checkpoint(rd.read_latest(run)) is None
    end = read_metrics(run)[-1]
    assert end["event"] == "run_end" and end["status"] == "write_failed" and end["last_checkpoint"] == str(good)


def test_safetensors_write_error_becomes_an_os_error_naming_the_file(tmp_path):
    import torch
    from safetensors import SafetensorError

    err = ck._as_os_error(SafetensorError("Error while serializing: I/O error: File too large (os error 27)"), tmp_path / "w.safetensors")
    assert isinstance(err, OSError) and err.errno == 27 and err.filename == str(tmp_path / "w.safetensors")
    ck._save_tensors(rd.RunFolder(tmp_path), "ok.safetensors", {"a": torch.zeros(2)}, {"step": "1"})
    meta = rd.read_header(tmp_path / "ok.safetensors", whole=True).metadata
    assert meta == {"step": "1", "payload_digest": ck.tensors_digest({"a": torch.zeros(2)})}


def test_half_written_metrics_line_is_never_glued_to_the_next_record(tmp_path, text, monkeypatch):
    from jepa_core.train import metrics

    run = tmp_path / "m"
    state = {"short": False}

    class FillingDisk:  # os, except that the "disk" fills for a moment: one write stops half-way, the next fails
        def __getattr__(self, name):
            return getattr(os, name)

        def write(self, fd, data):
            n = state.get("n", 0)
            if not state["short"] or n >= 2:  # space freed again: the run's alert and run_end get written
                return os.write(fd, data)
            state["n"] = n + 1
            if n == 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return os.write(fd, data[: len(data) // 2])

    monkeypatch.setattr(metrics, "os", FillingDisk())
    cfg = _cfg(text, tmp_path, "train.checkpoint_every=2", "train.max_steps=12")
    res = train(cfg, run_dir=run, callbacks=_OnStep(4, lambda: state.update(short=True)), handle_signals=False)
    assert res.status == "write_failed" and res.exit_code == 2
    assert "metrics.jsonl" in res.message and f"errno {errno.ENOSPC}" in res.message  # the real reason, not "short write"
    assert rd.read_latest(run).step == 2  # the stop came before another checkpoint: the last good one stays
    monkeypatch.setattr(metrics, "os", os)
    lines = _lines(run)
    half = [l for l in lines if not l.endswith("}")]
    assert len(half) == 1 and half[0].count('{"type"') == 1  # the half line, alone
    end = json.loads(lines[-1])  # the records after it, written by the same sink, start a line of their own
    assert end["event"] == "run_end" and end["status"] == "write_failed"
    cfg2, ref = resolve_resume(str(run), _cfg(text, tmp_path, "train.checkpoint_every=2", "train.max_steps=6"), "tiny")
    assert train(cfg2, resume=ref, handle_signals=False).status == "finished"
    lines = _lines(run)
    bad = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    assert len(bad) == 1 and bad[0].count('{"type"') == 1 and not bad[0].endswith("}")  # nothing glued onto it
    starts = [json.loads(l) for l in lines if '"run_start"' in l and l not in bad]
    assert len(starts) == 2  # the resumed run's run_start was not lost


# --------------------------------------------------------------------------- temp files, damaged checkpoints


def _three_checkpoints(tmp_path, text, name="c"):
    run = tmp_path / name
    # no best.json: a best checkpoint is kept out of rotation, which these tests count on exactly
    res = train(_cfg(text, tmp_path, "train.checkpoint_every=2", "train.max_steps=6", "train.keep_best=false"), run_dir=run, handle_signals=False)
    assert res.status == "finished"
    assert [c.step for c in rd.list_checkpoints(run / "checkpoints")] == [2, 4, 6]
    return run


def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path, text):
    run = _three_checkpoints(tmp_path, text)
    ckpts = run / "checkpoints"
    newest = ckpts / rd.weights_name(6)
    size = newest.stat().st_size
    with open(newest, "r+b") as f:  # cut short, as a full disk or a crash of the storage would leave it
        f.truncate(size - 1000)
    # temp files a SIGKILL mid-write leaves, in both folders
    leftovers = [ckpts / ".step-00000008.safetensors.ab12cd.tmp", run / ".config.toml.x1y2.tmp", run / ".heartbeat.json.99.tmp"]
    for p in leftovers:
        p.write_bytes(b"partial")

    cfg, ref = resolve_resume(str(run), _cfg(text, tmp_path, "train.checkpoint_every=2", "train.max_steps=8", "train.keep_last=1", "train.keep_best=false"), "tiny")
    assert ref.step == 4 and ref.weights == ckpts / rd.weights_name(4)
    assert "latest.json names step 6" in ref.note and "damaged" in ref.note and "resuming from step 4" in ref.note
    assert [c.step for c in ref.rejected] == [6]

    seen = []  # latest.json during the run, before its first checkpoint: corrected to the one in use
    res = train(cfg, resume=ref, callbacks=_OnStep(5, lambda: seen.append(rd.read_latest(run).step)), handle_signals=False)
    assert res.status == "finished" and res.step == 8 and seen == [4]
    recs = read_metrics(run)
    resumed = [r for r in recs if r.get("event") == "resume"][-1]
    assert resumed["from_step"] == 4 and "damaged" in resumed["fallback"]
    assert sorted(resumed["set_aside"]) == sorted([rd.weights_name(6) + ".corrupt", rd.state_name(6) + ".corrupt"])
    cleanup = [r for r in recs if r.get("event") == "cleanup"][-1]
    assert sorted(cleanup["removed"]) == sorted(str(p.relative_to(run)) for p in leftovers)
    assert not any(p.exists() for p in leftovers)
    # the damaged files are kept for a look, out of every checkpoint list; keep_last=1 kept the new one
    assert (ckpts / (rd.weights_name(6) + ".corrupt")).stat().st_size == size - 1000
    assert [c.step for c in rd.list_checkpoints(ckpts)] == [8]
    assert rd.read_latest(run).step == 8 and rd.verify_checkpoint(rd.read_latest(run)) is None


def test_latest_json_that_disagrees_with_its_files_is_not_trusted(tmp_path, text):
    run = _three_checkpoints(tmp_path, text, "d")
    ckpts = run / "checkpoints"
    cfg = _cfg(text, tmp_path, "train.checkpoint_every=2", "train.max_steps=8")

    # a pointer whose step and file name disagree
    (ckpts / rd.LATEST).write_text(json.dumps({"step": 6, "weights": rd.weights_name(4), "state": rd.state_name(4)}))
    _, ref = resolve_resume(str(run), cfg, "tiny")
    assert ref.step == 6 and "names step-00000004.safetensors" in ref.note and ref.rejected == ()
    rd.write_pointer(ckpts, rd.LATEST, 6)

    # a file whose metadata says another step than its name (copied over it)
    for name in (rd.weights_name, rd.state_name):
        shutil.copyfile(ckpts / name(4), ckpts / name(6))
    _, ref = resolve_resume(str(run), cfg, "tiny")
    assert ref.step == 4 and "holds step 4, not 6" in ref.note and [c.step for c in ref.rejected] == [6]

    # the state file missing
    (ckpts / rd.state_name(4)).unlink()
    _, ref = resolve_resume(str(run), cfg, "tiny")
    assert ref.step == 2 and "state file step-00000004.state.safetensors is missing" in ref.note

    # a file named explicitly must verify itself; the hint names the one that does
    with pytest.raises(CheckpointError) as e:
        resolve_resume(str(ckpts / rd.weights_name(6)), cfg, "tiny")
    assert "holds step 4, not 6" in e.value.message and rd.weights_name(2) in e.value.hint

    # nothing verifies: refused, saying why for each
    (ckpts / rd.state_name(2)).unlink()
    with pytest.raises(CheckpointError) as e:
        resolve_resume(str(run), cfg, "tiny")
    assert "no checkpoint verifies" in e.value.message and rd.weights_name(2) in e.value.message


def _fake_checkpoints(ckpts: Path, steps, state: bool = True) -> None:
    """Checkpoint files that verify (whole headers, the step in their metadata) without a model behind them."""
    import torch
    from safetensors.torch import save_file

    ckpts.mkdir(parents=True, exist_ok=True)
    for s in steps:
        save_file({"w": torch.zeros(2)}, str(ckpts / rd.weights_name(s)), metadata={"step": str(s)})
        if state:
            save_file({"m": torch.zeros(2)}, str(ckpts / rd.state_name(s)), metadata={"step": str(s)})


def test_a_missing_or_garbage_latest_json_is_a_fallback_that_says_so(tmp_path):
    """The newest checkpoint verifies, so nothing is rejected, but latest.json did not name it: a note all the same."""
    run = tmp_path / "r"
    ckpts = run / "checkpoints"
    _fake_checkpoints(ckpts, (2, 4))
    rd.write_pointer(ckpts, rd.LATEST, 4)
    assert rd.resume_checkpoint(run).note is None  # latest.json taken at its word: nothing to say
    gone = json.dumps({"step": 6, "weights": rd.weights_name(6), "state": rd.state_name(6)})
    for latest, why in (("{not json", "latest.json is unreadable"), ("", "latest.json is unreadable"), (None, "latest.json is missing"),
                        (gone, "names step-00000006.safetensors, which does not exist")):
        (ckpts / rd.LATEST).unlink(missing_ok=True)
        if latest is not None:
            (ckpts / rd.LATEST).write_text(latest)
        for target in (run, ckpts):
            ref = rd.resume_checkpoint(target)
            assert ref.step == 4 and ref.rejected == ()
            assert ref.note and why in ref.note and "resuming from step 4" in ref.note, ref.note


def test_half_checkpoints_are_swept_unless_a_pointer_names_them(tmp_path):
    run = tmp_path / "h"
    ckpts = run / "checkpoints"
    _fake_checkpoints(ckpts, (2, 4))
    _fake_checkpoints(ckpts, (6, 8), state=False)  # the state write failed (a full disk)
    _fake_checkpoints(ckpts, (1,))
    (ckpts / rd.weights_name(1)).unlink()  # rotation killed between its two deletions
    rd.write_pointer(ckpts, rd.LATEST, 4)
    rd.write_pointer(ckpts, rd.BEST, 8)
    assert rd.sweep_half_checkpoints(run) == ["checkpoints/" + rd.state_name(1), "checkpoints/" + rd.weights_name(6)]
    assert sorted(os.listdir(ckpts)) == sorted([rd.LATEST, rd.BEST, rd.weights_name(8)] + [n(s) for s in (2, 4) for n in (rd.weights_name, rd.state_name)])
    assert rd.sweep_half_checkpoints(tmp_path / "none") == []


def test_a_weights_file_left_by_a_full_disk_is_swept_on_resume(tmp_path, text):
    """The state write at step 6 failed: its weights file is whole, latest.json still names step 4."""
    run = _three_checkpoints(tmp_path, text, "full")
    ckpts = run / "checkpoints"
    (ckpts / rd.state_name(6)).unlink()
    rd.write_pointer(ckpts, rd.LATEST, 4)
    # a final checkpoint at 5, below 6: rotation alone would never reach the half one
    cfg, ref = resolve_resume(str(run), _cfg(text, tmp_path, "train.checkpoint_every=2", "train.max_steps=5", "train.keep_best=false"), "tiny")
    assert ref.step == 4 and ref.note is None
    assert train(cfg, resume=ref, handle_signals=False).status == "finished"
    assert not (ckpts / rd.weights_name(6)).exists()
    cleanup = [r for r in read_metrics(run) if r.get("event") == "cleanup"][-1]
    assert cleanup["removed"] == ["checkpoints/" + rd.weights_name(6)]
    assert [c.step for c in rd.list_checkpoints(ckpts)] == [2, 4, 5] and rd.read_latest(run).step == 5


def test_weights_file_without_jepa_metadata_is_a_clear_error(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(CheckpointError) as e:
        resolve_resume(str(path), None, None)
    assert "not written by `jepa train`" in e.value.message


@pytest.mark.slow
def test_rotation_never_deletes_the_checkpoint_just_written(tmp_path, text):
    """Resuming from an older checkpoint with keep_last=1: the newer files of the abandoned line
    must not push out the one this run just wrote (latest.json would name a deleted file)."""
    run = _three_checkpoints(tmp_path, text, "rot")
    cfg, ref = resolve_resume(str(run / "checkpoints" / rd.weights_name(2)), _cfg(text, tmp_path, "train.checkpoint_every=3", "train.max_steps=3", "train.keep_last=1", "train.keep_best=false"), "tiny")
    res = train(cfg, resume=ref, handle_signals=False)
    assert res.status == "finished"
    latest = rd.read_latest(run)
    assert latest.step == 3 and rd.verify_checkpoint(latest) is None
    assert [c.step for c in rd.list_checkpoints(run / "checkpoints")] == [3, 4, 6]  # 2 rotated away, 4 and 6 untouched


def test_sweep_and_verify_units(tmp_path):
    run = tmp_path / "u"
    (run / "checkpoints").mkdir(parents=True)
    keep = [run / "metrics.jsonl", run / "checkpoints" / "latest.json", run / "checkpoints" / "x.tmp", run / ".hidden"]
    gone = [run / ".a.tmp", run / "checkpoints" / ".step-00000002.safetensors.q.tmp"]
    for p in keep + gone:
        p.write_text("x")
    assert rd.sweep_temp_files(run) == sorted(str(p.relative_to(run)) for p in gone)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)

    import torch
    from safetensors.torch import save_file

    f = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(4), "b": torch.ones(2, 3, dtype=torch.bfloat16)}, str(f), metadata={"step": "5"})
    assert rd.read_header(f, whole=True).metadata["step"] == "5"
    data = f.read_bytes()
    for broken, why in ((data[:-1], "bytes"), (data + b"\0", "bytes"), (data[:5], "shorter"), (b"\xff" * 8 + data[8:], "claims")):
        f.write_bytes(broken)
        with pytest.raises(ValueError, match=why):
            rd.read_header(f, whole=True)


# --------------------------------------------------------------------------- memory, before allocating


def test_run_that_cannot_fit_is_refused_before_allocating(tmp_path, text, monkeypatch):
    from jepa_core.train import device

    monkeypatch.setattr(device, "device_memory", lambda device: (1 << 20, "test memory"))
    cfg = _cfg(text, tmp_path, "train.max_steps=2")
    with pytest.raises(ConfigError) as e:
        train(cfg, handle_signals=False)
    assert "would not fit in memory" in e.value.message and "test memory" in e.value.message
    assert "--force" in e.value.hint
    assert not (tmp_path / "runs").exists()  # refused before the run directory was made
    res = train(cfg, run_dir=tmp_path / "forced", handle_signals=False, force_memory=True)
    assert res.status == "finished"


@pytest.mark.parametrize("name", ["SIGHUP", "SIGTERM"])
def test_a_hang_up_while_the_run_is_built_is_a_named_keyboard_interrupt(tmp_path, text, monkeypatch, name):
    """No step loop polls a flag while data is prepared: there the signal must raise (so the data
    pipeline commits its chunks and the CLI says what happened), not kill the process silently."""
    import signal

    import jepa_core.data as data
    from jepa_core.train.stops import BuildInterrupted

    sig = getattr(signal, name)
    prepare = data.ensure_prepared
    received = []

    def hung_up_while_preparing(*a, **k):
        os.kill(os.getpid(), sig)
        return prepare(*a, **k)

    monkeypatch.setattr(data, "ensure_prepared", hung_up_while_preparing)
    cfg = _cfg(text, tmp_path, "train.max_steps=2")
    # a handler of our own in place of the default (which would kill pytest): it must be set aside, then given back
    old = signal.signal(sig, lambda *a: received.append("ours"))
    try:
        with pytest.raises(BuildInterrupted) as e:
            train(cfg, run_dir=tmp_path / "hup", handle_signals=True)
        assert e.value.args == (name,) and received == []
        assert not (tmp_path / "hup" / rd.METRICS).exists()  # nothing of a run was written
        # handle_signals=False (an embedding caller's own handlers): left alone
        assert train(cfg, run_dir=tmp_path / "own", handle_signals=False).status == "finished"
        assert received == ["ours"]
    finally:
        signal.signal(sig, old)


def test_a_pid_file_that_cannot_be_removed_is_said_not_raised(tmp_path, text, monkeypatch):
    """The run folder made read-only at the end: unlinking train.pid fails with EROFS. Simulated here by
    making that one unlink raise as the kernel would (root ignores chmod); the real read-only mount is
    tests/test_robustness_cli.py's (slow, needs mount). The run ends as it would, and says the file stays."""
    import pathlib

    unlink = pathlib.Path.unlink

    def read_only(self, *a, **k):
        if self.name == rd.PIDFILE:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return unlink(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "unlink", read_only)
    res = train(_cfg(text, tmp_path, "train.max_steps=2"), run_dir=tmp_path / "ro", handle_signals=False)
    assert res.status == "finished" and res.exit_code == 0 and res.last_checkpoint is not None
    assert res.message == ("train.pid stays in the run directory (Read-only file system (errno 30)); it is harmless: the lock, "
                           "not that file, decides who trains, and readers see that its process has exited.")
    assert (tmp_path / "ro" / rd.PIDFILE).exists() and read_metrics(tmp_path / "ro")[-1]["status"] == "finished"


def test_every_signal_handler_leaves_an_ignored_signal_ignored():
    """`nohup` ignores SIGHUP, a script's background job SIGINT: the trainer's flag, the build's raising
    handlers and ablate's relay leave such a signal ignored (and give the others back as they were).
    The whole run through `jepa train` is tests/test_robustness_cli.py's (slow)."""
    import signal

    from jepa_core.tools.ablate.jobs import _Relay
    from jepa_core.train.stops import SignalFlag, SignalsRaise

    old = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)}
    mine = lambda *a: None  # noqa: E731
    try:
        for ignored, handled in ((signal.SIGHUP, signal.SIGINT), (signal.SIGINT, signal.SIGHUP)):
            signal.signal(ignored, signal.SIG_IGN)
            signal.signal(handled, mine)
            for handler in (SignalFlag(), SignalsRaise(), _Relay()):
                with handler:
                    assert signal.getsignal(ignored) == signal.SIG_IGN, type(handler).__name__
                    if handled in getattr(handler, "signals", (handled,)):
                        assert signal.getsignal(handled) not in (mine, signal.SIG_IGN), type(handler).__name__
                assert signal.getsignal(ignored) == signal.SIG_IGN and signal.getsignal(handled) is mine
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    """Checkpoints and pointers are readable like any file this process creates (mkstemp alone gives 0600)."""
    import os
    import stat

    from jepa_core.fsutil import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "latest.json", "{}")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "latest.json").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
