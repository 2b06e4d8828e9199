"""The `jepa data prepare` progress bar: bytes, bytes/s, tokens/s and ETA for the encoding stage."""

from __future__ import annotations

import io

from rich.console import Console

from jepa_cli.render import data as render

from cli_helpers import cli  # noqa: F401 (fixture)


def test_encode_bar_shows_bytes_rates_and_eta(monkeypatch):
    clock = {"t": 0.0}
    buf = io.StringIO()
    monkeypatch.setattr(render, "err_console", Console(file=buf, force_terminal=True, width=160, color_system=None))
    bar = render._StageProgress()
    bar.progress.get_time = lambda: clock["t"]
    with bar:
        bar("encode", 0, 0)
        task = bar.progress.tasks[0]
        task.start_time = 0.0
        clock["t"] = 10.0
        bar("encode", 50_000_000, 200_000_000)  # 50 MB in 10 s of an estimated 200 MB
        bar("tokens", 12_000_000, 48_000_000)
        text = render._amount_column().render(bar.progress.tasks[0]).plain
    assert "50.0 MB / 200.0 MB" in text
    assert "5.0 MB/s" in text and "1.2 Mtok/s" in text
    assert "eta 0:00:30" in text  # 150 MB left at 5 MB/s


def test_count_stages_and_resume_line(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(render, "err_console", Console(file=buf, force_terminal=True, width=160, color_system=None))
    with render._StageProgress() as bar:
        bar("tokenizer", 1, 1)
        bar("resume", 3, 300_000_000)
        assert render._amount_column().render(bar.progress.tasks[0]).plain == "1/1"
    assert "continuing an interrupted preparation: 3 finished shards, 300,000,000 tokens kept" in buf.getvalue()


# --------------------------------------------------------------------------- what an interrupt keeps (issue 33)


def _interrupt_mid_encode(monkeypatch):
    """Ctrl-C once the encoding of a text has begun (its progress called once)."""
    from jepa_core.data.tokenizer import BPETokenizer

    def encode_stream(self, pieces, progress=None):
        if progress is not None:
            progress(1, len(pieces))
        raise KeyboardInterrupt

    monkeypatch.setattr(BPETokenizer, "encode_stream", encode_stream)


def _text(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text("ROMEO: what light through yonder window breaks?\n\n" * 400, encoding="utf-8")
    return path


def _kept(home) -> list[str]:
    """What a preparation left in JEPA_HOME that a second run could use: caches, their partial work, tokenizers."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


def test_an_interrupted_text_prepare_says_nothing_is_kept_and_keeps_nothing(tmp_path, monkeypatch, cli):
    """A `text:` file is encoded whole and written at the end: the message said "the work up to the last whole
    chunk is kept" when nothing was."""
    import os
    from pathlib import Path

    _interrupt_mid_encode(monkeypatch)
    r = cli("data", "prepare", f"text:{_text(tmp_path)}", "--vocab-size", "300")
    assert r.returncode == 130 and "Traceback" not in r.stderr
    said = " ".join(r.stderr.split())
    assert ("interrupted: nothing of the encoding is kept (a text file is encoded whole, in one pass); "
            "run the same command again to start it over.") in said
    assert "last whole chunk" not in said
    assert _kept(Path(os.environ["JEPA_HOME"])) == []  # as said


def test_what_an_interrupted_preparation_keeps_by_kind_of_dataset(tmp_path):
    from jepa_core.config import DataConfig
    from jepa_core.data.prepare import kept_when_interrupted

    assert kept_when_interrupted(DataConfig(dataset=f"json:{tmp_path}"))[0] is True  # sharded: committed chunk by chunk
    assert kept_when_interrupted(DataConfig(dataset=f"text:{tmp_path / 'a.txt'}")) == (
        False, "nothing of the encoding is kept (a text file is encoded whole, in one pass)")
    assert kept_when_interrupted(DataConfig(dataset="tiny_shakespeare"))[0] is False  # a text alias, downloads aside


def test_an_interrupted_train_says_what_its_data_preparation_kept(tmp_path, monkeypatch, cli):
    _interrupt_mid_encode(monkeypatch)
    r = cli("train", "--no-tui", "--profile", "tiny", "--set", f'data.dataset="text:{_text(tmp_path)}"', "--set", "data.vocab_size=300",
            "--set", "data.block_size=16", "--set", "jepa.horizons=[1,4]", "--set", "jepa.horizon_probs=[0.5,0.5]",
            "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 130 and "Traceback" not in r.stderr
    said = " ".join(r.stderr.split())
    assert ("interrupted before training, while the run was being built: nothing was trained; of the data preparation, "
            "nothing of the encoding is kept (a text file is encoded whole, in one pass). Run the same command again.") in said
    assert not (tmp_path / "run").exists()


def test_a_ctrl_c_before_the_build_is_said_too(tmp_path, monkeypatch, cli):
    """Loading the config and torch take the first second or two: Typer ended a Ctrl-C there with 130 and no word."""
    import jepa_core.config
    import jepa_core.train.loop

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    for target, name in ((jepa_core.config, "load_config"), (jepa_core.train.loop, "train")):
        with monkeypatch.context() as mp:
            mp.setattr(target, name, interrupted)
            r = cli("train", "--no-tui", "--profile", "tiny", "--run-dir", str(tmp_path / "run"))
        assert r.returncode == 130, r.stderr
        assert "interrupted before training: nothing was trained. Run the same command again." in " ".join(r.stderr.split()), name
    assert not (tmp_path / "run").exists()
