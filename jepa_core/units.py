"""Human-readable sizes and counts, the one formatter every report uses (decimal SI units, as `ls -h --si` and disk vendors)."""

from __future__ import annotations


def fmt_bytes(n: float | None) -> str:
    """1234 -> "1.2 kB"; 999 -> "999 B"; None -> "?"."""
    if n is None:
        return "?"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n):,} B"


def fmt_count(n: int) -> str:
    """A parameter or token count in short form: 1.2M, 3.4k."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
