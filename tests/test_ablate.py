"""`jepa ablate`: arms from grids, plan checks, the report against numbers worked by hand, the
metrics reader on hostile files, and end-to-end sweeps (a 2 x 2 grid with Ctrl-C and --resume,
a diverging arm, a time budget) on the small training config."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jepa_cli.main import app
import jepa_core
from jepa_core.tools import ablate as ab
from jepa_core.rundir import summary as runlog
from jepa_core.errors import CheckpointError, ConfigError
from jepa_core.stats import paired_t_test, welch_t_test

import train_helpers
from train_helpers import small_text
from cli_helpers import cli  # noqa: F401  (fixture)

runner = CliRunner()

GRID = ["jepa.jepa_weight=0.1,0.5", "jepa.teacher=projector,encoder"]
GRID_NAMES = [
    "jepa_weight-0.1+teacher-projector",
    "jepa_weight-0.1+teacher-encoder",
    "jepa_weight-0.5+teacher-projector",
    "jepa_weight-0.5+teacher-encoder",
]


def small_overrides(text: Path, *extra: str) -> list[str]:
    """The small shape of tests/train_helpers.py, 4 steps, evals at 2 and 4 on 512 validation tokens
    (the whole split would make evaluation most of a run's time)."""
    return train_helpers.small_overrides(
        text,
        "train.max_steps=4",
        "train.eval_every=2",
        "train.eval_tokens=512",
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


# --------------------------------------------------------------------------- arms, grids and plan


def test_parse_arm_splits_only_between_overrides():
    arm = ab.parse_arm("wide:jepa.horizons=[2,8,16],jepa.horizon_probs=[0.5, 0.25, 0.25], model.grad_barrier=true")
    assert arm.name == "wide"
    assert arm.overrides == ("jepa.horizons=[2,8,16]", "jepa.horizon_probs=[0.5, 0.25, 0.25]", "model.grad_barrier=true")
    assert ab.parse_arm("plain").overrides == () and ab.parse_arm("plain:").overrides == ()
    with pytest.raises(ConfigError, match="name"):
        ab.parse_arm(":jepa.tau=0.2")
    with pytest.raises(ConfigError, match="section.key=value"):
        ab.parse_arm("x:tau")


def test_parse_grid_reads_values_as_toml():
    g = ab.parse_grid("jepa.horizons=[2,8],[4, 16]")
    assert g.key == "jepa.horizons" and g.values == ([2, 8], [4, 16]) and g.texts == ("[2,8]", "[4, 16]")
    g = ab.parse_grid('jepa.teacher="projector",encoder')  # quoted or bare, as --set reads them
    assert g.values == ("projector", "encoder")
    g = ab.parse_grid("jepa.jepa_weight=0.05, 1e-3,1")
    assert g.values == (0.05, 0.001, 1) and isinstance(g.values[2], int)
    assert ab.parse_grid('data.dataset="a,b",c').values == ("a,b", "c")  # commas inside quotes stay
    for bad, match in (
        ("jepa.jepa_weight", "section.key=V1"),
        ("jepa.jepa_weight=", "section.key=V1"),
        ("jepa.jepa_weight=0.1,,0.2", "between every two commas"),
        ("jepa.jepa_weight=0.1,0.10", "twice"),  # the same number typed two ways
        ("train.seed=1,2", "--seeds"),
        ("tau=0.1,0.2", "section.key"),
    ):
        with pytest.raises(ConfigError, match=match):
            ab.parse_grid(bad)


def test_grid_arm_names_are_readable_stable_and_safe():
    arms = ab.grid_arms([ab.parse_grid(g) for g in GRID])
    assert [a.name for a in arms] == GRID_NAMES  # first grid slowest
    assert arms[1].overrides == ("jepa.jepa_weight=0.1", "jepa.teacher=encoder") and arms[1].origin == "grid"
    # stable: the same grid names its arms the same way every time
    assert [a.name for a in ab.grid_arms([ab.parse_grid(g) for g in GRID])] == GRID_NAMES
    # values: floats in their shortest form, booleans, lists, strings with odd characters
    assert ab.value_slug(1e-5) == "1e-05" and ab.value_slug(1e20) == "1e20" and ab.value_slug(-0.5) == "-0.5"
    assert ab.value_slug(True) == "true" and ab.value_slug([2, 8]) == "2-8" and ab.value_slug("text:/tmp/a b.txt") == "text-tmp-a-b.txt"
    # two grids with the same last key part keep their sections
    both = ab.grid_arms([ab.parse_grid("model.dropout=0.0,0.1"), ab.parse_grid("jepa.dropout=0.2")])
    assert [a.name for a in both] == ["model.dropout-0.0+jepa.dropout-0.2", "model.dropout-0.1+jepa.dropout-0.2"]
    # a long name is cut and made unique with a hash of its settings, stably
    long = ab.grid_arms([ab.parse_grid('data.dataset="' + "x" * 80 + '","' + "x" * 79 + 'y"')])
    assert all(len(a.name) <= ab.MAX_ARM_NAME for a in long) and long[0].name != long[1].name
    assert [a.name for a in long] == [a.name for a in ab.grid_arms([ab.parse_grid('data.dataset="' + "x" * 80 + '","' + "x" * 79 + 'y"')])]
    # slugs that would coincide ("a b" and "a-b") are told apart
    clash = ab.grid_arms([ab.parse_grid('data.dataset="a b","a-b"')])
    assert clash[0].name != clash[1].name
    for a in arms + both + long + clash:
        assert ab._ARM_NAME.match(a.name), a.name  # letters, digits, _ . + -: safe as a directory name


def test_plan_with_grid_and_hand_arms(tmp_path):
    plan = ab.plan_ablation("tiny", 2, ['enc:jepa.teacher="encoder"'], grids=GRID, out=tmp_path / "abl", command="jepa ablate ...")
    assert [a.name for a in plan.arms] == ["baseline", "enc", *GRID_NAMES] and plan.reference == "baseline"
    assert [a.origin for a in plan.arms] == ["baseline", "arm"] + ["grid"] * 4
    cfg = plan.config_for("jepa_weight-0.5+teacher-encoder", 1)
    assert cfg.jepa.jepa_weight == 0.5 and cfg.jepa.teacher == "encoder" and not cfg.jepa.run_baseline and cfg.train.seed == plan.seeds[1]
    assert plan.config_for("baseline", 0).jepa.run_baseline
    assert plan.grids == [{"key": "jepa.jepa_weight", "values": ["0.1", "0.5"]}, {"key": "jepa.teacher", "values": ["projector", "encoder"]}]
    assert plan.budget_s == 0 and plan.commands == ["jepa ablate ..."]
    # an --arm named baseline is the reference and replaces the automatic one
    plan = ab.plan_ablation("tiny", 2, ["baseline:jepa.run_baseline=true,optim.lr=1e-3"], grids=GRID[:1], out=tmp_path / "b")
    assert [a.name for a in plan.arms] == ["baseline", "jepa_weight-0.1", "jepa_weight-0.5"] and plan.arm("baseline").origin == "arm"
    # --budget-s is train.time_budget_s for every arm
    plan = ab.plan_ablation("tiny", 2, grids=GRID[:1], budget_s=90, out=tmp_path / "c")
    assert plan.budget_s == 90.0 and plan.config_for("jepa_weight-0.5", 0).train.time_budget_s == 90.0
    with pytest.raises(ConfigError, match="--budget-s"):
        ab.plan_ablation("tiny", 2, grids=GRID[:1], budget_s=0, out=tmp_path / "d")
    with pytest.raises(ConfigError, match="Two arms are named `jepa_weight-0.1`"):
        ab.plan_ablation("tiny", 2, ["jepa_weight-0.1:jepa.tau=0.2"], grids=GRID[:1], out=tmp_path / "e")
    with pytest.raises(ConfigError, match=r"data\.block_size"):
        ab.plan_ablation("tiny", 2, grids=["data.block_size=64,128"], out=tmp_path / "f")
    with pytest.raises(ConfigError, match="Two --grid"):
        ab.plan_ablation("tiny", 2, grids=["jepa.tau=0.1", "jepa.tau=0.2"], out=tmp_path / "g")
    with pytest.raises(ConfigError, match="Arm `tua-0.1`: Unknown key `jepa.tua`"):
        ab.plan_ablation("tiny", 2, grids=["jepa.tua=0.1"], out=tmp_path / "h")


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
    with pytest.raises(ConfigError, match=r"train\.compile \(a: True, b: False\)"):
        ab.plan_ablation("tiny", 2, ["a:", "b:train.compile=false"], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="train.seed"):
        ab.plan_ablation("tiny", 2, ["a:", "b:train.seed=3"], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="Two arms"):
        ab.plan_ablation("tiny", 2, ["a:", "a:jepa.tau=0.2"], out=tmp_path / "x")
    with pytest.raises(ConfigError, match=r"jepa\.horizon_probs`.*arm `b`"):
        ab.plan_ablation("tiny", 2, ["a:", "b:jepa.horizons=[2,8]"], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="Arm `b`: Unknown key `jepa.tua`.*jepa.tau"):
        ab.plan_ablation("tiny", 2, ["a:", "b:jepa.tua=0.2"], out=tmp_path / "x")
    with pytest.raises(ConfigError, match=r"train\.time_budget_s"):
        ab.plan_ablation("tiny", 2, ["a:", "b:train.time_budget_s=10"], out=tmp_path / "x")


def test_plan_refuses_an_existing_ablation(tmp_path):
    (tmp_path / "abl").mkdir()
    (tmp_path / "abl" / ab.MANIFEST).write_text("{}")
    with pytest.raises(ConfigError, match="--resume"):
        ab.plan_ablation("tiny", 2, out=tmp_path / "abl")
    with pytest.raises(CheckpointError, match="not an ablation folder"):
        ab.load_plan(tmp_path / "nothing-here")
    (tmp_path / "abl" / ab.BASE_CONFIG).write_text("")
    with pytest.raises(CheckpointError, match="format"):
        ab.load_plan(tmp_path / "abl")


def test_precision_may_be_the_treatment(tmp_path, monkeypatch):
    """Arms may differ in train.precision (a bf16-vs-fp32 study): recorded per arm, shown per arm,
    and an extension refuses a machine that resolves an old arm's `auto` otherwise."""
    import jepa_core.train.device as device

    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    plan = ab.plan_ablation("tiny", 2, ['fp32:train.precision="fp32"', 'auto:train.precision="auto"'], out=tmp_path / "abl")
    assert plan.settings["precision"] == {"fp32": "fp32", "auto": "bf16"}
    assert ab.setting_text(plan.settings, "precision") == "fp32 (fp32), bf16 (auto)"
    assert ab.precision_if_shared(plan.settings) == ""  # not on the "checked equal" line: reported per arm
    plan.save()
    grown = ab.extend_plan(ab.load_plan(tmp_path / "abl"), None, ['bf16:train.precision="bf16"'])
    assert grown.settings["precision"] == {"fp32": "fp32", "auto": "bf16", "bf16": "bf16"}
    same = ab.plan_ablation("tiny", 2, ["a:jepa.tau=0.2", "b:"], out=tmp_path / "other")
    assert same.settings["precision"] == "bf16"  # one value when the arms agree, as before
    assert ab.precision_if_shared(same.settings) == ", precision bf16"
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.raises(ConfigError, match=r"precision \(fp32 \(fp32\), bf16 \(auto\) then, fp32 \(fp32\), fp32 \(auto\)"):
        ab.extend_plan(ab.load_plan(tmp_path / "abl"), None, ['b2:train.precision="bf16"'])
    # adding seeds, or resuming as it is, would start runs that resolve `auto` here: refused too
    for extend in (lambda p: ab.extend_plan(p, 3), ab.extend_plan):
        with pytest.raises(ConfigError, match=r"precision \(fp32 \(fp32\), bf16 \(auto\) then, fp32 now\)") as e:
            extend(ab.load_plan(tmp_path / "abl"))
        assert "train.precision" in e.value.hint


def test_extend_plan_adds_arms_and_seeds(tmp_path):
    plan = ab.plan_ablation("tiny", 2, grids=GRID[:1], out=tmp_path / "abl", command="first")
    plan.save()
    plan = ab.extend_plan(ab.load_plan(tmp_path / "abl"), 3, ['enc:jepa.jepa_weight=0.1,jepa.teacher="encoder"'], command="second")
    assert [a.name for a in plan.arms] == ["baseline", "jepa_weight-0.1", "jepa_weight-0.5", "enc"] and plan.reference == "baseline"
    assert plan.seeds == [1337, 1338, 1339] and plan.commands == ["first", "second"]
    plan.save()
    again = ab.load_plan(tmp_path / "abl")
    assert [a.name for a in again.arms] == [a.name for a in plan.arms] and again.seeds == plan.seeds
    with pytest.raises(ConfigError, match="already has arm"):
        ab.extend_plan(again, None, grids=["jepa.jepa_weight=0.5"])
    with pytest.raises(ConfigError, match="drop"):
        ab.extend_plan(again, 2)
    with pytest.raises(ConfigError, match=r"data\.block_size"):
        ab.extend_plan(again, None, ["short:data.block_size=64"])
    assert ab.extend_plan(ab.load_plan(tmp_path / "abl")).arms == again.arms  # nothing to add: unchanged


# --------------------------------------------------------------------------- the reader (runlog)


def _write(run: Path, recs: list[dict], tail: str = "") -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + tail)


def _ev(**k):
    return {"type": "event", "time": 0, **k}


def test_summarize_run_segments_by_hand(tmp_path):
    recs = [
        _ev(step=0, event="run_start", start_step=0, tokens_per_step=100, max_steps=20),
        {"type": "train", "step": 5, "time": 0, "train_time": 1.5, "tokens": 500},
        {"type": "train", "step": 10, "time": 0, "train_time": 3.0, "tokens": 1000},
        {"type": "eval", "step": 10, "time": 0, "val_loss": 3.0, "val_bpb": 2.0, "retrieval_top1_h2": 0.5, "retrieval_top1_h8": 0.25, "eff_rank": 7.0},
        {"type": "train", "step": 15, "time": 0, "train_time": 4.0, "tokens": 1500},
        {"type": "eval", "step": 20, "time": 0, "val_loss": 2.9, "val_bpb": 1.9},  # after the checkpoint at 10: replayed
        _ev(step=20, event="run_end", status="interrupted", tokens=2000, train_time=4.0, wall_s=5.0),
        _ev(step=10, event="run_start", start_step=10, tokens_per_step=100, max_steps=20),
        _ev(step=10, event="resume", from_step=10),
        {"type": "eval", "step": 20, "time": 0, "val_loss": 2.8, "val_bpb": 1.8, "retrieval_top1_h2": 0.75, "retrieval_top1_h8": 0.5, "eff_rank": 9.0},
        _ev(step=20, event="run_end", status="finished", tokens=2000, train_time=1.0, wall_s=2.0),
    ]
    _write(tmp_path / "r", recs, tail='{"type": "eval", "step": 30, "val_lo')  # a half-written last line
    s = runlog.summarize_run(tmp_path / "r")
    assert s.status == "finished" and s.segments == 2 and s.step == 20 and s.max_steps == 20
    assert s.curve == [(10, 2.0), (20, 1.8)]
    assert (s.final_eval["val_loss"], s.final_eval["val_bpb"], s.final_eval["eff_rank"], s.final_eval_step) == (2.8, 1.8, 9.0, 20)
    # (2000 - 0) + (2000 - 1000) tokens over 4 + 1 s of steps; the replayed steps cost time too
    assert s.tokens == 3000 and s.train_time == pytest.approx(5.0) and s.tok_per_s == pytest.approx(600.0)
    assert s.wall_s == pytest.approx(7.0)
    # step time to step 20 without the replayed steps: 3.0 s to step 10, then 1.0 s
    assert s.train_time_to_step == pytest.approx(4.0)
    rec = ab.run_record(tmp_path / "r")
    assert rec["retrieval_top1"] == {"2": 0.75, "8": 0.5} and rec["retrieval_copy_top1"] == {} and rec["excluded"] is None


def test_summarize_run_statuses(tmp_path):
    assert runlog.summarize_run(tmp_path / "none").status == "pending"
    _write(tmp_path / "killed", [_ev(step=0, event="run_start"), {"type": "train", "step": 5, "time": 0}])
    s = runlog.summarize_run(tmp_path / "killed")
    assert (s.status, s.step) == ("incomplete", 5)
    assert ab.run_record(tmp_path / "killed")["excluded"].startswith("killed")
    _write(tmp_path / "div", [_ev(step=0, event="run_start"), _ev(step=7, event="run_end", status="diverged", message="loss is nan")])
    s = runlog.summarize_run(tmp_path / "div")
    assert (s.status, s.step, s.message) == ("diverged", 7, "loss is nan")
    assert ab.run_record(tmp_path / "div")["excluded"] == "diverged: loss is nan"
    # finished, but its last eval has no finite val BPB: listed, not averaged
    _write(tmp_path / "nan", [_ev(step=0, event="run_start"), {"type": "eval", "step": 4, "val_bpb": float("nan")}, _ev(step=4, event="run_end", status="finished")])
    assert ab.run_record(tmp_path / "nan")["excluded"] == "finished without a finite final val BPB"


def test_reader_treats_hostile_fields_as_missing(tmp_path):
    huge = int("9" * 400)  # parses as a Python int, overflows a float
    lines = [
        json.dumps(_ev(step=0, event="run_start", start_step="zero", tokens_per_step=huge, max_steps=float("nan"), config=[1, 2])),
        json.dumps({"type": "train", "step": float("nan"), "train_time": 1.0}),
        json.dumps({"type": "train", "step": "3", "train_time": 1.0}),
        json.dumps({"type": "train", "step": huge, "tokens": huge}),
        json.dumps({"type": "train", "step": -2}),
        json.dumps({"type": "train", "step": 2.5}),
        json.dumps({"type": "train", "step": True}),
        json.dumps({"type": "train", "step": 4, "train_time": "fast", "tokens": 400}),
        "[" * 100_000,  # nested deeper than the JSON parser's recursion limit
        '"a string"',
        json.dumps({"type": "eval", "step": 4, "val_bpb": huge, "val_loss": float("inf"), "eff_rank": "high", "retrieval_top1_h2": 0.5, "retrieval_top1_hx": 0.9}),
        json.dumps(_ev(step=huge, event="run_end", status="finished", tokens=huge, train_time=float("inf"), wall_s="1s")),
    ]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    s = runlog.summarize_run(tmp_path / "r")
    assert s.status == "finished" and s.step == 4 and s.bad_fields == 6
    assert s.max_steps is None and s.config == {} and s.tokens == 400
    assert s.final_eval == {"step": 4.0, "retrieval_top1_h2": 0.5, "retrieval_top1_hx": 0.9}
    assert s.curve == [] and s.train_time_to_step is None and s.tok_per_s is None
    rec = ab.run_record(tmp_path / "r")
    assert rec["val_bpb"] is None and rec["excluded"] == "finished without a finite final val BPB"
    assert rec["retrieval_top1"] == {"2": 0.5}
    assert runlog.finite_number(huge) is None and runlog.finite_number(True) is None and runlog.finite_number(3) == 3.0
    assert runlog.step_number(2**53) == 2**53 and runlog.step_number(2**53 + 2) is None


def test_remaining_budget_counts_time_up_to_the_checkpoint(tmp_path):
    _write(
        tmp_path / "r",
        [
            _ev(step=0, event="run_start", start_step=0, tokens_per_step=10),
            {"type": "train", "step": 2, "time": 0, "train_time": 2.0, "tokens": 20},
            {"type": "train", "step": 4, "time": 0, "train_time": 4.5, "tokens": 40},
            {"type": "train", "step": 6, "time": 0, "train_time": 7.0, "tokens": 60},
            _ev(step=6, event="run_end", status="interrupted", train_time=7.5, tokens=60),
        ],
    )
    # resumed from the checkpoint at step 4: 4.5 s were spent up to it; steps 5-6 are trained again
    assert ab.remaining_budget(tmp_path / "r", 4, 10.0) == pytest.approx(5.5)
    assert ab.remaining_budget(tmp_path / "r", 4, 3.0) == pytest.approx(1e-3)  # spent already: stop at once


# --------------------------------------------------------------------------- the report, by hand


def _fake_run(folder: Path, name: str, bpb: float | None, status: str = "finished", top1=None, copy=None, steps: int = 4, tok_s: float = 1000.0, early=(), **start):
    recs = [_ev(step=0, event="run_start", start_step=0, tokens_per_step=100, max_steps=4, **start)]
    recs += [{"type": "eval", "step": st, "time": 0, "val_loss": b * 0.5, "val_bpb": b} for st, b in early]  # evals before the last
    recs.append({"type": "train", "step": steps, "time": 0, "train_time": steps * 100 / tok_s, "tokens": steps * 100})
    if bpb is not None:
        ev = {"type": "eval", "step": steps, "time": 0, "val_loss": bpb * 0.5, "val_bpb": bpb, "eff_rank": 5.0}
        for h, v in (top1 or {}).items():
            ev[f"retrieval_top1_h{h}"] = v
        for h, v in (copy or {}).items():
            ev[f"retrieval_copy_top1_h{h}"] = v
        recs.append(ev)
    if status != "incomplete":
        recs.append(_ev(step=steps, event="run_end", status=status, message="loss is nan" if status == "diverged" else "", tokens=steps * 100, train_time=steps * 100 / tok_s, wall_s=1.0))
    _write(folder / name, recs)


def test_report_numbers_by_hand(tmp_path):
    """Three arms against a baseline, n = 3 each, every variance 1: Welch's df is exactly 4, so
    p-values have a closed form and the CI uses the table value t_{0.975, 4} = 2.776445."""
    out = tmp_path / "abl"
    plan = ab.plan_ablation("tiny", 3, ["baseline:jepa.run_baseline=true", "far:jepa.tau=0.2", "near:jepa.tau=0.3", "mid:jepa.tau=0.4", "dead:jepa.tau=0.5"], out=out)
    plan.save()
    data = {"baseline": [1.0, 2.0, 3.0], "far": [6.0, 7.0, 8.0], "near": [1.5, 2.5, 3.5], "mid": [-1.5, -0.5, 0.5]}
    for arm, vals in data.items():
        for i, v in enumerate(vals):
            copy = {2: 0.25, 8: 0.125} if arm != "mid" else None  # `mid` has no copy control: no lift
            _fake_run(out, f"{arm}-s{i}", v, top1={2: 0.5 + 0.1 * i, 8: 0.25} if arm != "baseline" else None, copy=copy if arm != "baseline" else None)
    _fake_run(out, "dead-s0", None, status="diverged")
    _fake_run(out, "dead-s1", 9.0, status="incomplete")  # killed: its eval must not be averaged
    _fake_run(out, "near-s3", 100.0)  # not part of the plan (3 seeds): ignored
    rep = ab.write_report(out)
    arms = {a["name"]: a for a in rep["arms"]}
    assert arms["baseline"]["val_bpb"] == {"mean": 2.0, "std": 1.0, "n": 3}
    assert arms["far"]["val_bpb"]["mean"] == pytest.approx(7.0) and arms["far"]["n"] == 3

    def p_df4(t):  # two-sided p from the closed-form CDF of Student's t with 4 df
        t = abs(t)
        u = 1 + t * t / 4
        return 2 * (1 - (0.5 + 0.375 * (t / math.sqrt(u)) * (1 - t * t / (12 * u))))

    se = math.sqrt(2 / 3)
    raw = {"far": p_df4(5 / se), "near": p_df4(0.5 / se), "mid": p_df4(2.5 / se)}
    # Holm by hand: far < mid < near; m = 3 testable comparisons (dead has none)
    holm = {"far": 3 * raw["far"]}
    holm["mid"] = max(holm["far"], 2 * raw["mid"])
    holm["near"] = max(holm["mid"], raw["near"])
    for arm, diff in (("far", 5.0), ("near", 0.5), ("mid", -2.5)):
        c = arms[arm]["comparison"]
        assert c["diff"] == pytest.approx(diff) and c["df"] == pytest.approx(4.0)
        assert c["p"] == pytest.approx(raw[arm], rel=1e-9) and c["p_holm"] == pytest.approx(holm[arm], rel=1e-9)
        assert c["ci_low"] == pytest.approx(diff - 2.776445 * se, abs=1e-6) and c["ci_high"] == pytest.approx(diff + 2.776445 * se, abs=1e-6)
    assert rep["comparison"] == {"mode": "steps", "budget_s": None, "max_steps": 960, "family": 3}
    # the verdicts below depend on these: far survives Holm, mid only without it, near not at all
    assert holm["far"] < 0.05 and raw["mid"] < 0.05 < holm["mid"] and raw["near"] > 0.05
    # these runs record no init digest (as before the pairing check): Welch, and the verdict says why
    unpaired = "; Welch (unpaired) because baseline-s0, baseline-s1, baseline-s2, {0}-s0, {0}-s1, {0}-s2 recorded no init digest (runs from before the pairing check)"
    assert arms["far"]["verdict"] == f"worse than baseline by 5.0000 BPB (95% CI {5 - 2.776445 * se:+.4f}..{5 + 2.776445 * se:+.4f}), Holm p = {ab.fmt_p(holm['far'])} (n = 3 vs 3)" + unpaired.format("far")
    assert arms["near"]["verdict"] == f"no detectable difference (n = 3 vs 3): +0.5000 BPB (95% CI {0.5 - 2.776445 * se:+.4f}..{0.5 + 2.776445 * se:+.4f}), Holm p = {ab.fmt_p(holm['near'])}" + unpaired.format("near")
    assert all(arms[a]["comparison"]["test"] == "welch" and arms[a]["comparison"]["paired"] is None for a in ("far", "near", "mid"))
    assert arms["mid"]["verdict"].startswith("no detectable difference (n = 3 vs 3): -2.5000 BPB")
    assert f"unadjusted p = {ab.fmt_p(raw['mid'])} does not survive Holm over 3 comparisons; Welch (unpaired)" in arms["mid"]["verdict"]
    assert arms["baseline"]["verdict"] == "reference"
    # killed and diverged runs are listed, never averaged
    assert arms["dead"]["n"] == 0 and arms["dead"]["val_bpb"]["mean"] is None
    assert arms["dead"]["verdict"].startswith("not tested: n = 0 vs 3")
    assert arms["dead"]["verdict"].endswith("; 3 of 3 runs excluded (1 diverged, 1 incomplete, 1 pending)")
    assert [(e["name"], e["status"]) for e in rep["excluded"]] == [("dead-s0", "diverged"), ("dead-s1", "incomplete"), ("dead-s2", "pending")]
    # retrieval per horizon, and the lift over the copy control where it exists
    far2 = next(h for h in arms["far"]["retrieval"] if h["horizon"] == 2)
    assert far2["top1"]["mean"] == pytest.approx(0.6) and far2["lift"]["mean"] == pytest.approx(0.35) and far2["lift"]["n"] == 3
    assert far2["top1"]["std"] == pytest.approx(0.1) and far2["copy_top1"]["mean"] == pytest.approx(0.25)
    assert arms["far"]["has_copy_control"] and not arms["mid"]["has_copy_control"]
    assert next(h for h in arms["mid"]["retrieval"] if h["horizon"] == 8)["lift"]["mean"] is None
    assert arms["baseline"]["retrieval"] == []
    assert arms["far"]["tok_per_s"]["mean"] == pytest.approx(1000.0) and arms["far"]["steps"]["mean"] == 4
    md = (out / ab.REPORT_MD).read_text()
    assert "- `far`: worse than baseline by 5.0000 BPB" in md and "## Excluded runs" in md and "| dead-s0 | diverged | 4 | diverged: loss is nan |" in md
    assert "equal steps: 960 steps per run" in md and "## What this does not show" in md and "n = 0..3" in md
    assert "Minimum detectable effect (80% power, two-sided alpha = 0.05, paired t-test, from the sd of the per-seed differences): none" in md
    assert json.loads((out / ab.REPORT_JSON).read_text())["comparisons"][0]["arm"] == "far"


PAIRED_BASE = [2.50, 2.40, 2.60]


def _digest(i: int) -> str:
    return f"{i:064x}"


def _paired_folder(tmp_path: Path) -> tuple[Path, dict]:
    """Baseline and four arms over 3 seeds; `good` is paired by hand (differences 0.01, 0.03, 0.02),
    the others break the pairing one way each."""
    out = tmp_path / "abl"
    arms = ["baseline:jepa.run_baseline=true", "good:jepa.tau=0.2", "reinit:jepa.tau=0.3", "rebatch:jepa.tau=0.4", "lost:jepa.tau=0.5"]
    ab.plan_ablation("tiny", 3, arms, out=out).save()
    code = {"version": "0.1.0", "commit": "a" * 40}
    vals = {"baseline": PAIRED_BASE, "good": [2.51, 2.43, 2.62], "reinit": [2.52, 2.44, 2.61], "rebatch": [2.49, 2.45, 2.63], "lost": [2.6, 2.5, None]}
    for arm, vs in vals.items():
        for i, v in enumerate(vs):
            dig = _digest(i + 100 if (arm, i) == ("reinit", 1) else i)
            _fake_run(out, f"{arm}-s{i}", v, status="finished" if v is not None else "diverged", init_digest=dig, code=code)
            (out / f"{arm}-s{i}" / ab.BATCH_LOG).write_text(f"0 b{i}\n1 {'other' if (arm, i) == ('rebatch', 2) else f'c{i}'}\n")
    return out, vals


def test_paired_report_by_hand(tmp_path):
    out, vals = _paired_folder(tmp_path)
    rep = ab.write_report(out)
    c = {x["arm"]: x for x in rep["comparisons"]}
    good = c["good"]
    t = 0.02 / (0.01 / math.sqrt(3))
    p = 1 - t / math.sqrt(2 + t * t)  # Student's t with 2 df, two-sided: 0.0742
    t975 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # t_{0.975, 2} = 4.302653 in closed form
    t80 = math.sqrt(2 * 0.6**2 / (1 - 0.6**2))  # t_{0.8, 2}
    assert good["test"] == "paired" and good["unpaired_because"] is None and good["n_pairs"] == 3
    assert good["diff"] == pytest.approx(0.02) and good["t"] == pytest.approx(t) and good["df"] == 2.0
    assert good["p"] == pytest.approx(p, rel=1e-9) and good["p"] == pytest.approx(0.0742, abs=1e-4)
    half = t975 * 0.01 / math.sqrt(3)
    assert (good["ci_low"], good["ci_high"]) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert good["mde"] == pytest.approx((t975 + t80) * 0.01 / math.sqrt(3), rel=1e-9)
    # Welch on the same numbers stays as the second column: the seed spread hides the shift
    w = welch_t_test(vals["good"], PAIRED_BASE)
    assert good["welch"]["p"] == pytest.approx(w.p) and good["welch"]["p"] > 0.7
    # every broken pairing falls back to Welch and says why
    assert c["reinit"]["test"] == "welch" and c["reinit"]["unpaired_because"] == "it started from other initial weights than `baseline` at s1"
    assert c["rebatch"]["test"] == "welch" and c["rebatch"]["unpaired_because"] == "it drew other batches than `baseline` at s2"
    assert c["lost"]["test"] == "welch" and c["lost"]["unpaired_because"] == "the finished seeds differ (`lost`: s0, s1; `baseline`: s0, s1, s2)"
    assert c["reinit"]["p"] == pytest.approx(welch_t_test(vals["reinit"], PAIRED_BASE).p) and c["reinit"]["mde"] is None
    # Holm over the arms on the p each verdict uses; the Welch column is adjusted on its own
    used = [c[a]["p"] for a in ("good", "reinit", "rebatch", "lost")]
    for a, adj in zip(("good", "reinit", "rebatch", "lost"), holm_by_hand(used)):
        assert c[a]["p_holm"] == pytest.approx(adj)
    welch_ps = [c[a]["welch"]["p"] for a in ("good", "reinit", "rebatch", "lost")]
    for a, adj in zip(("good", "reinit", "rebatch", "lost"), holm_by_hand(welch_ps)):
        assert c[a]["welch"]["p_holm"] == pytest.approx(adj)
    assert rep["init"]["ok"] is False and rep["init"]["mismatches"] == ["seed 1: arm `reinit` started from other weights than `baseline`"]
    arms = {a["name"]: a for a in rep["arms"]}
    assert arms["good"]["verdict"].startswith("no detectable difference (paired over n = 3 seeds): +0.0200 BPB")
    assert arms["good"]["verdict"].endswith(f"; this design detects {good['mde']:.4f} BPB with 80% power")
    assert arms["reinit"]["verdict"].endswith("; Welch (unpaired) because it started from other initial weights than `baseline` at s1")
    md = (out / ab.REPORT_MD).read_text()
    assert f"- `good`: {good['mde']:.4f} BPB at n = 3 paired seeds (sd of the differences 0.0100)" in md
    assert "| good | `jepa.tau=0.2` | 3 | 2.5200 ± 0.0954 | paired | +0.0200 (" in md
    assert "Initial weights: MISMATCH: seed 1: arm `reinit` started from other weights than `baseline`." in md


def test_reference_compares_every_arm_with_another_arm(tmp_path):
    out, vals = _paired_folder(tmp_path)
    own = {x["arm"]: x for x in ab.write_report(out)["comparisons"]}
    own_json = (out / ab.REPORT_JSON).read_text()
    rep = ab.write_report(out, reference="good")
    assert (out / ab.REPORT_JSON).read_text() == own_json  # the folder's own report is left as it is
    json_path, md_path = ab.report_paths(out, "good")
    assert (json_path.name, md_path.name) == ("report-vs-good.json", "report-vs-good.md")
    assert json.loads(json_path.read_text())["reference"] == "good" and "reference arm `good`" in md_path.read_text()
    c = {x["arm"]: x for x in rep["comparisons"]}
    assert set(c) == {"baseline", "reinit", "rebatch", "lost"}
    # baseline against good: the same pairs with the sign turned (-0.01, -0.03, -0.02)
    b, g = c["baseline"], own["good"]
    assert b["test"] == "paired" and b["diff"] == pytest.approx(-0.02) and b["p"] == pytest.approx(g["p"])
    assert (b["ci_low"], b["ci_high"]) == (pytest.approx(-g["ci_high"]), pytest.approx(-g["ci_low"]))
    # the pairing is checked against the new reference, and Holm runs over the new family
    assert c["reinit"]["unpaired_because"] == "it started from other initial weights than `good` at s1"
    assert c["rebatch"]["unpaired_because"] == "it drew other batches than `good` at s2"
    assert c["lost"]["unpaired_because"] == "the finished seeds differ (`lost`: s0, s1; `good`: s0, s1, s2)"
    for a, adj in zip(c, holm_by_hand([c[a]["p"] for a in c])):
        assert c[a]["p_holm"] == pytest.approx(adj)
    # naming the folder's own reference writes its own report; an unknown arm is refused with the arms it has
    ab.write_report(out, reference="baseline")
    assert not (out / "report-vs-baseline.json").exists()
    with pytest.raises(ConfigError) as e:
        ab.write_report(out, reference="goood")
    assert "no arm of that name" in e.value.message and "baseline, good, reinit" in e.value.hint


def holm_by_hand(ps: list[float]) -> list[float]:
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def test_report_names_code_versions_and_no_machine_paths(tmp_path):
    out = tmp_path / "abl"
    text = tmp_path / "corpus.txt"
    ab.plan_ablation("tiny", 1, ["baseline:jepa.run_baseline=true", "j:jepa.tau=0.2"], overrides=[f"data.dataset={text}"], out=out, command=f"jepa ablate -p tiny --out {out}").save()
    old, new = {"version": "0.1.0", "commit": "1" * 40}, {"version": "0.1.0", "commit": "2" * 40}
    _fake_run(out, "baseline-s0", 2.0, code=old, init_digest=_digest(0))
    _fake_run(out, "j-s0", 2.1, code=new, init_digest=_digest(0))
    rep = ab.write_report(out)
    assert rep["code"]["runs"] == {"baseline-s0": ["0.1.0 @ 111111111111"], "j-s0": ["0.1.0 @ 222222222222"]}
    assert rep["code"]["warning"].startswith("the runs of this folder were trained by 2 code versions")
    md = (out / ab.REPORT_MD).read_text()
    assert "| 0.1.0 @ 111111111111 |" in md and "Warning: the runs of this folder were trained by 2 code versions" in md
    for f in (ab.REPORT_MD, ab.REPORT_JSON):
        body = (out / f).read_text()
        assert str(tmp_path) not in body, f
    assert rep["ablation_dir"] == "abl" and rep["commands"] == ["jepa ablate -p tiny --out ."]
    assert rep["overrides"] == ["data.dataset=../corpus.txt"]
    # one code version: no warning
    _fake_run(out, "j-s0", 2.1, code=old, init_digest=_digest(0))
    assert ab.build_report(out)["code"]["warning"] is None


def test_early_stopped_runs_count_and_are_not_trained_again(tmp_path):
    out = tmp_path / "abl"
    ab.plan_ablation("tiny", 2, ["baseline:jepa.run_baseline=true", "j:jepa.tau=0.2"], out=out).save()
    for i, (b, j) in enumerate(((2.0, 2.2), (2.1, 2.25))):
        _fake_run(out, f"baseline-s{i}", b, init_digest=_digest(i))
        _fake_run(out, f"j-s{i}", j, status="early_stopped" if i == 1 else "finished", init_digest=_digest(i))
    rep = ab.build_report(out)
    arms = {a["name"]: a for a in rep["arms"]}
    assert arms["j"]["n"] == 2 and rep["excluded"] == [] and rep["complete"]
    assert arms["j"]["val_bpb"]["mean"] == pytest.approx(2.225)
    cb = _CtrlC()
    outcome = ab.run_ablation(ab.load_plan(out), callbacks=cb)  # nothing left to train: no data, no model
    assert cb.actions == {} and sorted(cb.skipped) == ["baseline-s0", "baseline-s1", "j-s0", "j-s1"]
    assert ab.load_plan(out).state["j-s1"]["status"] == "early_stopped" and outcome.report["arms"][1]["n"] == 2


def test_best_val_bpb_is_compared_paired_beside_the_final(tmp_path):
    """Runs that got worse before their end (many passes over small data) deliver their best eval with
    train.keep_best: the report compares it too, paired, against hand-worked values."""
    out = tmp_path / "abl"
    ab.plan_ablation("tiny", 3, ["baseline:jepa.run_baseline=true", "j:jepa.tau=0.2"], out=out).save()
    base_best, j_best = [2.0, 2.1, 2.3], [1.9, 1.95, 2.1]  # per-seed differences -0.1, -0.15, -0.2
    for i in range(3):
        _fake_run(out, f"baseline-s{i}", base_best[i] + 0.5, init_digest=_digest(i), early=[(2, base_best[i])])
        _fake_run(out, f"j-s{i}", j_best[i] + 0.1, init_digest=_digest(i), early=[(2, j_best[i])])
    rep = ab.write_report(out)
    best, final = rep["comparisons_best"][0], rep["comparisons"][0]
    assert best["metric"] == "best_val_bpb" and best["test"] == "paired" and best["n_pairs"] == 3
    t = -0.15 / (0.05 / math.sqrt(3))  # mean difference over its standard error (sd of the differences 0.05), df 2
    assert best["diff"] == pytest.approx(-0.15) and best["t"] == pytest.approx(t)
    assert best["p"] == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), rel=1e-9)  # closed-form t CDF at df 2
    assert final["metric"] == "val_bpb" and final["diff"] == pytest.approx(-0.55)  # the final evals: -0.15 - 0.4
    runs = {r["name"]: r for a in rep["arms"] for r in a["runs"]}
    assert runs["j-s1"]["best_val_bpb"] == pytest.approx(1.95) and runs["j-s1"]["best_step"] == 2
    assert "## Best val BPB" in (out / ab.REPORT_MD).read_text()


