"""Rendering for `jepa preflight` (filled in by issue #7)."""

from __future__ import annotations

from jepa_core.errors import NotBuiltYet


def run_preflight(profile, overrides, json_out) -> None:
    raise NotBuiltYet("`jepa preflight` is not built yet (issue #7).")
