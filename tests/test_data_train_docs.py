"""Training on document datasets: a Parquet and a JSON-lines corpus (several files, the text in `body`,
no validation split) prepare, train a few steps through the public `train()`, and resume exactly."""

from __future__ import annotations

import numpy as np
import pytest

from jepa_core.data import load_prepared, pipeline
from jepa_core.train.loop import resolve_resume, train

from test_data_records import docs, write_files  # noqa: F401  (docs is a fixture)
from train_helpers import read_metrics, small_config, small_text


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return small_text(tmp_path_factory.mktemp("text"))


@pytest.mark.parametrize("kind", ["parquet", "json"])
def test_train_and_resume_on_documents(kind, tmp_path, text, docs, monkeypatch, one_thread):
    # small shards: training windows are drawn across several files, validation spans two
    monkeypatch.setattr(pipeline, "SHARD_TOKENS", 2_000)
    folder = tmp_path / "corpus"
    write_files(folder, docs, kind, n_files=3)
    cfg = small_config(text, tmp_path / "runs", f'data.dataset="{kind}:{folder}"', 'data.text_field="body"', "data.val_fraction=0.2")

    one = train(cfg, run_dir=tmp_path / "one", handle_signals=False)
    assert one.status == "finished" and one.step == 8
    prepared = load_prepared(cfg.data)
    assert prepared.format == "jepa-token-cache/2"
    assert prepared.train_tokens.n_shards >= 3 and prepared.val_tokens.n_shards >= 2
    assert (tmp_path / "one" / "tokenizer.json").read_bytes() == prepared.tokenizer_path.read_bytes()

    half = train(cfg, run_dir=tmp_path / "two", stop_after=4, handle_signals=False)
    assert half.status == "interrupted" and half.step == 4
    cfg2, ref = resolve_resume(str(tmp_path / "two"), cfg, cfg.name)
    rest = train(cfg2, resume=ref, handle_signals=False)
    assert rest.status == "finished" and rest.step == 8

    def losses(run_dir):
        return {r["step"]: (r["loss"], r["lm_loss"]) for r in read_metrics(run_dir) if r["type"] == "train"}

    def evals(run_dir):
        return {r["step"]: r["val_loss"] for r in read_metrics(run_dir) if r["type"] == "eval"}

    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(a) == list(range(1, 9)) and a == b  # the resumed steps drew the same windows
    assert evals(tmp_path / "one") == evals(tmp_path / "two")
    assert all(np.isfinite(v) for v in evals(tmp_path / "one").values())
