"""Rendering for `jepa inspect` (filled in by issue #7)."""

from __future__ import annotations

from jepa_core.errors import NotBuiltYet


def run_inspect(path, json_out, show_config, stats) -> None:
    raise NotBuiltYet("`jepa inspect` is not built yet (issue #7).")
