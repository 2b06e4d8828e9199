"""`jepa data prepare` / `jepa data list` end to end, in a subprocess like a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jepa_core.config import DataConfig

TS_SHA = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def jepa(*args: str, home: Path, mirror: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", JEPA_HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("JEPA_DEBUG", None)
    if mirror is not None:
        env["JEPA_DATA_MIRROR"] = str(mirror)
    return subprocess.run([sys.executable, "-m", "jepa_cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def _clean_failure(r: subprocess.CompletedProcess, home: Path) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stderr.startswith(("error: ", "warning: ")) and "error: " in r.stderr
    # nothing half-written: no cache folder, no tokenizer
    assert not (home / "data").exists() or list((home / "data").iterdir()) == []
    assert not (home / "tokenizers").exists() or list((home / "tokenizers").iterdir()) == []
    return " ".join(r.stderr.split())  # unwrap Rich's line breaks


@pytest.fixture(scope="module")
def shared(shared_home, mirror):
    from jepa_core.data import ensure_prepared

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JEPA_HOME", str(shared_home))
        ensure_prepared(DataConfig())
    return shared_home


def test_prepare_reuses_the_cache(shared, mirror, monkeypatch):
    """A second prepare reads the manifest and rewrites nothing (its speed is benchmarks' business:
    a wall-clock bound here would only measure the machine's load)."""
    files = {p: p.stat().st_mtime_ns for p in (shared / "data").rglob("*") if p.is_file()}
    r = jepa("data", "prepare", "tiny_shakespeare", home=shared, mirror=mirror)
    assert r.returncode == 0, r.stderr
    assert {p: p.stat().st_mtime_ns for p in files} == files  # not one cache file rewritten
    assert "reused the prepared cache" in r.stdout
    import json

    from jepa_core.data import cache_dir_for

    monkeypatch.setenv("JEPA_HOME", str(shared))
    cache = cache_dir_for(DataConfig())
    splits = json.loads((cache / "manifest.json").read_text())["splits"]
    assert f"{splits['train']['tokens']:,}" in r.stdout and f"{splits['val']['tokens']:,}" in r.stdout
    assert str(cache) in r.stdout


def test_prepare_does_not_import_torch(shared, mirror):
    code = (
        "import sys\n"
        "from jepa_cli.main import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['data', 'prepare', 'tiny_shakespeare'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules, 'datasets' in sys.modules)\n"
    )
    env = dict(os.environ, JEPA_HOME=str(shared), JEPA_DATA_MIRROR=str(mirror))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_list_shows_aliases_and_where_they_are(shared, mirror):
    r = jepa("data", "list", home=shared, mirror=mirror)
    assert r.returncode == 0, r.stderr
    lines = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") > 3}
    assert "yes" in lines["tiny_shakespeare"] and "mirror" in lines["tiny_shakespeare"]
    assert "missing" in lines["wikitext2"] and "no" in lines["wikitext2"]
    assert "text:PATH" in lines
    assert f"{shared / 'data'}/tiny_shakespeare-bpe1024-" in lines["tiny_shakespeare"]


def test_prepare_text_file_from_the_mirror(tmp_path, mirror):
    rel = os.path.relpath(mirror / "wikitext-2" / "valid.txt")
    r = jepa("data", "prepare", f"text:{rel}", "--vocab-size", "512", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "prepared" in r.stdout and "512" in r.stdout
    (cache,) = (tmp_path / "data").iterdir()
    assert cache.name.startswith("text-valid.txt-bpe512-") and (cache / "manifest.json").is_file()


def test_wikitext2_offline_exits_2_with_the_three_ways(tmp_path, mirror):
    r = jepa("data", "prepare", "wikitext2", home=tmp_path, mirror=mirror)
    msg = _clean_failure(r, tmp_path)
    assert "wikitext-2/train.txt" in msg and "not available" in msg
    assert "--from PATH" in msg and "JEPA_DATA_MIRROR" in msg and "HF_HUB_OFFLINE" in msg


def test_missing_file(tmp_path):
    msg = _clean_failure(jepa("data", "prepare", f"text:{tmp_path / 'nope.txt'}", home=tmp_path / "h"), tmp_path / "h")
    assert "does not exist" in msg


def test_empty_file(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    msg = _clean_failure(jepa("data", "prepare", f"text:{tmp_path / 'empty.txt'}", home=tmp_path / "h"), tmp_path / "h")
    assert "is empty" in msg


def test_not_utf8(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("Grüße aus Köln\n".encode("latin-1") * 100)
    msg = _clean_failure(jepa("data", "prepare", f"text:{tmp_path / 'latin1.txt'}", home=tmp_path / "h"), tmp_path / "h")
    assert "not UTF-8" in msg and "0xfc at offset 2" in msg and "iconv" in msg  # G, r, then ü


def test_too_short_for_one_block(tmp_path):
    (tmp_path / "short.txt").write_text("To be, or not to be, that is the question.\n" * 20, encoding="utf-8")
    msg = _clean_failure(jepa("data", "prepare", f"text:{tmp_path / 'short.txt'}", home=tmp_path / "h"), tmp_path / "h")
    assert "too short for one block" in msg and "block_size 128" in msg and "129 tokens" in msg


def test_too_short_uses_the_profiles_block_size(tmp_path):
    profile = tmp_path / "big.toml"
    profile.write_text("[data]\nblock_size = 4096\n", encoding="utf-8")
    (tmp_path / "medium.txt").write_text("To be, or not to be, that is the question.\n" * 400, encoding="utf-8")
    r = jepa("data", "prepare", f"text:{tmp_path / 'medium.txt'}", "--profile", str(profile), home=tmp_path / "h")
    msg = _clean_failure(r, tmp_path / "h")
    assert "block_size 4096" in msg
    ok = jepa("data", "prepare", f"text:{tmp_path / 'medium.txt'}", "--vocab-size", "300", home=tmp_path / "h")
    assert ok.returncode == 0, ok.stderr  # the default block size of 128 fits


def test_vocab_too_small(tmp_path):
    (tmp_path / "t.txt").write_text("plenty of text here\n" * 500, encoding="utf-8")
    msg = _clean_failure(jepa("data", "prepare", f"text:{tmp_path / 't.txt'}", "--vocab-size", "100", home=tmp_path / "h"), tmp_path / "h")
    assert "too small" in msg and "4 special tokens" in msg and "260" in msg


def test_mirror_sha256_mismatch_warns_refuses_then_force_accepts(tmp_path, mirror):
    fake = tmp_path / "mirror" / "tiny_shakespeare"
    fake.mkdir(parents=True)
    body = (mirror / "tiny_shakespeare" / "input.txt").read_bytes()[:150_000]  # short: the forced build stays quick
    (fake / "input.txt").write_bytes(body)
    import hashlib

    bad = hashlib.sha256(body).hexdigest()
    home = tmp_path / "h"
    r = jepa("data", "prepare", "tiny_shakespeare", home=home, mirror=tmp_path / "mirror")
    msg = _clean_failure(r, home)
    warning, _, error = msg.partition("error: ")
    assert warning.startswith("warning:") and bad in warning and TS_SHA in warning
    assert "Refusing" in error and "--force" in error

    forced = jepa("data", "prepare", "tiny_shakespeare", "--force", home=home, mirror=tmp_path / "mirror")
    assert forced.returncode == 0, forced.stderr
    assert bad in " ".join(forced.stderr.split()) and "prepared" in forced.stdout
    assert "sha256 mismatch accepted with --force" in forced.stdout
