"""The `jepa data prepare` progress bar: bytes, bytes/s, tokens/s and ETA for the encoding stage."""

from __future__ import annotations

import io

from rich.console import Console

from jepa_cli.render import data as render


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
