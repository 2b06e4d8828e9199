"""The code version every run records: package version and git commit, never fatal."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import jepa_core
from jepa_core import codeversion as cv


def test_commit_of_this_checkout_and_none_outside_one(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    pkg = Path(jepa_core.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pkg, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the package is not in a git checkout")
    assert cv.code_version() == {"version": jepa_core.__version__, "commit": head.stdout.strip()}
    assert cv.git_commit(tmp_path) is None  # not a checkout (pytest's tmp is outside any repository)
    assert cv.git_commit(tmp_path / "missing") is None  # cwd that does not exist: OSError, swallowed


def test_no_git_at_all_is_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to find
    assert cv.git_commit(Path(jepa_core.__file__).parent) is None


def test_code_label():
    assert cv.code_label({"version": "0.1.0", "commit": "0123456789abcdef" * 2 + "01234567"}) == "0.1.0 @ 0123456789ab"
    assert cv.code_label({"version": "0.1.0", "commit": None}) == "0.1.0"
    assert cv.code_label(None) == "unknown" and cv.code_label({"commit": "x"}) == "unknown"
