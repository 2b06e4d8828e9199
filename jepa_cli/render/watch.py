"""`jepa watch` launcher (filled in by the dashboard issue)."""

from __future__ import annotations

from jepa_core.errors import NotBuiltYet


def run_watch(run_dirs) -> None:
    raise NotBuiltYet("`jepa watch` is not built yet (issue #6).")