def test_cli_resume_of_a_done_folder_prints_the_report(tmp_path):
    out = tmp_path / "abl"
    plan = ab.plan_ablation("tiny", 2, grids=["jepa.jepa_weight=0.1,0.5"], out=out, command="jepa ablate -p tiny --seeds 2 --grid jepa.jepa_weight=0.1,0.5")
    plan.save()
    vals = {"baseline": [2.0, 2.1], "jepa_weight-0.1": [2.05, 2.12], "jepa_weight-0.5": [2.4, None]}
    for arm, vs in vals.items():
        for i, v in enumerate(vs):
            _fake_run(out, f"{arm}-s{i}", v, status="finished" if v is not None else "diverged", top1={2: 0.5} if arm != "baseline" else None)
    res = runner.invoke(app, ["ablate", "--resume", str(out), "-p", "tiny"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "every run is already done" in res.stdout and "excluded runs" in res.stdout and "jepa_weight-0.5-s1" in res.stdout
    assert "jepa_weight-0.1: no detectable difference (n = 2 vs 2)" in res.stdout
    assert "jepa_weight-0.5: not tested: n = 1 vs 2" in res.stdout and "1 of 2 runs excluded (1 diverged)" in res.stdout
    assert "no copy control in these runs' eval lines" in res.stdout
    assert "Welch p (Holm)" in res.stdout and "none (no comparison is paired)" in res.stdout
    assert "initial weights: not compared yet (6 run(s) recorded no init digest" in res.stdout
    md = (out / ab.REPORT_MD).read_text()
    assert md.startswith("# Ablation: profile `tiny`\n\n```\njepa ablate -p tiny --seeds 2 --grid jepa.jepa_weight=0.1,0.5\n```")
    res = runner.invoke(app, ["ablate", "--resume", str(out), "--reference", "jepa_weight-0.1"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "every arm against jepa_weight-0.1" in res.stdout and "diff = arm - jepa_weight-0.1" in res.stdout
    assert "report-vs-jepa_weight-0.1.md" in " ".join(res.stdout.split()) and (out / "report-vs-jepa_weight-0.1.json").exists()
    res = runner.invoke(app, ["ablate", "--resume", str(out), "--reference", "jepa_weight-1"])
    assert isinstance(res.exception, ConfigError) and "no arm of that name" in res.exception.message
    for bad, flag in ((["-p", "shakespeare"], "--profile"), (["--budget-s", "5"], "--budget-s"), (["--out", str(tmp_path)], "--out"), (["--seeds", "1"], "drop")):
        res = runner.invoke(app, ["ablate", "--resume", str(out), *bad])
        assert isinstance(res.exception, ConfigError) and flag in res.exception.message, bad


def test_a_hang_up_while_ablate_prepares_the_data_says_how_to_resume(tmp_path, monkeypatch):
    from jepa_core import data as jepa_data

    def hung_up(*a, **k):
        os.kill(os.getpid(), signal.SIGHUP)
        raise AssertionError("the hang-up did not stop the preparation")

    monkeypatch.setattr(jepa_data, "ensure_prepared", hung_up)
    old = signal.signal(signal.SIGHUP, lambda *a: None)  # not the default action, which would end pytest
    try:
        res = runner.invoke(app, ["ablate", "-p", "tiny", "--seeds", "1", "--out", str(tmp_path / "abl")], env={"COLUMNS": "300"})
    finally:
        signal.signal(signal.SIGHUP, old)
    said = " ".join(res.stdout.split())
    assert res.exit_code == 130, res.output
    assert "interrupted (SIGHUP) while preparing the data, before any run:" in said
    assert "before any run: nothing of the encoding is kept (a text is encoded whole, in one pass; its downloaded files are kept);" in said
    assert f"continue with: jepa ablate --resume {tmp_path / 'abl'}" in said


# --------------------------------------------------------------------------- end to end


@pytest.fixture(autouse=True)
def _sigint_not_ignored():
    """The Ctrl-C tests send this process a real SIGINT. A shell's background job (`cmd &`) inherits
    SIGINT ignored, and training keeps an inherited SIG_IGN by design, so give them Python's handler."""
    old = signal.getsignal(signal.SIGINT)
    if old == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


class _CtrlC(ab.AblationCallbacks):
    """Presses Ctrl-C (a real SIGINT to this process) at step 3 of one run; records skips and actions."""

    def __init__(self, run: str | None = None, at_step: int = 3):
        self.run = run
        self.at_step = at_step
        self.actions: dict[str, str] = {}
        self.skipped: list[str] = []

    def on_skip(self, spec, status):
        self.skipped.append(spec.name)

    def on_run_start(self, spec, position, total, action):
        self.actions[spec.name] = action

    def train_callbacks(self, spec):
        from jepa_core.train.loop import TrainCallbacks

        target, at_step = self.run, self.at_step

        class Hit(TrainCallbacks):
            def on_step(self, step, max_steps):
                if spec.name == target and step == at_step:
                    os.kill(os.getpid(), signal.SIGINT)

        return Hit()


def _final_bpb(run: Path) -> float:
    evals = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    return evals[-1]["val_bpb"]


def test_grid_sweep_2x2_two_seeds_ctrl_c_and_resume(shared_data, tmp_path, one_thread):
    import numpy as np

    from jepa_core.data import TrainBatcher, load_prepared

    out = tmp_path / "abl"
    plan = ab.plan_ablation("tiny", 2, grids=GRID, overrides=small_overrides(shared_data), out=out)
    names = ["baseline", *GRID_NAMES]
    assert [a.name for a in plan.arms] == names
    stop_in = "jepa_weight-0.5+teacher-projector-s0"
    outcome = ab.run_ablation(plan, callbacks=_CtrlC(stop_in))
    assert outcome.stopped and not outcome.report["complete"]
    status = {r["name"]: r["status"] for r in json.loads((out / ab.MANIFEST).read_text())["runs"]}
    first = ["baseline-s0", "jepa_weight-0.1+teacher-projector-s0", "jepa_weight-0.1+teacher-encoder-s0"]
    assert [n for n, s in status.items() if s == "finished"] == first
    assert status[stop_in] == "interrupted" and sum(s == "pending" for s in status.values()) == 6
    done_before = {n: (out / n / "metrics.jsonl").read_bytes() for n in first}
    # a run that died before its first checkpoint is restarted, not resumed
    (out / "baseline-s1").mkdir()
    (out / "baseline-s1" / "metrics.jsonl").write_text('{"type": "event", "step": 0, "time": 0, "event": "run_start"}\n')

    cb = _CtrlC()
    outcome = ab.run_ablation(ab.load_plan(out), callbacks=cb)
    assert not outcome.failed, [(r["name"], r["message"]) for r in json.loads((out / ab.MANIFEST).read_text())["runs"] if r["status"] == "failed"]
    assert not outcome.stopped and outcome.report["complete"]
    assert cb.skipped == first  # finished (arm, seed) runs are not run again
    assert cb.actions[stop_in] == "resume from step 3" and cb.actions["baseline-s1"] == "restart (no checkpoint)"
    assert cb.actions["jepa_weight-0.5+teacher-encoder-s1"] == "start" and len(cb.actions) == 7
    for n in first:
        assert (out / n / "metrics.jsonl").read_bytes() == done_before[n]

    # identical data order: every arm of a seed drew the same batches, the ones the seed defines
    cfg = ab.load_plan(out).config_for("baseline", 0)
    tokens = np.asarray(load_prepared(cfg.data).train_tokens)
    for i in range(2):
        logs = {a: ab.read_batch_log(out / f"{a}-s{i}") for a in names}
        ref = TrainBatcher(tokens, 32, 4, seed=cfg.train.seed + i)
        expected = {k: ab.batch_digest(*ref.next()) for k in range(4)}
        assert all(log == expected for log in logs.values()), i
    # seeds differ in data order as in initialisation (the spread over seeds covers both)
    assert ab.read_batch_log(out / "baseline-s0") != ab.read_batch_log(out / "baseline-s1")
    rep = outcome.report
    assert rep["data_order"]["ok"] is True
    # every arm of a seed started from the baseline's weights, the interrupted one across its resume too
    assert rep["init"]["ok"] is True and rep["init"]["missing"] == [] and rep["init"]["compared_pairs"] == 8

    # the report's numbers come from the runs' files: paired (the pairing held), Holm recomputed by hand
    by_arm = {a["name"]: a for a in rep["arms"]}
    base = [_final_bpb(out / f"baseline-s{i}") for i in range(2)]
    raw = {n: paired_t_test([_final_bpb(out / f"{n}-s{i}") for i in range(2)], base).p for n in GRID_NAMES}
    welch_raw = {n: welch_t_test([_final_bpb(out / f"{n}-s{i}") for i in range(2)], base).p for n in GRID_NAMES}
    order = sorted(GRID_NAMES, key=lambda n: raw[n])
    expected_holm, running = {}, 0.0
    for rank, n in enumerate(order):
        running = max(running, min(1.0, (4 - rank) * raw[n]))
        expected_holm[n] = running
    for n in GRID_NAMES:
        c = by_arm[n]["comparison"]
        assert c["p"] == pytest.approx(raw[n], rel=1e-12) and c["p_holm"] == pytest.approx(expected_holm[n], rel=1e-12)
        assert c["n_arm"] == c["n_ref"] == c["n_pairs"] == 2 and c["test"] == "paired" and c["unpaired_because"] is None
        assert c["welch"]["p"] == pytest.approx(welch_raw[n], rel=1e-12)
        assert by_arm[n]["verdict"].startswith(("worse than", "better than", "no detectable difference (paired over n = 2 seeds)"))
    assert by_arm["baseline"]["val_bpb"]["mean"] == pytest.approx(sum(base) / 2)
    assert rep["comparison"]["mode"] == "steps" and rep["excluded"] == []
    resumed = runlog.summarize_run(out / stop_in)
    assert resumed.segments == 2 and [s for s, _ in resumed.curve] == [2, 4]

    # the CLI on the finished folder: nothing to train, the report printed
    res = runner.invoke(app, ["ablate", "--resume", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "every run is already done" in res.stdout and "equal steps: 4 steps per run" in res.stdout
    for n in GRID_NAMES:
        assert n in res.stdout
    assert "data order verified" in res.stdout and "what this does not show" in res.stdout
    res = runner.invoke(app, ["ablate", "--resume", str(out), "--set", "optim.lr=1"])
    assert isinstance(res.exception, ConfigError) and res.exception.exit_code == 2 and "--set" in res.exception.message


def test_diverging_arm_is_named_in_the_report(shared_data, tmp_path, one_thread):
    out = tmp_path / "abl"
    args = ["ablate", "--profile", "tiny", "--seeds", "1", "--out", str(out), "--arm", "baseline:jepa.run_baseline=true", "--arm", "boom:optim.lr=10,optim.lr_head=10,optim.grad_clip=0"]
    for o in small_overrides(shared_data, 'optim.optimizer="adamw"', "train.eval_every=4", "train.checkpoint_every=4"):
        args += ["--set", o]
    res = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    rep = json.loads((out / ab.REPORT_JSON).read_text())
    assert [(e["name"], e["status"]) for e in rep["excluded"]] == [("boom-s0", "diverged")]
    boom = next(a for a in rep["arms"] if a["name"] == "boom")
    assert boom["n"] == 0 and boom["verdict"].startswith("not tested")
    assert "excluded runs" in res.stdout and "boom-s0" in res.stdout and "diverged" in res.stdout
    assert "| boom-s0 | diverged |" in (out / ab.REPORT_MD).read_text()
    # a diverged run is final: --resume does not run it again
    cb = _CtrlC()
    ab.run_ablation(ab.load_plan(out), callbacks=cb)
    assert cb.skipped == ["baseline-s0", "boom-s0"] and cb.actions == {}


def test_budget_sweep_compares_at_equal_time(shared_data, tmp_path, one_thread):
    out = tmp_path / "abl"
    plan = ab.plan_ablation("tiny", 1, grids=["jepa.jepa_weight=0.5"], overrides=small_overrides(shared_data, "train.max_steps=100000", "train.eval_every=100000", "train.checkpoint_every=100000"), out=out, budget_s=3.0)
    # Ctrl-C after the first step: well inside the budget even on a loaded machine
    assert ab.run_ablation(plan, callbacks=_CtrlC("jepa_weight-0.5-s0", at_step=1)).stopped
    cb = _CtrlC()
    rep = ab.run_ablation(ab.load_plan(out), callbacks=cb).report
    assert rep["comparison"]["mode"] == "time" and rep["comparison"]["budget_s"] == 3.0 and rep["comparison"]["reached_max_steps"] == []
    for a in rep["arms"]:
        (r,) = a["runs"]
        assert r["status"] == "finished" and 0 < r["step"] < 100000 and r["train_time"] >= 3.0
    # the interrupted run resumed with what was left of its budget, not a fresh second
    assert cb.actions["jepa_weight-0.5-s0"].startswith("resume from step 1 (") and "s of the budget left" in cb.actions["jepa_weight-0.5-s0"]
    starts = [r for r in runlog.read_records(out / "jepa_weight-0.5-s0") if r.get("event") == "run_start"]
    assert starts[0]["config"]["train"]["time_budget_s"] == 3.0 and 0 < starts[1]["config"]["train"]["time_budget_s"] < 3.0
    # run_start records the run's --set values (the ablation's, the arm's, the seed): `jepa runs` shows them
    assert "jepa.jepa_weight=0.5" in starts[0]["overrides"] and f"train.seed={plan.seeds[0]}" in starts[0]["overrides"]
    assert "train.time_budget_s=3.0" in starts[0]["overrides"]
    # the resumed segment records the same init digest (taken before its weights were loaded), which
    # is the baseline's: the JEPA arm's extra modules did not change the shared start
    base_start = next(r for r in runlog.read_records(out / "baseline-s0") if r.get("event") == "run_start")
    assert len(base_start["init_digest"]) == 64 and starts[0]["init_digest"] == starts[1]["init_digest"] == base_start["init_digest"]
    assert rep["init"]["ok"] is True and base_start["code"]["version"] == jepa_core.__version__
    assert "equal training time: 3 s of step time per run" in (out / ab.REPORT_MD).read_text()


# --------------------------------------------------------------------------- --jobs


def test_threads_split_and_slots():
    from jepa_core.tools.ablate.jobs import Slots, check_jobs, plan_slots, threads_per_job

    assert [threads_per_job(2, n) for n in (1, 2, 3, 4)] == [2, 1, 1, 1]  # never zero threads
    assert [threads_per_job(16, n) for n in (1, 2, 3, 5)] == [16, 8, 5, 3]  # an equal share, rounded down
    assert plan_slots(2, "cpu", cores=8) == Slots(jobs=2, threads=4, gpus=())
    assert plan_slots(3, "cpu", cores=2).threads == 1 and plan_slots(3, "cpu", cores=2).gpu(2) is None
    # CUDA: one run per visible GPU, --jobs capped at their number, each child seeing its own
    two = plan_slots(4, "cuda", cores=16, gpus=["3", "5"])
    assert two == Slots(jobs=2, threads=8, gpus=("3", "5")) and two.gpu(1) == "5"
    assert plan_slots(1, "cuda:0", cores=16, gpus=["0", "1"]) == Slots(jobs=1, threads=16, gpus=("0",))
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="--jobs"):
            check_jobs(bad)


def test_jobs_is_checked_before_anything_runs(tmp_path, cli):
    plan = ab.plan_ablation("tiny", 1, out=tmp_path / "abl")
    with pytest.raises(ConfigError, match="--jobs must be"):
        ab.run_ablation(plan, jobs=0)
    assert not (tmp_path / "abl").exists()
    res = cli("ablate", "--profile", "tiny", "--jobs", "0", "--out", str(tmp_path / "cli"))
    assert res.returncode == 2 and "--jobs" in res.stderr and not (tmp_path / "cli").exists()


def _results(out: Path, names) -> dict:
    return {n: (ab.read_batch_log(out / n), _final_bpb(out / n)) for n in names}


def test_jobs_2_matches_jobs_1(shared_data, tmp_path, one_thread):
    """Two runs at once, each in its own process, draw the same batches and reach the same
    val BPB as the same runs one after another in this process."""
    names = ["baseline-s0", "jepa-s0"]
    for jobs in (1, 2):
        outcome = ab.run_ablation(ab.plan_ablation("tiny", 1, overrides=small_overrides(shared_data), out=tmp_path / str(jobs)), jobs=jobs)
        assert not outcome.stopped and not outcome.failed and outcome.report["data_order"]["ok"] is True
    one, two = _results(tmp_path / "1", names), _results(tmp_path / "2", names)
    for n in names:
        assert two[n][0] == one[n][0] and len(two[n][0]) == 4
        assert two[n][1] == pytest.approx(one[n][1], rel=1e-5)
    assert one["baseline-s0"][1] != one["jepa-s0"][1]  # the arms differ: equal results are not a fluke of a shared run


@pytest.mark.slow
def test_jobs_2_ctrl_c_stops_every_run_and_resume_finishes_them(shared_data, tmp_path, one_thread):
    """A Ctrl-C to the ablation reaches every child: each stops with a readable checkpoint at
    its last step, and --resume finishes them exactly (same batches, same val BPB as unbroken runs)."""
    from jepa_core.rundir import read_latest

    over = small_overrides(shared_data, "train.max_steps=40", "train.eval_every=20", "train.checkpoint_every=20")
    names = ["baseline-s0", "jepa-s0"]
    ab.run_ablation(ab.plan_ablation("tiny", 1, overrides=over, out=tmp_path / "one"), jobs=1)
    expected = _results(tmp_path / "one", names)

    out = tmp_path / "two"
    handler = signal.getsignal(signal.SIGINT)
    outcome = ab.run_ablation(ab.plan_ablation("tiny", 1, overrides=over, out=out), callbacks=_CtrlC("baseline-s0", at_step=1), jobs=2)
    assert outcome.stopped and signal.getsignal(signal.SIGINT) is handler
    runs = {r["name"]: r for r in json.loads((out / ab.MANIFEST).read_text())["runs"]}
    for n in names:
        assert runs[n]["status"] == "interrupted" and 0 < runs[n]["step"] < 40, runs[n]
        assert read_latest(out / n).step == runs[n]["step"]
    cb = _CtrlC()
    outcome = ab.run_ablation(ab.load_plan(out), callbacks=cb, jobs=2)
    assert not outcome.stopped and not outcome.failed and outcome.report["complete"]
    assert cb.actions == {n: f"resume from step {runs[n]['step']}" for n in names}
    got = _results(out, names)
    for n in names:
        assert got[n][0] == expected[n][0] and len(got[n][0]) == 40  # the same batches, each drawn once
        assert got[n][1] == pytest.approx(expected[n][1], rel=1e-5)


def test_cli_output_is_quiet_with_one_line_per_run(shared_data, tmp_path, one_thread, cli, monkeypatch, recwarn):
    """torch's FutureWarnings (inductor's, in every compiled run) are hidden as `jepa train` hides
    them; what shows is one line per run: arm, seed, step/max."""
    import re
    import warnings

    from jepa_core.train import loop

    real = loop.train

    def noisy_train(*args, **kwargs):
        warnings.warn("torch._inductor: this API is deprecated", FutureWarning)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train", noisy_train)
    args = ["ablate", "-p", "tiny", "--seeds", "1", "--out", str(tmp_path / "abl")]
    for o in small_overrides(shared_data):
        args += ["--set", o]
    res = cli(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [w.message for w in recwarn if issubclass(w.category, FutureWarning)] == []
    assert "Warning" not in res.stdout + res.stderr
    runs = [l for l in res.stdout.splitlines() if l.startswith("[")]
    assert len(runs) == 2, res.stdout
    for line, arm in zip(runs, ("baseline", "jepa")):
        assert re.fullmatch(rf"\[\d/2\] {arm}  seed 0  step 4/4  \d+\.\d s  finished", line), line
