"""The training evaluator: whole-split BPB on a hand-made tokenizer, the cap, the JEPA probes' record."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from jepa_core.data import val_windows
from jepa_core.model import JepaLM, jepa_eval_metrics
from jepa_core.train.evaluator import Evaluator
from model_helpers import small_cfg

# A hand-made tokenizer: ids 0..3 decode to "a", "bb", "é", "ccc" (1, 2, 2 and 3 UTF-8 bytes).
HAND_BYTES = np.array([1, 2, 2, 3], dtype=np.int64)
BITS = np.array([1, 2, 3, 3])  # the fake model's P = (1/2, 1/4, 1/8, 1/8), whatever the context


def _prepared(tokens: np.ndarray, byte_lengths: np.ndarray):
    tok = SimpleNamespace(token_byte_lengths=lambda: byte_lengths)
    return SimpleNamespace(val_tokens=tokens, tokenizer=lambda: tok)


class _FixedModel:
    """Stands in for a baseline JepaLM: fixed next-token probabilities, records every forward."""

    is_baseline = True

    def __init__(self):
        self.training, self.inputs = True, []

    def eval(self):
        self.training = False
        return self

    def train(self, mode: bool = True):
        self.training = mode
        return self

    @property
    def transformer(self):
        return self

    def __call__(self, x: torch.Tensor):  # the stack: (hidden, tap); here the hidden state is x itself
        assert not self.training
        self.inputs.append(x.clone())
        return x, None

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125])).expand(*h.shape, 4).clone()


def _baseline_cfg(**train):
    return small_cfg(data={"block_size": 8}, jepa={"run_baseline": True}, train={"batch_size": 2, **train})


# "abbéccca" "ébb" x 3, then "ccc": 22 tokens, the first "a" (1 byte), the last "ccc" (3 bytes)
STREAM = np.array([0, 1, 2, 3, 0, 2, 1] * 3 + [3], dtype=np.int64)


def test_bpb_by_hand_over_the_targets():
    """Bug (c): counting validation bytes over the inputs instead of the targets."""
    ev = Evaluator(_baseline_cfg(), _prepared(STREAM, HAND_BYTES), torch.device("cpu"), baseline=True)
    model = _FixedModel()
    rec = ev(model)
    assert model.training  # left in train mode
    targets = STREAM[1:]
    bits, nbytes = int(BITS[targets].sum()), int(HAND_BYTES[targets].sum())
    # by hand: a pattern is 1+2+3+3+1+3+2 = 15 bits and 1+2+2+3+1+2+2 = 13 bytes; three of them,
    # less the first "a" (never a target), plus the last "ccc": 45 - 1 + 3 = 47 bits, 39 - 1 + 3 = 41 bytes
    assert (bits, nbytes) == (47, 41)
    assert rec["val_bpb"] == pytest.approx(47 / 41, rel=1e-6)
    assert rec["val_bytes"] == 41 and rec["val_tokens"] == 21 and rec["val_capped"] is False
    assert rec["val_loss"] == pytest.approx(47 * math.log(2) / 21, rel=1e-6)
    # the inputs' bytes (39) would give another number: the count is over the targets
    assert int(HAND_BYTES[STREAM[:-1]].sum()) == 39
    # blocks of 8: 8 + 8 + 5 inputs, the short last block included, each token fed once
    assert [x.shape for x in model.inputs] == [(2, 8), (1, 5)]


def test_the_whole_split_is_scored_once_and_a_cap_is_logged():
    n = 1000
    tokens = np.random.default_rng(0).integers(0, 4, n)
    ev = Evaluator(_baseline_cfg(), _prepared(tokens, HAND_BYTES), torch.device("cpu"), baseline=True)
    rec = ev(_FixedModel())
    assert rec["val_tokens"] == n - 1 and rec["val_capped"] is False
    assert rec["val_bytes"] == int(HAND_BYTES[tokens[1:]].sum())
    assert rec["val_bpb"] == pytest.approx(BITS[tokens[1:]].sum() / HAND_BYTES[tokens[1:]].sum(), rel=1e-6)
    # the cap: the first 100 targets, flagged in the record
    ev = Evaluator(_baseline_cfg(eval_tokens=100), _prepared(tokens, HAND_BYTES), torch.device("cpu"), baseline=True)
    rec = ev(_FixedModel())
    assert rec["val_tokens"] == 100 and rec["val_capped"] is True
    assert rec["val_bytes"] == int(HAND_BYTES[tokens[1:101]].sum())
    # a stride scores the same tokens (this fake model ignores context: the same BPB)
    ev = Evaluator(_baseline_cfg(eval_stride=3), _prepared(tokens, HAND_BYTES), torch.device("cpu"), baseline=True)
    rec2 = ev(_FixedModel())
    assert rec2["val_tokens"] == n - 1 and rec2["val_bpb"] == pytest.approx(BITS[tokens[1:]].sum() / HAND_BYTES[tokens[1:]].sum(), rel=1e-6)


def test_jepa_record_has_the_probes_over_the_fixed_set(one_thread):
    V = 53
    cfg = small_cfg(jepa={"eval_pairs": 100}, train={"batch_size": 4})
    torch.manual_seed(0)
    model = JepaLM.from_config(cfg, V)
    tokens = np.random.default_rng(1).integers(0, V, 40 * 32 + 7)
    lengths = np.random.default_rng(2).integers(1, 4, V)
    ev = Evaluator(cfg, _prepared(tokens, lengths), torch.device("cpu"), baseline=False)
    rec = ev(model)
    assert model.training
    assert rec["val_tokens"] == len(tokens) - 1 and rec["val_bytes"] == int(lengths[tokens[1:]].sum())
    # 4 pairs per block (pairs_per_seq), 25 blocks: 100 pairs
    assert rec["retrieval_pairs"] == 100
    for k in (2, 4):
        assert 0.0 <= rec[f"retrieval_top1_h{k}"] <= 1.0 and 0.0 <= rec[f"retrieval_copy_top1_h{k}"] <= 1.0
    assert rec["eff_rank"] > 1.0
    assert ev(model) == pytest.approx(rec)  # fixed: the same numbers at the next eval


@pytest.mark.parametrize("teacher,extra", [("projector", {}), ("encoder", {}), ("projector", {"eval_stride": 16}), ("projector", {"eval_tokens": 200})])
def test_probes_reuse_the_scoring_pass_and_match_a_separate_one(one_thread, teacher, extra):
    V = 53
    cfg = small_cfg(jepa={"eval_pairs": 40, "teacher": teacher}, train={"batch_size": 4, **extra})
    torch.manual_seed(0)
    model = JepaLM.from_config(cfg, V)
    tokens = np.random.default_rng(1).integers(0, V, 30 * 32 + 7)  # 30 full blocks, then 6 targets
    ev = Evaluator(cfg, _prepared(tokens, np.ones(V, dtype=np.int64)), torch.device("cpu"), baseline=False)
    rows = []
    hook = model.transformer.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    try:
        rec = ev(model)
    finally:
        hook.remove()
    w = val_windows(len(tokens), 32, cfg.train.eval_stride, cfg.train.eval_tokens)
    full = {int(s) for s, n in zip(w.start, w.length) if n == 32}
    # 10 pair blocks (4 pairs each) at 0, 96, 192, ...: a pass of their own only where no full window starts
    assert ev.probe.starts.tolist() == [96 * i for i in range(10)]
    uncovered = sum(int(s) not in full for s in ev.probe.starts)
    assert sum(rows) == len(w.start) + uncovered
    # plain blocks and a stride of 16 cover every pair block; the 200-token cap only 0 and 96
    assert uncovered == (8 if "eval_tokens" in extra else 0)
    model.eval()
    ref = jepa_eval_metrics(model, ev.blocks, ev.probe.pairs, batch_size=3)
    for k, v in ref.items():
        assert rec[k] == pytest.approx(v, abs=1e-6), k
    assert rec["retrieval_pairs"] == 40


def test_a_split_shorter_than_a_block_is_a_clear_error():
    from jepa_core.errors import ConfigError

    with pytest.raises(ConfigError, match="too few for one block of 8"):
        Evaluator(_baseline_cfg(), _prepared(STREAM[:8], HAND_BYTES), torch.device("cpu"), baseline=True)
    Evaluator(_baseline_cfg(), _prepared(STREAM[:9], HAND_BYTES), torch.device("cpu"), baseline=True)


@pytest.mark.parametrize("extra", [(), ("train.eval_tokens=300",)])
def test_a_training_run_logs_the_whole_split(tmp_path, one_thread, extra):
    """End to end: the eval lines of metrics.jsonl carry what the evaluator scored."""
    from jepa_core.data import load_prepared
    from jepa_core.train.loop import train
    from train_helpers import read_metrics, small_config, small_text

    cfg = small_config(small_text(tmp_path), tmp_path / "runs", "train.max_steps=2", "train.eval_every=2", *extra)
    res = train(cfg, run_dir=tmp_path / "run", handle_signals=False)
    assert res.status == "finished"
    n_val = len(load_prepared(cfg.data).val_tokens)
    evals = [r for r in read_metrics(tmp_path / "run") if r["type"] == "eval"]
    assert len(evals) == 1
    e = evals[0]
    want = 300 if extra else n_val - 1
    assert e["val_tokens"] == want and e["val_capped"] is bool(extra)
    assert e["retrieval_pairs"] >= cfg.jepa.eval_pairs
    assert {f"retrieval_copy_top1_h{k}" for k in cfg.jepa.horizons} <= set(e)
    assert e["val_bpb"] == pytest.approx(e["val_loss"] * e["val_tokens"] / (math.log(2) * e["val_bytes"]), rel=1e-9)
