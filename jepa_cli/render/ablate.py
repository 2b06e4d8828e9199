"""Rendering for `jepa ablate` (filled in by issue #7)."""

from __future__ import annotations

from jepa_core.errors import NotBuiltYet


def run_ablate(profile, seeds, arms, overrides, out, resume) -> None:
    raise NotBuiltYet("`jepa ablate` is not built yet (issue #7).")
