"""Test environment: offline, isolated caches, the shared data mirror."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MIRROR = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if "JEPA_DATA_MIRROR" not in os.environ and DEFAULT_MIRROR.is_dir():
    os.environ["JEPA_DATA_MIRROR"] = str(DEFAULT_MIRROR)


@pytest.fixture(scope="session")
def mirror() -> Path:
    p = Path(os.environ.get("JEPA_DATA_MIRROR", DEFAULT_MIRROR))
    if not (p / "tiny_shakespeare" / "input.txt").is_file():
        pytest.skip("no data mirror (set JEPA_DATA_MIRROR)")
    return p


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets a private JEPA_HOME (and profiles folder) unless it asks for the shared one."""
    home = tmp_path_factory.mktemp("jepa_home")
    monkeypatch.setenv("JEPA_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    # the user's own profiles (~/.config/jepa/profiles) would shadow the shipped ones
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.delenv("JEPA_PROFILES", raising=False)
    yield


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory) -> Path:
    """A JEPA_HOME shared by a session's tests that need prepared data (prepared once)."""
    return tmp_path_factory.mktemp("jepa_shared_home")


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (the cores are shared); restore the setting afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
