"""Rendering for `jepa train` (filled in by the training issue)."""

from __future__ import annotations

from jepa_core.errors import NotBuiltYet


def run_train(profile, overrides, resume, run_dir, tui) -> None:
    from jepa_core.config import load_config

    load_config(profile, overrides)  # validate first: a bad profile is the more useful error
    raise NotBuiltYet("`jepa train` is not built yet (issue #5).")
