"""`jepa ablate`: plan checks, an end-to-end tiny ablation (same batches per seed across arms,
report numbers traced back to the runs' files), Ctrl-C and --resume, and the report reader."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jepa_cli.main import app
from jepa_core import ablate as ab
from jepa_core.errors import CheckpointError, ConfigError
from jepa_core.stats import welch_t_test

import train_helpers
from train_helpers import small_text

runner = CliRunner()


def small_overrides(text: Path, *extra: str) -> list[str]:
    """The small shape of tests/train_helpers.py, 4 steps, evals at 2 and 4."""
    return train_helpers.small_overrides(
        text,
        "train.max_steps=4",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "train.sample_tokens=0",
        "optim.warmup_steps=1",
        *extra,
    )


@pytest.fixture
def shared_data(shared_home, monkeypatch, tmp_path_factory):
    """A JEPA_HOME shared by this module's runs, so the text is tokenized once."""
    monkeypatch.setenv("JEPA_HOME", str(shared_home))
    return small_text(tmp_path_factory.getbasetemp())


# --------------------------------------------------------------------------- arms and plan


def test_parse_arm_splits_only_between_overrides():
    arm = ab.parse_arm("wide:jepa.horizons=[2,8,16],jepa.horizon_probs=[0.5, 0.25, 0.25], model.grad_barrier=true")
    assert arm.name == "wide"
    assert arm.overrides == ("jepa.horizons=[2,8,16]", "jepa.horizon_probs=[0.5, 0.25, 0.25]", "model.grad_barrier=true")
    assert ab.parse_arm("plain").overrides == () and ab.parse_arm("plain:").overrides == ()
    with pytest.raises(ConfigError, match="name"):
        ab.parse_arm(":jepa.tau=0.2")
    with pytest.raises(ConfigError, match="section.key=value"):
        ab.parse_arm("x:tau")


def test_plan_defaults_and_seeds(tmp_path):
    plan = ab.plan_ablation("tiny", 3, [], ["train.seed=10"], out=tmp_path / "abl")
    assert [a.name for a in plan.arms] == ["baseline", "jepa"] and plan.reference == "baseline"
    assert plan.seeds == [10, 11, 12]
    assert [r.name for r in plan.runs()][:3] == ["baseline-s0", "jepa-s0", "baseline-s1"]
    assert plan.config_for("baseline", 2).jepa.run_baseline and plan.config_for("baseline", 2).train.seed == 12
    assert not plan.config_for("jepa", 0).jepa.run_baseline
    assert not (tmp_path / "abl").exists()  # planning writes nothing


