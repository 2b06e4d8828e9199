"""Rendering for `jepa bench` (filled in by issue #8)."""

from __future__ import annotations

from jepa_core.errors import NotBuiltYet


def run_bench(profile, steps, overrides, json_out) -> None:
    raise NotBuiltYet("`jepa bench` is not built yet (issue #8).")
