"""A stopped preparation continues from its finished work and ends byte-identical to an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jepa_core.config import DataConfig
from jepa_core.data import cache_dir_for, pipeline, prepare_dataset, records
from jepa_core.data.shards import ShardWriter

from test_data_records import docs, write_files  # noqa: F401  (docs is a fixture)

SHARD = 1_500
CHUNK = 4_000


@pytest.fixture
def small_pieces(monkeypatch):
    # many shards and many chunks, so an interruption lands between and inside them
    monkeypatch.setattr(pipeline, "SHARD_TOKENS", SHARD)
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", CHUNK)
    monkeypatch.setattr(pipeline, "COMMIT_SECONDS", 0.0)
    monkeypatch.setattr(records, "ROWS_PER_READ", 8)


@pytest.fixture
def dataset(tmp_path, docs):
    write_files(tmp_path / "d", docs, "parquet", n_files=4)
    return DataConfig(dataset=f"parquet:{tmp_path / 'd'}", text_field="body", vocab_size=400, block_size=16)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix == ".bin" or p.name == "tokenizer.json"}


def _reference(cfg: DataConfig, home: Path, monkeypatch) -> tuple[dict[str, bytes], dict]:
    monkeypatch.setenv("JEPA_HOME", str(home))
    p = prepare_dataset(cfg)
    return _files(p.dir), p.manifest


def _same_result(cfg, ref_files, ref_manifest, prepared) -> None:
    assert _files(prepared.dir) == ref_files  # byte-identical shards and tokenizer
    for split in ("train", "val"):
        assert prepared.manifest["splits"][split] == ref_manifest["splits"][split]
    partial = prepared.dir.parent / f".{prepared.dir.name}.partial"
    assert not partial.exists()


def test_ctrl_c_between_chunks_keeps_the_shards_and_resumes(dataset, small_pieces, tmp_path, monkeypatch):
    ref_files, ref_manifest = _reference(dataset, tmp_path / "ref", monkeypatch)
    n_train_shards = len(ref_manifest["splits"]["train"]["shards"])
    assert n_train_shards >= 6

    monkeypatch.setenv("JEPA_HOME", str(tmp_path / "cut"))
    calls = {"n": 0}

    def stop_midway(stage, done, total):
        if stage == "encode":
            calls["n"] += 1
            if calls["n"] == 4:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(dataset, progress=stop_midway)
    dest = cache_dir_for(dataset)
    partial = dest.parent / f".{dest.name}.partial"
    assert not dest.exists() and partial.is_dir()
    kept = sorted(p.name for p in partial.glob("train-*.bin"))
    assert 0 < len(kept) < n_train_shards
    prog = json.loads((partial / "progress.json").read_text())
    assert [e["file"] for e in prog["writers"]["train"]["finished"]] == kept
    for name in kept:  # what was kept is exactly what the uninterrupted run wrote
        assert (partial / name).read_bytes() == ref_files[name]

    seen = []
    resumed = prepare_dataset(dataset, progress=lambda s, d, t: seen.append((s, d, t)))
    assert ("resume", len(kept) + len(prog["writers"]["val"]["finished"]), sum(w["cur_tokens"] + sum(e["tokens"] for e in w["finished"]) for w in prog["writers"].values())) in seen
    assert not any(s == "tokenizer" for s, _, _ in seen)  # the tokenizer was kept, not trained again
    _same_result(dataset, ref_files, ref_manifest, resumed)


def test_ctrl_c_inside_a_write_falls_back_to_the_last_commit(dataset, small_pieces, tmp_path, monkeypatch):
    ref_files, ref_manifest = _reference(dataset, tmp_path / "ref", monkeypatch)
    monkeypatch.setenv("JEPA_HOME", str(tmp_path / "cut"))
    real_add = ShardWriter.add
    calls = {"n": 0}

    def add_then_stop(self, ids):
        calls["n"] += 1
        if calls["n"] == 9 and self.prefix == "train":
            real_add(self, ids[: len(ids) // 2])  # half the chunk is on disk, the position not yet recorded
            raise KeyboardInterrupt
        return real_add(self, ids)

    monkeypatch.setattr(ShardWriter, "add", add_then_stop)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(dataset)
    monkeypatch.setattr(ShardWriter, "add", real_add)
    dest = cache_dir_for(dataset)
    partial = dest.parent / f".{dest.name}.partial"
    prog = json.loads((partial / "progress.json").read_text())
    committed = prog["writers"]["train"]["cur_tokens"] + sum(e["tokens"] for e in prog["writers"]["train"]["finished"])
    on_disk = sum(p.stat().st_size // 2 for p in partial.glob("train-*.bin*"))
    assert on_disk > committed  # the interrupted write went further than the record
    _same_result(dataset, ref_files, ref_manifest, prepare_dataset(dataset))


def test_interrupted_twice_and_during_the_tokenizer(dataset, small_pieces, tmp_path, monkeypatch):
    ref_files, ref_manifest = _reference(dataset, tmp_path / "ref", monkeypatch)
    monkeypatch.setenv("JEPA_HOME", str(tmp_path / "cut"))

    def stop_at(stage_name, k):
        calls = {"n": 0}

        def cb(stage, done, total):
            if stage == stage_name:
                calls["n"] += 1
                if calls["n"] == k:
                    raise KeyboardInterrupt

        return cb

    for cb in (stop_at("tokenizer", 1), stop_at("encode", 3), stop_at("encode", 5)):
        with pytest.raises(KeyboardInterrupt):
            prepare_dataset(dataset, progress=cb)
    _same_result(dataset, ref_files, ref_manifest, prepare_dataset(dataset))


def test_changed_settings_or_files_start_over(dataset, small_pieces, tmp_path, monkeypatch, docs):
    monkeypatch.setenv("JEPA_HOME", str(tmp_path / "cut"))

    def stop(stage, done, total):
        if stage == "encode":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(dataset, progress=stop)
    # the source changes while the preparation is stopped: its partial work must not be reused
    write_files(Path(dataset.dataset.removeprefix("parquet:")), list(reversed(docs)), "parquet", n_files=4)
    seen = []
    p = prepare_dataset(dataset, progress=lambda s, d, t: seen.append(s))
    assert "resume" not in seen and "tokenizer" in seen
    ref_files, _ = _reference(dataset, tmp_path / "ref", monkeypatch)
    assert _files(p.dir) == ref_files


# `jepa data prepare` (or `jepa train`) itself, in a subprocess: the pipeline's pieces made small and each chunk's
# encoding slowed, so that a signal lands mid-encode; a marker file says when one chunk is committed
_SLOW_PREPARE = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job inherits SIGINT ignored
from pathlib import Path
from jepa_core.data import pipeline, records
pipeline.SHARD_TOKENS, pipeline.CHUNK_BYTES, pipeline.COMMIT_SECONDS, records.ROWS_PER_READ = {shard}, {chunk}, 0.0, 8
encode, calls = pipeline.encode_texts, [0]
def slow(tok, texts):
    calls[0] += 1
    if calls[0] == 3:
        Path({marker!r}).touch()
    time.sleep(0.25)
    return encode(tok, texts)
pipeline.encode_texts = slow
from jepa_cli.main import main
sys.argv = {argv!r}
main()
"""