def test_plan_rejects_unfair_arms(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.block_size \(a: 128, b: 64\)"):
        ab.plan_ablation("tiny", 2, ["a:jepa.tau=0.2", "b:data.block_size=64"], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="train.precision|precision"):
        ab.plan_ablation("tiny", 2, ["a:", "b:train.precision=\"bf16\""], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="train.seed"):
        ab.plan_ablation("tiny", 2, ["a:", "b:train.seed=3"], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="Two arms"):
        ab.plan_ablation("tiny", 2, ["a:", "a:jepa.tau=0.2"], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="jepa.horizon_probs` in arm `b`"):
        ab.plan_ablation("tiny", 2, ["a:", "b:jepa.horizons=[2,8]"], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="Arm `b`: Unknown key `jepa.tua`.*jepa.tau"):
        ab.plan_ablation("tiny", 2, ["a:", "b:jepa.tua=0.2"], out=tmp_path / "x")


def test_plan_refuses_an_existing_ablation(tmp_path):
    (tmp_path / "abl").mkdir()
    (tmp_path / "abl" / ab.MANIFEST).write_text("{}")
    with pytest.raises(ConfigError, match="--resume"):
        ab.plan_ablation("tiny", 2, out=tmp_path / "abl")
    with pytest.raises(CheckpointError, match="not an ablation folder"):
        ab.load_plan(tmp_path / "nothing-here")


# --------------------------------------------------------------------------- end to end


def test_cli_ablation_end_to_end(shared_data, tmp_path):
    import numpy as np

    from jepa_core.data import TrainBatcher, load_prepared

    out = tmp_path / "abl"
    args = ["ablate", "--profile", "tiny", "--seeds", "2", "--out", str(out)]
    for o in small_overrides(shared_data):
        args += ["--set", o]
    res = runner.invoke(app, args, env={"COLUMNS": "150"})
    assert res.exit_code == 0, res.output
    assert "difference to baseline" in res.stdout and "data order verified" in res.stdout
    for name in ("baseline-s0", "baseline-s1", "jepa-s0", "jepa-s1"):
        assert name in res.stdout

    rep = json.loads((out / ab.REPORT_JSON).read_text())
    assert (out / ab.REPORT_MD).read_text().startswith("# Ablation")
    manifest = json.loads((out / ab.MANIFEST).read_text())
    assert [r["status"] for r in manifest["runs"]] == ["finished"] * 4
    assert [a["name"] for a in rep["arms"]] == ["baseline", "jepa"] and rep["complete"]

    # report numbers traced back to the runs' own eval lines
    finals = {}
    for arm in ("baseline", "jepa"):
        for i in range(2):
            evals = [json.loads(l) for l in (out / f"{arm}-s{i}" / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
            assert [e["step"] for e in evals] == [2, 4]
            finals[arm, i] = evals[-1]
    by_arm = {a["name"]: a for a in rep["arms"]}
    for arm in ("baseline", "jepa"):
        vals = [finals[arm, i]["val_loss"] for i in range(2)]
        assert by_arm[arm]["summary"]["val_loss"]["mean"] == pytest.approx(sum(vals) / 2, rel=1e-12)
        assert by_arm[arm]["summary"]["val_loss"]["std"] == pytest.approx(abs(vals[0] - vals[1]) / 2**0.5, rel=1e-9)
        assert rep["curves"][arm]["steps"] == [2, 4]
    top1 = [(finals["jepa", i]["retrieval_top1_h1"] + finals["jepa", i]["retrieval_top1_h4"]) / 2 for i in range(2)]
    assert by_arm["jepa"]["summary"]["retrieval_top1"]["mean"] == pytest.approx(sum(top1) / 2)
    assert by_arm["baseline"]["summary"]["retrieval_top1"]["n"] == 0  # NA for the baseline
    cmp = {c["metric"]: c for c in rep["comparisons"]}
    expected = welch_t_test([finals["jepa", i]["val_bpb"] for i in range(2)], [finals["baseline", i]["val_bpb"] for i in range(2)])
    assert cmp["val_bpb"]["p"] == pytest.approx(expected.p) and 0 <= cmp["val_bpb"]["p"] <= 1
    assert (cmp["val_bpb"]["n_arm"], cmp["val_bpb"]["n_ref"]) == (2, 2)
    assert cmp["retrieval_top1"]["p"] is None

    # the two arms of a seed drew identical batches, and they are the batches the seed defines
    cfg = ab.load_plan(out).config_for("jepa", 0)
    tokens = load_prepared(cfg.data).train_tokens
    for i in range(2):
        base, jepa = ab.read_batch_log(out / f"baseline-s{i}"), ab.read_batch_log(out / f"jepa-s{i}")
        assert sorted(base) == [0, 1, 2, 3] and base == jepa
        ref = TrainBatcher(np.asarray(tokens), 32, 4, seed=cfg.train.seed + i)
        assert [ab.batch_digest(*ref.next()) for _ in range(4)] == [base[k] for k in range(4)]
    assert ab.read_batch_log(out / "jepa-s0") != ab.read_batch_log(out / "jepa-s1")
    assert rep["data_order"]["ok"] is True

    # a tampered batch log is caught
    log = out / "jepa-s1" / ab.BATCH_LOG
    lines = log.read_text().splitlines()
    lines[2] = lines[2].split()[0] + " " + "0" * 32
    log.write_text("\n".join(lines) + "\n")
    d = ab.verify_data_order(ab.load_plan(out))
    assert d["ok"] is False and "seed 1" in d["mismatches"][0] and "batch 2" in d["mismatches"][0]


class _CtrlC(ab.AblationCallbacks):
    """Presses Ctrl-C (a real SIGINT to this process) at step 3 of one run."""

    def __init__(self, run: str):
        self.run = run

    def train_callbacks(self, spec):
        from jepa_core.train.loop import TrainCallbacks

        target = self.run

        class Hit(TrainCallbacks):
            def on_step(self, step, max_steps):
                if spec.name == target and step == 3:
                    os.kill(os.getpid(), signal.SIGINT)

        return Hit()


def test_ctrl_c_stops_and_resume_continues(shared_data, tmp_path):
    out = tmp_path / "abl"
    plan = ab.plan_ablation("tiny", 2, ["a:jepa.tau=0.2", "b:"], small_overrides(shared_data), out=out)
    outcome = ab.run_ablation(plan, callbacks=_CtrlC("b-s0"))
    assert outcome.stopped
    status = {r["name"]: r["status"] for r in json.loads((out / ab.MANIFEST).read_text())["runs"]}
    assert status == {"a-s0": "finished", "b-s0": "interrupted", "a-s1": "pending", "b-s1": "pending"}
    assert not outcome.report["complete"]
    assert "--resume" in (out / ab.REPORT_MD).read_text()
    done_before = (out / "a-s0" / "metrics.jsonl").read_bytes()

    # a run that died before its first checkpoint is restarted, not resumed
    (out / "a-s1").mkdir()
    (out / "a-s1" / "metrics.jsonl").write_text('{"type": "event", "step": 0, "time": 0, "event": "run_start"}\n')

    class Actions(ab.AblationCallbacks):
        def __init__(self):
            self.actions, self.skipped = {}, []

        def on_skip(self, spec, status):
            self.skipped.append(spec.name)

        def on_run_start(self, spec, position, total, action):
            self.actions[spec.name] = action

    cb = Actions()
    outcome = ab.run_ablation(ab.load_plan(out), callbacks=cb)
    assert not outcome.stopped and outcome.report["complete"]
    assert cb.skipped == ["a-s0"]
    assert cb.actions == {"b-s0": "resume from step 3", "a-s1": "restart (no checkpoint)", "b-s1": "start"}
    assert (out / "a-s0" / "metrics.jsonl").read_bytes() == done_before  # the finished run was not touched
    events = [json.loads(l) for l in (out / "b-s0" / "metrics.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "resume" and e["from_step"] == 3 for e in events)
    # the resumed run drew the same 4 batches as the uninterrupted arm
    assert ab.read_batch_log(out / "b-s0") == ab.read_batch_log(out / "a-s0") and len(ab.read_batch_log(out / "a-s0")) == 4
    assert outcome.report["data_order"]["ok"] is True
    summary = ab.run_summary(out / "b-s0")
    assert summary["segments"] == 2 and summary["status"] == "finished" and [s for s, _ in summary["curve"]] == [2, 4]


# --------------------------------------------------------------------------- the reader


def _write(run: Path, recs: list[dict], tail: str = "") -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + tail)


def test_run_summary_segments_by_hand(tmp_path):
    ev = lambda **k: {"type": "event", "time": 0, **k}  # noqa: E731
    recs = [
        ev(step=0, event="run_start", start_step=0, tokens_per_step=100),
        {"type": "eval", "step": 10, "time": 0, "val_loss": 3.0, "val_bpb": 2.0, "retrieval_top1_h2": 0.5, "retrieval_top1_h8": 0.25, "eff_rank": 7.0},
        {"type": "eval", "step": 20, "time": 0, "val_loss": 2.9, "val_bpb": 1.9},  # after the checkpoint at 10: replayed
        ev(step=20, event="run_end", status="interrupted", tokens=2000, train_time=4.0, wall_s=5.0),
        ev(step=10, event="run_start", start_step=10, tokens_per_step=100),
        ev(step=10, event="resume", from_step=10),
        {"type": "eval", "step": 20, "time": 0, "val_loss": 2.8, "val_bpb": 1.8, "retrieval_top1_h2": 0.75, "retrieval_top1_h8": 0.5, "eff_rank": 9.0},
        ev(step=20, event="run_end", status="finished", tokens=2000, train_time=1.0, wall_s=2.0),
    ]
    _write(tmp_path / "r", recs, tail='{"type": "eval", "step": 30, "val_lo')  # a half-written last line
    s = ab.run_summary(tmp_path / "r")
    assert s["status"] == "finished" and s["segments"] == 2 and s["step"] == 20
    assert s["curve"] == [(10, 2.0), (20, 1.8)]
    assert (s["val_loss"], s["val_bpb"], s["eff_rank"]) == (2.8, 1.8, 9.0)
    assert s["retrieval_top1"] == pytest.approx(0.625)
    # (2000 - 0) + (2000 - 1000) tokens over 4 + 1 s of steps
    assert s["tok_per_s"] == pytest.approx(3000 / 5.0) and s["wall_s"] == pytest.approx(7.0)


def test_run_status_cases(tmp_path):
    assert ab.run_status(tmp_path / "none") == ("pending", 0, "")
    _write(tmp_path / "killed", [{"type": "event", "step": 0, "time": 0, "event": "run_start"}, {"type": "train", "step": 5, "time": 0}])
    assert ab.run_status(tmp_path / "killed") == ("incomplete", 5, "")
    _write(tmp_path / "div", [{"type": "event", "step": 7, "time": 0, "event": "run_end", "status": "diverged", "message": "nan"}])
    assert ab.run_status(tmp_path / "div") == ("diverged", 7, "nan")


def test_line_chart_draws_every_series():
    from jepa_cli.render.ablate import line_chart

    lines = line_chart({"a": [(0, 3.0), (10, 2.0), (20, 1.5)], "b": [(0, 3.1), (20, 2.5)]}, {"a": "cyan", "b": "magenta"}, width=40, height=8)
    assert len(lines) == 8 + 3
    body = "\n".join(l.plain for l in lines[:8])
    assert body.count("●") == 5  # one marker per eval point
    assert "3.1" in lines[0].plain or "3.1" in lines[0].plain.strip()
    assert "a" in lines[-1].plain and "b" in lines[-1].plain
