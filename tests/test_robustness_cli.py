"""Never lose a run (issue 17), through `jepa train` in a subprocess: a hang-up, broken and closed
output streams, two trainers on one directory, a file-size limit, a read-only folder and a full
disk (real mounts in a private mount namespace, skipped where `unshare -m` is not allowed), and a
model too big for the machine. Each test starts Python and torch at least once: all are slow.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jepa_core import rundir as rd
from jepa_core.train.loop import train

from train_helpers import _use_home, home, small_config, small_text, text  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent




def _sets(text: Path, *extra: str) -> list[str]:
    sets = [
        f'data.dataset="text:{text}"', "data.vocab_size=320", "data.block_size=32",
        "model.d_model=32", "model.n_layers=2", "model.n_heads=2",
        "jepa.horizons=[1,4]", "jepa.horizon_probs=[0.5,0.5]", "jepa.latent_dim=16", "jepa.eval_pairs=8",
        "train.batch_size=4", "train.compile=false", 'train.device="cpu"', 'train.precision="fp32"',
        "train.eval_every=1000", "train.eval_tokens=256", "train.checkpoint_every=1000", "train.sample_tokens=0",
        "log.every=1", *extra,
    ]
    return [w for s in sets for w in ("--set", s)]


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "jepa_cli", "train", "--no-tui", *args]


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, JEPA_HOME=str(home), PYTHONWARNINGS="ignore")


def _wait_for_train_lines(run: Path, proc: subprocess.Popen, n: int = 3, timeout: float = 180) -> None:
    metrics = run / rd.METRICS
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count('"type":"train"') >= n:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"training did not start (rc {proc.returncode}): {(err or '')[-3000:]}")


def _records(run: Path) -> list[dict]:
    """Every line of metrics.jsonl must be a JSON object (nothing printed into it, nothing glued)."""
    return [json.loads(line) for line in (run / rd.METRICS).read_text().splitlines() if line.strip()]


def _assert_ended(run: Path, status: str, step: int | None = None) -> dict:
    recs = _records(run)
    end = recs[-1]
    assert end["event"] == "run_end" and end["status"] == status, end
    latest = rd.read_latest(run)
    assert latest is not None and rd.verify_checkpoint(latest) is None
    if step is not None:
        assert latest.step == step
    assert not (run / rd.PIDFILE).exists()
    return end


def _base_run(text: Path, tmp: Path, name: str, steps: int = 4) -> Path:
    """A finished run with a checkpoint at `steps`, trained in this process (the data gets prepared once)."""
    run = tmp / name
    sets = _sets(text, f"train.max_steps={steps}")[1::2]
    cfg = small_config(text, tmp / "runs", *sets)
    assert train(cfg, run_dir=run, handle_signals=False).status == "finished"
    return run


# --------------------------------------------------------------------------- hang-up, pipes, closed streams


def test_sighup_checkpoints_and_ends_interrupted(tmp_path, text, home):
    run = tmp_path / "hup"
    proc = subprocess.Popen(_argv(*_sets(text, "train.max_steps=100000"), "--profile", "tiny", "--run-dir", str(run)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(home))
    _wait_for_train_lines(run, proc)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err + out
    end = _assert_ended(run, "interrupted")
    assert "SIGHUP" in end["message"] and f"jepa train --resume {run}" in end["message"]
    latest = rd.read_latest(run)
    assert latest.step >= 3 and end["last_checkpoint"] == str(latest.weights)


def _disposition(sig: int, handler):
    def apply() -> None:  # in the child, before exec: what `nohup` (SIG_IGN) or a plain shell (SIG_DFL) leaves
        signal.signal(sig, handler)

    return apply


@pytest.mark.parametrize("name", ["SIGHUP", "SIGINT"])
def test_a_signal_ignored_at_start_stays_ignored_for_the_whole_run(tmp_path, text, name):
    """`nohup jepa train ... &` (SIGHUP ignored), a script's background job (SIGINT ignored): the signal,
    sent every 50 ms from the start (Python's start-up, the data preparation in a fresh JEPA_HOME,
    building, the step loop, the end), never stops the run: it trains to the end, exit 0."""
    sig = getattr(signal, name)
    run = tmp_path / "nohup"
    proc = subprocess.Popen(_argv(*_sets(text, "train.max_steps=40"), "--profile", "tiny", "--run-dir", str(run)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path / "home"),
                            preexec_fn=_disposition(sig, signal.SIG_IGN))
    sent_before_start = sent_while_training = 0
    collect = threading.Thread(target=lambda: setattr(proc, "outputs", proc.communicate(timeout=300)))
    collect.start()
    while proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        training = (run / rd.METRICS).exists() and '"type":"train"' in (run / rd.METRICS).read_text()
        sent_while_training += training
        sent_before_start += not (run / rd.METRICS).exists()
        time.sleep(0.05)
    collect.join()
    out, err = proc.outputs
    assert proc.returncode == 0, err[-3000:]
    assert sent_before_start >= 5 and sent_while_training >= 5  # it was there all along, and ignored
    end = _assert_ended(run, "finished", step=40)
    assert end["step"] == 40


@pytest.mark.parametrize("name", ["SIGHUP", "SIGINT"])
def test_a_signal_not_ignored_at_start_stops_the_run_with_a_checkpoint(tmp_path, text, home, name):
    """The same signal with its default disposition (a plain background job over SSH, on hang-up): the run
    stops after a checkpoint at the step it reached, exit 130, resumable."""
    sig = getattr(signal, name)
    run = tmp_path / "plain"
    proc = subprocess.Popen(_argv(*_sets(text, "train.max_steps=100000"), "--profile", "tiny", "--run-dir", str(run)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(home),
                            preexec_fn=_disposition(sig, signal.SIG_DFL))
    _wait_for_train_lines(run, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in out + err
    end = _assert_ended(run, "interrupted")
    assert name in end["message"] and rd.read_latest(run).step == end["step"] >= 3


@pytest.mark.parametrize("mode", ["head_1", "stdout_closed", "stderr_closed"])
def test_broken_or_closed_output_never_stops_training(tmp_path, text, home, mode):
    """`| head -1`, `>&-` and `2>&-`: the run still finishes, checkpoints and writes run_end."""
    run = tmp_path / mode
    argv = _argv(*_sets(text, "train.max_steps=6"), "--profile", "tiny", "--run-dir", str(run))
    if mode == "head_1":
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(home))
        first = proc.stdout.readline()
        proc.stdout.close()  # what `head -1` does after its line
        err = proc.stderr.read().decode()
        proc.wait(timeout=300)
        assert first.strip()
    else:
        fd = 1 if mode == "stdout_closed" else 2
        keep = subprocess.PIPE
        proc = subprocess.Popen(argv, stdout=keep if fd == 2 else subprocess.DEVNULL, stderr=keep if fd == 1 else subprocess.DEVNULL,
                                preexec_fn=lambda: os.close(fd), env=_env(home))
        out, err_b = proc.communicate(timeout=300)
        err = (out or err_b or b"").decode()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err
    _assert_ended(run, "finished", step=6)


# --------------------------------------------------------------------------- two trainers, one directory


def test_second_trainer_is_refused_and_the_first_unharmed(tmp_path, text, home):
    run = tmp_path / "busy"
    first = subprocess.Popen(_argv(*_sets(text, "train.max_steps=100000", "train.checkpoint_every=2"), "--profile", "tiny", "--run-dir", str(run)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(home))
    _wait_for_train_lines(run, first)
    for extra in (["--resume", str(run)], ["--profile", "tiny", "--run-dir", str(run)]):
        second = subprocess.run(_argv(*_sets(text, "train.max_steps=100000"), *extra), capture_output=True, text=True, env=_env(home), timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"process {first.pid} on {socket.gethostname()}" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None  # still training
    (run / rd.STOPFILE).touch()
    out, err = first.communicate(timeout=180)
    assert first.returncode == 130, err[-3000:]
    end = _assert_ended(run, "interrupted")
    recs = _records(run)
    assert sum(r.get("event") == "run_start" for r in recs) == 1  # the refused trainers wrote nothing
    # rotation was not fought over: the kept checkpoints are the newest ones, all whole
    ckpts = rd.list_checkpoints(run / "checkpoints")
    assert ckpts and all(rd.verify_checkpoint(c) is None for c in ckpts) and ckpts[-1].step == end["step"]

    # --run-dir on the finished run: refused, with the command that continues it
    again = subprocess.run(_argv(*_sets(text), "--profile", "tiny", "--run-dir", str(run)), capture_output=True, text=True, env=_env(home), timeout=300)
    assert again.returncode == 2 and "already holds a run" in again.stderr and f"jepa train --resume {run}" in again.stderr
    assert "Traceback" not in again.stderr
    assert _records(run) == recs


# --------------------------------------------------------------------------- write failures


def _limit_fsize(n: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))  # Python ignores SIGXFSZ: writes fail with EFBIG

    return apply


def test_file_size_limit_on_a_checkpoint_is_a_clean_write_failure(tmp_path, text, home):
    run = _base_run(text, tmp_path, "fsize")
    weights = (run / "checkpoints" / rd.weights_name(4)).stat().st_size
    assert (run / rd.METRICS).stat().st_size < weights // 2
    proc = subprocess.run(_argv(*_sets(text, "train.max_steps=8", "train.checkpoint_every=2"), "--resume", str(run)),
                          capture_output=True, text=True, env=_env(home), timeout=300, preexec_fn=_limit_fsize(weights // 2))
    both = proc.stdout + proc.stderr
    assert proc.returncode == 2, both[-3000:]
    assert "Traceback" not in both
    assert "File too large (errno 27)" in both and rd.weights_name(6) in both
    assert f"the last good checkpoint is {run / 'checkpoints' / rd.weights_name(4)}" in both
    end = _assert_ended(run, "write_failed", step=4)
    assert end["step"] == 6
    assert not list(run.rglob(".*.tmp"))  # the failed write's temp file was removed


def test_file_size_limit_on_metrics_leaves_no_glued_line(tmp_path, text, home):
    run = _base_run(text, tmp_path, "fsize_metrics")
    size = (run / rd.METRICS).stat().st_size
    # room for part of the resumed run's first record only: the write stops mid-line
    proc = subprocess.run(_argv(*_sets(text, "train.max_steps=8"), "--resume", str(run)), capture_output=True, text=True,
                          env=_env(home), timeout=300, preexec_fn=_limit_fsize(size + 700))
    both = proc.stdout + proc.stderr
    assert proc.returncode == 2, both[-3000:]
    assert "Traceback" not in both and "metrics.jsonl" in both and "errno 27" in both
    assert rd.read_latest(run).step == 4
    raw = (run / rd.METRICS).read_text()
    assert len(raw.encode()) == size + 700 and not raw.endswith("\n")
    # the next run starts its records on a line of their own
    ok = subprocess.run(_argv(*_sets(text, "train.max_steps=6"), "--resume", str(run)), capture_output=True, text=True, env=_env(home), timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    lines = (run / rd.METRICS).read_text().splitlines()
    broken = [l for l in lines if not l.endswith("}")]
    assert len(broken) == 1 and broken[0].count('{"type"') == 1
    recs = [json.loads(l) for l in lines if l not in broken]
    assert sum(r.get("event") == "run_start" for r in recs) == 2 and recs[-1]["status"] == "finished"


def _can_mount() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"], capture_output=True, timeout=30)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs `unshare -m` and mount (root or CAP_SYS_ADMIN)")


def _in_namespace(script: str, home: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `script` under sh in a private mount namespace: its mounts vanish with it and nobody else sees them."""
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=_env(home), timeout=timeout)