def _prepare_argv(dataset: str) -> list[str]:
    return ["jepa", "data", "prepare", dataset, "--text-field", "body", "--vocab-size", "400"]


def _signal_mid_encode(argv: list[str], tmp_path: Path, sig: str) -> tuple[str, str, str, dict]:
    """Run `argv` through _SLOW_PREPARE, send `sig` once a chunk is committed mid-encode, and check the
    common outcome: exit 130, no traceback, the committed chunks kept. Returns (stdout, stderr, script, env)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "encoding"
    script = _SLOW_PREPARE.format(shard=SHARD, chunk=CHUNK, marker=str(marker), argv=argv)
    env = dict(os.environ, JEPA_HOME=str(tmp_path / "cut"), PYTHONWARNINGS="ignore")
    env.pop("JEPA_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1][-3000:]
    marker.unlink()
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in out + err
    partial = next((tmp_path / "cut").rglob("progress.json")).parent
    assert sorted(partial.glob("train-*.bin*"))  # committed, not thrown away with the process
    return out, err, script, env


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGHUP", "SIGTERM"])
def test_a_hang_up_or_sigterm_stops_prepare_like_ctrl_c(dataset, tmp_path, sig):
    import subprocess
    import sys

    out, err, script, env = _signal_mid_encode(_prepare_argv(dataset.dataset), tmp_path, sig)
    assert f"interrupted ({sig}): the work up to the last whole chunk is kept" in " ".join(err.split())
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "continuing an interrupted preparation" in again.stderr and "prepared" in again.stdout


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGHUP", "SIGINT"])
def test_a_hang_up_or_ctrl_c_while_train_prepares_its_data(dataset, tmp_path, sig):
    """`jepa train` prepares the data itself: a stop then keeps the committed chunks, says so, exits 130, no traceback."""
    run = tmp_path / "run"
    sets = [f"data.dataset={json.dumps(dataset.dataset)}", 'data.text_field="body"', "data.vocab_size=400", "data.block_size=16",
            "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "jepa.horizons=[1,4]", "jepa.horizon_probs=[0.5,0.5]",
            "train.max_steps=2", "train.compile=false", 'train.device="cpu"']
    argv = ["jepa", "train", "--no-tui", "--profile", "tiny", "--run-dir", str(run), *[w for s in sets for w in ("--set", s)]]
    out, err, _, _ = _signal_mid_encode(argv, tmp_path, sig)
    said = " ".join(err.split())
    assert f"interrupted{f' ({sig})' if sig != 'SIGINT' else ''} before training, while the run was being built" in said, said[-2000:]
    assert not (run / "metrics.jsonl").exists()  # nothing of a run was written
