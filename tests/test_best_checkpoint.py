"""Small corpora: epochs, the overfitting alert, the best checkpoint and early stopping (issue 19).

One run on a 2.5 kB text with a model big enough to memorise it: val loss falls,
then climbs for good. Every expectation is computed here from the run's own
eval history (argmin, streaks), not hard-coded, so the test follows the
trajectory whatever the exact numbers are.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from jepa_core import rundir as rd
from jepa_core.config import TrainConfig
from jepa_core.train.evalwatch import EvalWatch
from jepa_core.train.loop import resolve_resume, train
from train_helpers import read_metrics, small_config, small_text

OVERFIT = ("train.max_steps=300", "train.eval_every=30", "train.checkpoint_every=1000", "train.keep_last=1",
           "optim.lr=0.003", "optim.lr_head=0.003", "optim.min_lr_ratio=1.0", 'optim.optimizer="adamw"',
           "jepa.run_baseline=true", "train.sample_tokens=0", "log.every=30", "data.vocab_size=300",
           "model.d_model=128", "model.n_heads=4", "train.overfit_margin=0.02", "train.overfit_evals=2")


def test_eval_watch_by_hand():
    w = EvalWatch.for_config(TrainConfig(overfit_margin=0.1, overfit_evals=2, early_stop_evals=3))
    seq = [(10, 3.0), (20, 2.5), (30, 2.55), (40, 2.7), (50, 2.65), (60, 2.7), (70, 2.4)]
    got = [w.update(s, loss, loss * 1.1) for s, loss in seq]
    assert [v.improved for v in got] == [True, True, False, False, False, False, True]
    # above best + 0.1 at steps 40 (2.7), 50 (2.65) -> the second in a row fires the alert, once
    assert [v.alert is not None for v in got] == [False, False, False, False, True, False, False]
    assert "step 20" in got[4].alert and "2.7500" in got[4].alert  # best step and its BPB (2.5 * 1.1)
    # three evals without a new best (30, 40, 50) -> stop at 50 and again at 60
    assert [v.early_stop is not None for v in got] == [False, False, False, False, True, True, False]
    assert w.best_step == 70 and w.since_best == 0
    again = EvalWatch.for_config(TrainConfig(), w.state())  # what a checkpoint carries
    assert (again.best_loss, again.best_step, again.alerted) == (2.4, 70, True)
    assert not w.update(80, math.nan, None).improved  # a NaN eval is ignored


class Overfit(NamedTuple):
    cfg: Any
    res: Any
    recs: list[dict]
    tmp: Path
    n_train: int  # tokens in the training split


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a shared 2-core box can spin-wait ten times slower
    tmp = tmp_path_factory.mktemp("overfit")
    text = small_text(tmp, n_bytes=2_500)
    cfg = small_config(text, tmp / "runs", *OVERFIT)
    res = train(cfg, run_dir=tmp / "run", handle_signals=False)
    from jepa_core.data import load_prepared

    # the split's size, read from the prepared cache now (each test gets its own JEPA_HOME)
    yield Overfit(cfg, res, read_metrics(tmp / "run"), tmp, len(load_prepared(cfg.data).train_tokens))
    torch.set_num_threads(threads)


def _evals(recs):
    return [(r["step"], r["val_loss"], r["val_bpb"]) for r in recs if r["type"] == "eval"]


def test_overfitting_raises_one_alert_and_keeps_the_best(overfit):
    cfg, res, recs, tmp, _ = overfit
    evals = _evals(recs)
    best_step, best_loss, best_bpb = min(evals, key=lambda e: e[1])
    assert res.status == "finished" and evals[-1][1] > best_loss + 0.3  # it really overfits
    # the alert's step, by hand: the second eval in a row more than 0.02 above the best so far
    best_so_far, streak, expected = math.inf, 0, None
    for step, loss, _ in evals:
        if loss < best_so_far:
            best_so_far, streak = loss, 0
            continue
        streak = streak + 1 if loss > best_so_far + 0.02 else 0
        if streak >= 2 and expected is None:
            expected = step
    alerts = [r for r in recs if r.get("event") == "alert" and r.get("kind") == "overfitting"]
    assert len(alerts) == 1 and alerts[0]["step"] == expected
    assert f"step {alerts[0]['best_step']}" in alerts[0]["message"] and "best.json" in alerts[0]["message"]
    # best.json names the best eval's step, and its files survived keep_last = 1
    best = rd.read_best(tmp / "run")
    assert best.step == best_step and best.weights.is_file() and best.state.is_file()
    assert rd.read_latest(tmp / "run").step == cfg.train.max_steps
    kept = [ref.step for ref in rd.list_checkpoints(tmp / "run" / "checkpoints")]
    assert kept == sorted({best_step, cfg.train.max_steps})
    assert rd.resolve_checkpoint(f"{tmp / 'run'}:best")[0].step == best_step


def test_epochs_match_a_hand_count(overfit):
    cfg, res, recs, tmp, n_train = overfit
    per_step = cfg.train.batch_size * cfg.data.block_size
    start = next(r for r in recs if r.get("event") == "run_start")
    assert start["train_tokens"] == n_train
    assert start["epochs_planned"] == round(300 * per_step / n_train, 3)
    for r in (r for r in recs if r["type"] == "train"):
        assert r["epoch"] == pytest.approx(r["step"] * per_step / n_train, abs=1e-4)


def test_early_stop_and_resume_from_best(overfit, tmp_path, one_thread):
    cfg, _, recs, tmp, _ = overfit
    evals = _evals(recs)
    # same seed, same trajectory: it stops at the second eval after the best with no new best
    best_so_far, since, stop_at = math.inf, 0, None
    for step, loss, _ in evals:
        since = 0 if loss < best_so_far else since + 1
        best_so_far = min(best_so_far, loss)
        if since >= 2 and stop_at is None:
            stop_at = step
    early_cfg = small_config(Path(cfg.data.dataset[len("text:"):]), tmp / "runs", *OVERFIT, "train.early_stop_evals=2")
    res = train(early_cfg, run_dir=tmp_path / "early", handle_signals=False)
    assert (res.status, res.step, res.exit_code) == ("early_stopped", stop_at, 0)
    assert rd.read_latest(tmp_path / "early").step == stop_at  # a final checkpoint at the stop
    # resume from the best checkpoint continues from its step (to a shorter max_steps, a resume-safe key)
    best_step = min(evals, key=lambda e: e[1])[0]
    short = small_config(Path(cfg.data.dataset[len("text:"):]), tmp / "runs", *OVERFIT, f"train.max_steps={best_step + 10}")
    rcfg, ref = resolve_resume(f"{tmp_path / 'early'}:best", short, short.name)
    assert ref.step == best_step
    again = train(rcfg, resume=ref, handle_signals=False)
    assert again.status == "finished" and again.step == best_step + 10
    resumed = [r for r in read_metrics(tmp_path / "early") if r.get("event") == "resume"]
    assert resumed[-1]["from_step"] == best_step


def test_preflight_warns_about_many_epochs(tmp_path, monkeypatch):
    """The epochs check: a pass under EPOCHS_WARN passes, a profile planning more gets a warning naming
    the count (and preflight still succeeds); without prepared data it is skipped."""
    from jepa_core.tools import preflight as pf
    from jepa_core.data import ensure_prepared

    text = small_text(tmp_path, n_bytes=2_500)
    few = small_config(text, tmp_path / "runs", "data.vocab_size=300", "train.max_steps=2")
    many = small_config(text, tmp_path / "runs", "data.vocab_size=300", "train.max_steps=300")
    check = next(c for c in pf.CHECKS if c.name == "epochs")
    assert pf.run_check(check, _ctx(few)).status == "skip"  # not prepared yet
    n = len(ensure_prepared(few.data).train_tokens)
    ok = pf.run_check(check, _ctx(few))
    assert ok.status == "pass" and f"{2 * 128 / n:.1f} passes over {n:,}" in ok.detail
    warned = pf.run_check(check, _ctx(many))
    assert warned.status == "warn" and f"{300 * 128 / n:.1f} passes" in warned.detail and "overfitting" in warned.detail
    assert pf.summarize_results([ok, warned])["ok"] and pf.summarize_results([ok, warned])["warned"] == 1


def _ctx(cfg):
    from jepa_core.tools.preflight import PreflightContext

    return PreflightContext(cfg.name, (), cfg, cfg, cfg, [])
