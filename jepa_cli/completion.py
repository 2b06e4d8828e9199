"""Shell completion helpers: standard library only, so completion stays instant."""

from __future__ import annotations


def complete_profile(incomplete: str) -> list[str]:
    from jepa_core.profiles import list_profiles

    return [name for name in list_profiles() if name.startswith(incomplete)]


def complete_dataset(incomplete: str) -> list[str]:
    names = ["tiny_shakespeare", "wikitext2", "text:"]
    return [n for n in names if n.startswith(incomplete)]
