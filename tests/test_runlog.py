"""jepa_core.rundir.live: tailing metrics.jsonl, columns, alerts, status, discovery."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jepa_core.errors import CheckpointError, JepaError
from jepa_core.rundir.listing import discover_runs
from jepa_core.rundir.live import MetricsTail, RunLog, RunSet, Table
from jepa_core.rundir.lock import pid_is_local_and_alive
from jepa_core.rundir.lock import read_pidfile as read_pid_file


def _line(**kw) -> str:
    return json.dumps(kw) + "\n"


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def test_tail_waits_for_a_half_written_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    tail = MetricsTail(p)
    assert tail.read().records == []  # no file yet: nothing, no error
    full = _line(type="train", step=10, time=1.0, loss=2.5)
    _append(p, full + full[:17])
    r = tail.read()
    assert [x["step"] for x in r.records] == [10] and not r.reset
    assert tail.read().records == []  # still half a line
    _append(p, full[17:])
    r = tail.read()
    assert [x["step"] for x in r.records] == [10] and r.records[0]["loss"] == 2.5


def test_tail_starts_over_when_truncated_or_replaced(tmp_path):
    p = tmp_path / "metrics.jsonl"
    tail = MetricsTail(p)
    p.write_text("".join(_line(type="train", step=s, time=s) for s in (1, 2, 3)))
    assert [x["step"] for x in tail.read().records] == [1, 2, 3]
    p.write_text(_line(type="train", step=7, time=7))  # shorter: truncated and rewritten
    r = tail.read()
    assert r.reset and [x["step"] for x in r.records] == [7]
    # replaced by another file (new inode), longer than what was read
    q = tmp_path / "new.jsonl"
    q.write_text("".join(_line(type="train", step=s, time=s) for s in (100, 200, 300)))
    os.replace(q, p)
    r = tail.read()
    assert r.reset and [x["step"] for x in r.records] == [100, 200, 300]


def test_tail_notices_a_rewrite_in_place_that_grew(tmp_path):
    p = tmp_path / "metrics.jsonl"
    tail = MetricsTail(p)
    p.write_text(_line(type="train", step=1, time=1))
    tail.read()
    with open(p, "r+") as f:  # same inode, different start, longer
        f.write(_line(type="train", step=5, time=5) + _line(type="train", step=6, time=6))
    r = tail.read()
    assert r.reset and [x["step"] for x in r.records] == [5, 6]


def test_tail_counts_and_skips_garbage_lines(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(_line(type="train", step=1, time=1) + '{"type": "tr\n[1, 2]\n\n' + _line(type="train", step=2, time=2))
    r = MetricsTail(p).read()
    assert [x["step"] for x in r.records] == [1, 2] and r.bad_lines == 2


def test_table_backfills_missing_keys_with_nan():
    t = Table()
    assert t.append({"step": 1, "a": 1.0, "name": "x", "flag": True}) == []
    t.append({"step": 2, "b": 5})
    t.append({"step": 3, "a": 3.0, "b": 6})
    assert t.n == 3
    assert list(t.column("step")) == [1.0, 2.0, 3.0]
    a, b = list(t.column("a")), list(t.column("b"))
    assert a[0] == 1.0 and math.isnan(a[1]) and a[2] == 3.0
    assert math.isnan(b[0]) and b[1:] == [5.0, 6.0]
    assert t.column("name") is None and t.column("flag") is None  # strings and bools are not columns
    assert t.last("a") == 3.0 and t.has("b")
    t.append({"step": 4, "a": float("nan")})
    assert t.last("a") == 3.0  # the last finite value
    t.drop_after_step(2)
    assert t.n == 2 and len(t.column("a")) == 2 and len(t.column("b")) == 2


NONFINITE = (
    '{"type": "train", "step": 10, "time": 1, "loss": 2.0, "lm_loss": 1.5}\n'
    '{"type": "train", "step": 20, "time": 2, "loss": NaN, "lm_loss": Infinity}\n'
    '{"type": "train", "step": 30, "time": 3, "loss": -Infinity, "lm_loss": 1.4}\n'
    '{"type": "eval", "step": 30, "time": 3, "val_loss": NaN}\n'
)


def test_nonfinite_values_are_kept_and_alerted(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(NONFINITE)
    run = RunLog(tmp_path)
    assert run.poll()
    loss = list(run.train.column("loss"))
    assert loss[0] == 2.0 and math.isnan(loss[1]) and loss[2] == -math.inf
    alerts = {(a.kind, a.key): a for a in run.alert_list()}
    assert set(alerts) == {("nonfinite", "loss"), ("nonfinite", "lm_loss"), ("nonfinite", "val_loss")}
    a = alerts[("nonfinite", "loss")]
    assert (a.first_step, a.last_step, a.count) == (20, 30, 2)
    assert alerts[("nonfinite", "lm_loss")].count == 1


def test_alert_events_aggregate_and_run_end_sets_status(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(
        _line(type="event", step=0, time=0, event="run_start", run_name="r1", profile="tiny", device="cpu", precision="fp32", max_steps=100)
        + _line(type="event", step=30, time=3, event="alert", kind="collapse", message="std_anchor 0.004 < 0.01")
        + _line(type="event", step=40, time=4, event="alert", kind="collapse", message="std_anchor 0.003 < 0.01")
        + _line(type="event", step=50, time=5, event="something_new", payload=[1])
        + _line(type="mystery", step=50, time=5)
        + _line(type="event", step=50, time=5, event="run_end", status="diverged", message="loss is NaN")
    )
    run = RunLog(tmp_path)
    run.poll()
    assert (run.name, run.profile, run.device, run.max_steps) == ("r1", "tiny", "cpu fp32", 100)
    col = run.alerts[("collapse", "collapse")]
    assert (col.count, col.first_step, col.last_step, col.message) == (2, 30, 40, "std_anchor 0.003 < 0.01")
    assert ("diverged", "diverged") in run.alerts
    st = run.status()
    assert st.state == "diverged" and st.detail == "loss is NaN" and not st.live
    assert len(run.events) == 5  # unknown events are kept for the log pane


def test_resume_drops_the_replayed_steps(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text("".join(_line(type="train", step=s, time=s, loss=float(s)) for s in (10, 20, 30, 40)) + _line(type="eval", step=40, time=40, val_loss=1.0))
    _append(p, _line(type="event", step=20, time=50, event="resume", from_step=20) + _line(type="train", step=30, time=51, loss=99.0))
    run = RunLog(tmp_path)
    run.poll()
    assert list(run.train.column("step")) == [10.0, 20.0, 30.0]
    assert list(run.train.column("loss")) == [10.0, 20.0, 99.0]
    assert run.evals.n == 0


def _progress_file(path: Path, t0: float, upto: int = 100) -> None:
    lines = [_line(type="event", step=0, time=t0, event="run_start", run_name="r", profile="p", device="cpu", max_steps=200)]
    # 10 steps every 5 s: 2 steps/s
    lines += [_line(type="train", step=s, time=t0 + s * 0.5, elapsed=s * 0.5, tokens=s * 1000, tok_per_s=2000.0, loss=1.0) for s in range(10, upto + 1, 10)]
    path.write_text("".join(lines))


def test_progress_eta_and_elapsed_from_hand_computed_numbers(tmp_path):
    t0 = 1_000_000.0
    _progress_file(tmp_path / "metrics.jsonl", t0)
    mtime = os.stat(tmp_path / "metrics.jsonl").st_mtime
    now = [mtime + 3.0]
    run = RunLog(tmp_path, clock=lambda: now[0], stale_after=60)
    run.poll()
    assert run.step == 100 and run.tokens == 100_000 and run.tok_per_s == 2000.0
    assert run.steps_per_second() == pytest.approx(2.0)
    assert run.eta() == pytest.approx((200 - 100) / 2.0)
    assert run.status().state == "running"
    # elapsed = last elapsed (50 s) + time since the last line was written (clock - line time)
    assert run.elapsed() == pytest.approx(50.0 + (now[0] - (t0 + 50.0)))
    now[0] = mtime + 61.0
    st = run.status()
    assert st.state == "stale" and "no new metrics for 61s" in st.detail
    assert run.elapsed() == pytest.approx(50.0)  # not running: no extrapolation


def test_stale_threshold_follows_the_logging_gap(tmp_path):
    # lines every 30 s: quiet for 100 s is normal (5 gaps = 150 s), 200 s is stale
    t0 = 1_000_000.0
    p = tmp_path / "metrics.jsonl"
    p.write_text("".join(_line(type="train", step=s, time=t0 + 30 * s, loss=1.0) for s in range(1, 10)))
    mtime = os.stat(p).st_mtime
    now = [mtime + 100]
    run = RunLog(tmp_path, clock=lambda: now[0], stale_after=60)
    run.poll()
    assert run.status().state == "running"
    now[0] = mtime + 200
    assert run.status().state == "stale"


def test_status_waiting_stopping_and_dead_trainer(tmp_path):
    run = RunLog(tmp_path)
    run.poll()
    assert run.status().state == "waiting"
    _progress_file(tmp_path / "metrics.jsonl", 1_000_000.0)
    run = RunLog(tmp_path, clock=lambda: os.stat(tmp_path / "metrics.jsonl").st_mtime + 1)
    run.poll()
    (tmp_path / "stop").write_text("")
    assert run.status().state == "stopping"
    (tmp_path / "stop").unlink()
    # a pid file that names a process which has exited, on this host
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / "train.pid").write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname(), "started": 0}))
    st = run.status()
    assert st.state == "stale" and "exited" in st.detail


def test_pid_file_helpers(tmp_path):
    assert read_pid_file(tmp_path) is None
    (tmp_path / "train.pid").write_text("not json")
    assert read_pid_file(tmp_path) is None
    (tmp_path / "train.pid").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": 1}))
    info = read_pid_file(tmp_path)
    assert pid_is_local_and_alive(info) is True
    assert pid_is_local_and_alive({"pid": os.getpid(), "host": "some-other-host-xyz"}) is None


def test_latest_eval_and_horizons(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        _line(type="eval", step=100, time=1, val_bpb=2.0, retrieval_top1_h8=0.1, retrieval_top1_h2=0.3, retrieval_top1_norm_h2=9.0)
        + _line(type="eval", step=200, time=2, val_bpb=1.5, retrieval_top1_h8=0.2, retrieval_top1_h2=0.4, eff_rank=12.5)
    )
    run = RunLog(tmp_path)
    run.poll()
    ev = run.latest_eval()
    assert ev["step"] == 200 and ev["val_bpb"] == 1.5 and ev["eff_rank"] == 12.5
    assert math.isnan(ev["retrieval_top1_norm_h2"])  # not in the last eval line
    assert run.horizons() == [2, 8]


def test_config_falls_back_to_config_toml(tmp_path):
    from jepa_core.config import config_to_toml, load_config

    cfg = load_config("tiny", ["train.max_steps=123"])
    (tmp_path / "config.toml").write_text(config_to_toml(cfg))
    run = RunLog(tmp_path)
    run.poll()
    assert run.max_steps == 123 and run.profile == "tiny" and not run.is_baseline


def test_discover_runs(tmp_path):
    a = tmp_path / "abl" / "arm-a-seed0"
    b = tmp_path / "abl" / "arm-b-seed0"
    for d in (a, b):
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text("")
    (tmp_path / "abl" / "notes").mkdir()
    assert discover_runs([a]) == [a]
    assert discover_runs([a / "metrics.jsonl"]) == [a]
    assert discover_runs([tmp_path / "abl"]) == [a, b]
    assert discover_runs([a, tmp_path / "abl"]) == [a, b]  # no duplicates
    with pytest.raises(CheckpointError, match="does not exist"):
        discover_runs([tmp_path / "nope"])
    with pytest.raises(JepaError, match="not a run directory") as e:
        discover_runs([tmp_path / "abl" / "notes"])
    assert e.value.hint and e.value.exit_code == 2


def test_runset_labels_stay_unique(tmp_path):
    dirs = []
    for sub in ("x/run", "y/run"):
        d = tmp_path / sub
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text("")
        dirs.append(d)
    rs = RunSet.open(dirs)
    assert rs.labels() == ["x/run", "y/run"]
    assert rs.poll() == []


def test_poll_with_a_budget_reads_in_chunks_and_catches_up(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text("".join(_line(type="train", step=s, time=s, loss=1.0 / s) for s in range(1, 2001)))
    run = RunLog(tmp_path)
    assert run.poll(budget_s=0.0, chunk_bytes=4096)  # one chunk, then out of time
    assert run.behind and 0 < run.train.n < 2000
    while run.behind:
        run.poll(budget_s=0.0, chunk_bytes=4096)
    assert run.train.n == 2000 and list(run.train.column("step")) == [float(s) for s in range(1, 2001)]
    assert run.bad_lines == 0