def _shell(argv: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


@needs_mount
def test_read_only_checkpoints_folder_via_a_real_mount(tmp_path, text, home):
    """Root ignores chmod, so the folder is bind-mounted read-only (EROFS) in a private namespace."""
    run = _base_run(text, tmp_path, "ro")
    ck = run / "checkpoints"
    (ck / ".step-00000002.safetensors.x.tmp").write_bytes(b"left by a kill")  # cannot be swept: must not matter
    cmd = _shell(_argv(*_sets(text, "train.max_steps=8", "train.checkpoint_every=2"), "--resume", str(run)))
    proc = _in_namespace(f"mount --bind {ck} {ck} && mount -o remount,bind,ro {ck} {ck} && {cmd}", home)
    both = proc.stdout + proc.stderr
    assert proc.returncode == 2, both[-3000:]
    assert "Traceback" not in both and "Read-only file system (errno 30)" in both
    assert f"the last good checkpoint is {ck / rd.weights_name(4)}" in both
    _assert_ended(run, "write_failed", step=4)


@needs_mount
def test_run_folder_made_read_only_while_training_is_an_exit_2_paragraph(tmp_path, text, home):
    """The whole run folder bind-mounted read-only mid-run, as an admin's remount would (root ignores chmod):
    the next checkpoint fails (EROFS), and so does removing train.pid at the end. Exit 2, no traceback; the
    message names the checkpoint that was written and says that the pid file left is harmless."""
    run = tmp_path / "ro_mid_run"
    cmd = _shell(_argv(*_sets(text, "train.max_steps=100000", "train.checkpoint_every=10"), "--profile", "tiny", "--run-dir", str(run)))
    script = (f"{cmd} & P=$!; while [ ! -f {run}/checkpoints/latest.json ] && kill -0 $P 2>/dev/null; do sleep 0.05; done; "
              f"mount --bind {run} {run} && mount -o remount,bind,ro {run} {run}; wait $P")
    proc = _in_namespace(script, home)
    both = proc.stdout + proc.stderr
    assert proc.returncode == 2, both[-3000:]
    assert "Traceback" not in both and "Read-only file system (errno 30)" in both
    said = " ".join(both.split())
    latest = rd.read_latest(run)
    assert latest is not None and rd.verify_checkpoint(latest) is None
    assert f"the last good checkpoint is {latest.weights}" in said
    assert "train.pid stays in the run directory (Read-only file system (errno 30)); it is harmless" in said
    assert (run / rd.PIDFILE).exists()  # left, as said
    end = _records(run)[-1]  # the trainer's open metrics file still takes its lines
    assert end["event"] == "run_end" and end["status"] == "write_failed" and end["last_checkpoint"] == str(latest.weights)


@needs_mount
def test_full_disk_via_a_tiny_tmpfs(tmp_path, text, home):
    """The run directory copied onto a tmpfs with room for one more weights file but not its state
    file: ENOSPC mid-checkpoint. The tmpfs dies with the namespace, so the script copies it back."""
    run = _base_run(text, tmp_path, "full")
    used = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    weights = (run / "checkpoints" / rd.weights_name(4)).stat().st_size
    room = used + weights + 64 * 1024  # the state file (larger than the weights) will not fit
    cmd = _shell(_argv(*_sets(text, "train.max_steps=8", "train.checkpoint_every=2"), "--resume", str(run)))
    back = tmp_path / "back"
    script = (f"mkdir -p {run}.mnt && mount -t tmpfs -o size={room} tmpfs {run}.mnt && cp -a {run}/. {run}.mnt/ "
              f"&& mount --bind {run}.mnt {run} && {{ {cmd}; rc=$?; cp -a {run}/. {back}/; exit $rc; }}")
    back.mkdir()
    proc = _in_namespace(script, home)
    both = proc.stdout + proc.stderr
    assert proc.returncode == 2, both[-3000:]
    assert "Traceback" not in both and "No space left on device (errno 28)" in both
    assert f"the last good checkpoint is {run / 'checkpoints' / rd.weights_name(4)}" in both
    assert rd.read_latest(back).step == 4
    good = rd.CheckpointRef(back, 4, back / "checkpoints" / rd.weights_name(4), back / "checkpoints" / rd.state_name(4))
    assert rd.verify_checkpoint(good) is None
    assert not list(back.rglob(".*.tmp"))
    end = _records(back)[-1]
    assert end["event"] == "run_end" and end["status"] == "write_failed"


@pytest.mark.parametrize("damage", ["newest_cut_short", "latest_garbage", "latest_missing"])
def test_resume_says_which_checkpoint_it_used_and_why(tmp_path, text, home, damage):
    """Every fallback is said once on a `note:` line and recorded in the resume event, including the
    ones where the checkpoint used is the newest and whole but latest.json did not name it."""
    run = tmp_path / "fallback"
    sets = _sets(text, "train.max_steps=6", "train.checkpoint_every=2")[1::2]
    assert train(small_config(text, tmp_path / "runs", *sets), run_dir=run, handle_signals=False).status == "finished"
    ckpts = run / "checkpoints"
    if damage == "newest_cut_short":
        newest = ckpts / rd.weights_name(6)
        with open(newest, "r+b") as f:
            f.truncate(newest.stat().st_size - 100)
        step, why = 4, "step-00000006.safetensors is damaged"
    elif damage == "latest_garbage":
        (ckpts / rd.LATEST).write_bytes(b"\x00garbage{")
        step, why = 6, "latest.json is unreadable"
    else:  # a SIGKILL before the first latest.json was written
        (ckpts / rd.LATEST).unlink()
        step, why = 6, "latest.json is missing"
    proc = subprocess.run(_argv(*_sets(text, "train.max_steps=8", "train.checkpoint_every=2"), "--resume", str(run)),
                          capture_output=True, text=True, env=_env(home), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    both = proc.stdout + proc.stderr
    notes = [line for line in both.splitlines() if line.startswith("note:") and why in line]
    assert len(notes) == 1 and f"resuming from step {step}" in notes[0], both[-3000:]
    assert both.count(why) == 1
    resumed = [r for r in _records(run) if r.get("event") == "resume"][-1]
    assert resumed["from_step"] == step and why in resumed["fallback"]
    _assert_ended(run, "finished", step=8)


# --------------------------------------------------------------------------- memory


def test_oversized_model_is_refused_before_allocating(tmp_path, text, home):
    """A ~50-billion-parameter model on this machine: refused quickly, with low memory, exit 2."""
    big = _sets(text, "model.d_model=8192", "model.n_layers=64", "model.n_heads=64", "jepa.latent_dim=64", "train.max_steps=2")
    t0 = time.monotonic()
    proc = subprocess.Popen(_argv(*big, "--profile", "tiny", "--run-dir", str(tmp_path / "big")), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=_env(home))
    killer = threading.Timer(300, proc.kill)
    killer.start()
    try:
        err = proc.stderr.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS, not the other tests' children
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    took = time.monotonic() - t0
    assert proc.returncode == 2, err[-3000:]
    assert "would not fit in memory" in err and "--force" in err and "Traceback" not in err
    assert "suggest" in err or "smaller model" in err
    assert not (tmp_path / "big").exists()
    assert took < 240
    assert usage.ru_maxrss < 2_000_000  # KiB: well under 2 GB (the fp32 weights alone would be ~200 GB)
