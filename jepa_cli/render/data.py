"""Rendering for `jepa data` (filled in by the data issue)."""

from __future__ import annotations

from jepa_core.errors import NotBuiltYet


def run_prepare(dataset, **kwargs) -> None:
    raise NotBuiltYet("`jepa data prepare` is not built yet (issue #4).")


def run_list() -> None:
    raise NotBuiltYet("`jepa data list` is not built yet (issue #4).")
