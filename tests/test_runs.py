"""`jepa runs`: one line per run with the right status, and the helpers behind it (labels, newest run)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jepa_cli.main import app
from jepa_cli.tui.fakerun import T0, write_fake_run
from jepa_core import rundir as rd
from jepa_core.rundir.listing import distinct_labels, find_run_dirs, list_runs, newest_run_dir, run_info

from cli_helpers import cli  # noqa: F401 (fixture)

ENDED = ("finished", "early_stopped", "interrupted", "diverged", "write_failed", "failed")


def _append(run: Path, rec: dict) -> None:
    with open(run / rd.METRICS, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _pidfile(run: Path, pid: int) -> None:
    (run / rd.PIDFILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": time.time()}))


@pytest.fixture
def folder(tmp_path) -> Path:
    """One run of every status under one folder (plus an ablation sub-folder with one run)."""
    root = tmp_path / "runs"
    for i, status in enumerate(ENDED):
        run = write_fake_run(root / f"{i}-{status}", steps=100, finished=False, overrides=(f"optim.lr={0.001 * (i + 1):g}",))
        _append(run, {"type": "event", "step": 100, "time": T0 + 30, "event": "run_end", "status": status, "message": status})
    stale = write_fake_run(root / "6-stale", steps=100, finished=False)
    _pidfile(stale, _dead_pid())  # the trainer died without run_end
    running = write_fake_run(root / "7-running", steps=200, finished=False)
    lines = (running / rd.METRICS).read_text().splitlines()
    (running / rd.METRICS).write_text("\n".join(lines[:3]) + "\n")  # run_start and the train lines of steps 10, 20
    _pidfile(running, os.getpid())
    rd.write_heartbeat(running, step=23, max_steps=200, phase="training")  # three steps past the last log line
    compiling = write_fake_run(root / "8-compiling", steps=100, finished=False)
    _pidfile(compiling, os.getpid())
    old = time.time() - 600  # ten quiet minutes: stale for a trainer that is not compiling
    (compiling / rd.HEARTBEAT).write_text(json.dumps({"step": 0, "max_steps": 100, "phase": "compiling", "time": old}))
    os.utime(compiling / rd.METRICS, (old, old))
    write_fake_run(root / "ablate-tiny-x" / "baseline-s0", steps=100, baseline=True)
    return root


def test_one_line_per_run_with_its_status(folder):
    infos = {Path(i.path).name: i for i in list_runs(folder)}
    assert len(infos) == 10
    for i, status in enumerate(ENDED):
        assert infos[f"{i}-{status}"].status == status
    assert infos["6-stale"].status == "stale" and "exited" in infos["6-stale"].detail
    assert infos["7-running"].status == "running"
    assert infos["8-compiling"].status == "running"  # quiet for 10 minutes, but compiling its first step
    assert infos["baseline-s0"].status == "finished" and infos["baseline-s0"].name == "ablate-tiny-x/baseline-s0"
    fin = infos["0-finished"]
    assert fin.step == 100 and fin.max_steps == 100 and fin.profile == "tiny"
    assert fin.val_bpb is not None and fin.tok_per_s is not None and fin.val_bpb >= fin.best_val_bpb
    # the --set values are what differs from the profile: the lr given, and max_steps (fakerun's --set)
    assert "optim.lr=0.001" in fin.overrides and "train.max_steps=100" in fin.overrides
    assert "optim.lr=0.002" in infos["1-early_stopped"].overrides


def test_a_run_whose_lock_nobody_holds_is_stale_at_once(tmp_path):
    """A trainer ended by a full disk: it removed its pid file but could not write run_end. Its last
    lines are a second old; with nobody holding train.lock it is stale now, not `running` for a minute.
    Held by a trainer (this process, through another open file, as flock counts it), it is running."""
    run = write_fake_run(tmp_path / "full-disk", steps=200, finished=False)
    now = time.time()
    os.utime(run / rd.METRICS, (now - 1, now - 1))
    (run / rd.LOCKFILE).touch()  # what every trainer leaves behind
    assert rd.lock_held(run) is False
    info = run_info(run)
    assert info.status == "stale" and info.detail == "no trainer holds the run's lock, and it has no run_end"
    lock = rd.RunLock(run).acquire()
    try:
        assert rd.lock_held(run) is True and run_info(run).status == "running"
        _pidfile(run, os.getpid())  # with its pid file, as while training
        assert run_info(run).status == "running"
    finally:
        lock.release()
    assert run_info(run).status == "stale"  # a live pid that holds no lock is no trainer (a reused pid)
    (run / rd.PIDFILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": now}))
    assert run_info(run).status == "running"  # a trainer on another host: its lock may not be visible here
    (run / rd.LOCKFILE).unlink()
    (run / rd.PIDFILE).unlink()
    assert rd.lock_held(run) is None and run_info(run).status == "running"  # no lock file: no trainer of ours, unknown


def test_a_readers_lock_check_never_reads_as_another_trainer(tmp_path):
    """`lock_held` holds the lock shared for an instant: a trainer claiming the run just then waits it out."""
    import fcntl
    import threading

    run = tmp_path / "run"
    run.mkdir()
    (run / rd.LOCKFILE).touch()
    fd = os.open(run / rd.LOCKFILE, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a reader's check, caught in the act (and made to last 0.1 s)
    threading.Timer(0.1, os.close, (fd,)).start()
    rd.RunLock(run).acquire().release()
    fd = os.open(run / rd.LOCKFILE, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # held for good: that is a trainer's (or anyone's) lock, not an instant
    try:
        with pytest.raises(rd.RunBusy):
            rd.RunLock(run).acquire()
    finally:
        os.close(fd)


def test_running_step_comes_from_the_heartbeat(folder):
    info = run_info(folder / "7-running")
    assert json.loads((folder / "7-running" / rd.METRICS).read_text().splitlines()[-1])["step"] == 20
    assert info.step == 23 and info.max_steps == 200


def test_cli_table_and_json(folder):
    r = CliRunner().invoke(app, ["runs", str(folder)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    lines = {ln.split()[0]: ln for ln in r.output.splitlines() if ln.strip() and not ln.startswith("run ")}
    for i, status in enumerate(ENDED):
        assert status in lines[f"{i}-{status}"]
    assert "stale" in lines["6-stale"] and "running" in lines["7-running"]
    assert "100/100" in lines["0-finished"] and "lr=0.001" in lines["0-finished"]
    r = CliRunner().invoke(app, ["runs", str(folder), "--json"])
    data = json.loads(r.output)
    assert {Path(d["path"]).name: d["status"] for d in data}["4-write_failed"] == "write_failed"
    assert all("age_s" in d and "val_bpb" in d and "overrides" in d for d in data)


def test_cli_errors_and_empty_folder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "jepa_cli", "runs", str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["runs", str(tmp_path / "empty")])
    assert r.exit_code == 0 and "No runs" in r.output


def test_a_file_is_not_said_to_be_missing(tmp_path, cli):
    run = write_fake_run(tmp_path / "runs" / "r", steps=10)
    for path, extra in ((run / rd.METRICS, None), (run / "checkpoints" / rd.weights_name(10), "jepa inspect FILE")):
        path.parent.mkdir(exist_ok=True)
        path.touch()
        r = cli("runs", str(path))
        assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
        said = " ".join(r.stderr.split())
        assert f"{path} is a file, not a folder of runs" in said and "does not exist" not in said
        assert f"jepa runs {path.parent}" in said and (extra is None or extra in said)


def test_a_step_past_max_steps_is_flagged(tmp_path):
    root = tmp_path / "runs"
    write_fake_run(root / "ok", steps=10)
    past = write_fake_run(root / "past", steps=10)
    _append(past, {"type": "eval", "step": 15, "time": T0 + 40, "val_loss": 2.0, "val_bpb": 1.5})
    assert run_info(past).step == 15 and run_info(past).max_steps == 10
    r = CliRunner().invoke(app, ["runs", str(root)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    lines = {ln.split()[0]: ln for ln in r.output.splitlines() if ln.strip()}
    assert "15/10!" in lines["past"] and "10/10" in lines["ok"] and "!" not in lines["ok"]
    assert "! a record is past max_steps" in r.output
    ok_only = CliRunner().invoke(app, ["runs", str(root / "ok")], env={"COLUMNS": "200"})
    assert "past max_steps" not in ok_only.output


def test_newest_run_is_the_one_that_wrote_last(folder):
    a, b = folder / "0-finished", folder / "ablate-tiny-x" / "baseline-s0"
    for p in find_run_dirs(folder):
        for f in p.iterdir():
            os.utime(f, (1e9, 1e9))
    os.utime(b / rd.METRICS, (2e9, 2e9))
    assert newest_run_dir(folder) == b
    os.utime(a / rd.METRICS, (3e9, 3e9))
    assert newest_run_dir(folder) == a
    assert newest_run_dir(folder / "ablate-tiny-x") == b
    assert newest_run_dir(folder / "ablate-tiny-x" / "nothing-here") is None


def test_labels_say_what_differs():
    base = {"name": "tiny", "optim": {"lr": 0.001, "warmup_steps": 50}, "train": {"seed": 1, "out_dir": "a"}, "jepa": {"run_baseline": False}}

    def cfg(**kw):
        c = json.loads(json.dumps(base))
        for dotted, v in kw.items():
            sec, key = dotted.split("__")
            c[sec][key] = v
        return c

    labels = distinct_labels(["tiny-20250101-1", "tiny-20250101-2"], ["tiny", "tiny"], [cfg(optim__lr=0.003, train__seed=2), base])
    assert labels == ["lr=0.003 seed=2", "lr=0.001 seed=1"]  # the seed last; out_dir never
    labels = distinct_labels(["x", "y"], ["tiny", "tiny"], [cfg(jepa__run_baseline=True), base])
    assert labels == ["baseline", "jepa"]
    labels = distinct_labels(["x", "y"], ["tiny", "small"], [base, base])
    assert labels == ["tiny", "small"]
    # nothing differs: the names, made unique
    assert distinct_labels(["r", "r"], ["tiny", "tiny"], [base, base]) == ["r", "r#2"]
    # unknown configs: the names
    assert distinct_labels(["a", "b"], ["?", "?"], [{}, {}]) == ["a", "b"]


def test_best_val_bpb_is_the_trainers_when_it_says(tmp_path):
    run = write_fake_run(tmp_path / "r", steps=100, finished=False)
    _append(run, {"type": "event", "step": 100, "time": T0 + 30, "event": "alert", "kind": "overfitting",
                  "message": "val loss rose", "best_step": 50, "best_val_bpb": 0.5})
    assert run_info(run).best_val_bpb == 0.5
    plain = write_fake_run(tmp_path / "p", steps=100)
    info = run_info(plain)
    assert info.best_val_bpb == min(json.loads(ln).get("val_bpb", 9) for ln in (plain / rd.METRICS).read_text().splitlines())


def _rewrite_start(run: Path, **fields) -> None:
    lines = (run / rd.METRICS).read_text().splitlines()
    start = json.loads(lines[0])
    assert start["event"] == "run_start"
    start.update(fields)
    (run / rd.METRICS).write_text("\n".join([json.dumps(start), *lines[1:]]) + "\n")


def test_recorded_overrides_are_shown_even_when_the_profile_is_gone(tmp_path):
    # a profile given as a path that has moved since: nothing to diff against
    run = write_fake_run(tmp_path / "runs" / "r", steps=100, overrides=("optim.lr=0.002",))
    _rewrite_start(run, profile="/moved/away.toml")
    assert run_info(run).overrides is None  # a run from before they were recorded: "?"
    _rewrite_start(run, overrides=["optim.lr=0.002", " train.max_steps = 100"])
    assert run_info(run).overrides == ["optim.lr=0.002", "train.max_steps=100"]
    r = CliRunner().invoke(app, ["runs", str(tmp_path / "runs")], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "optim.lr=0.002 train.max_steps=100" in r.output and "?" not in r.output


def test_recorded_overrides_are_what_was_typed_not_a_diff(tmp_path):
    # the profile changed since the run started: a diff would name keys nobody set
    run = write_fake_run(tmp_path / "r", steps=100, overrides=("optim.lr=0.002",))
    _rewrite_start(run, overrides=["optim.lr=2e-3"])
    _append(run, {"type": "event", "step": 100, "time": T0 + 40, "event": "run_start", "profile": "tiny", "overrides": ["train.max_steps=200", "optim.lr=1e-3"]})
    # a resume's value of a key replaces the start's
    assert run_info(run).overrides == ["train.max_steps=200", "optim.lr=1e-3"]
    # one segment that did not record them (an older trainer): back to comparing with the profile
    _append(run, {"type": "event", "step": 150, "time": T0 + 50, "event": "run_start", "profile": "tiny"})
    assert "optim.lr=0.002" in run_info(run).overrides
    assert run_info(run, with_overrides=False).overrides == []
