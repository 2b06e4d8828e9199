"""Which code trained a run: the package version and, in a git checkout, the commit.

Read once per process and never fatal: a run must start without git installed,
outside a checkout, or with a repository git cannot read.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from . import __version__

_GIT_TIMEOUT_S = 2.0


def git_commit(where: Path) -> str | None:
    """HEAD's commit of the checkout containing `where`, or None (no git, no checkout, too slow)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) in (40, 64) else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str | None]:
    """{"version": the package version, "commit": git HEAD of the package's checkout or None}."""
    return {"version": __version__, "commit": git_commit(Path(__file__).resolve().parent)}


def code_label(code: dict | None) -> str:
    """`0.1.0 @ 1a2b3c4d5e6f` (or the version alone, or "unknown" for runs that predate the record)."""
    if not isinstance(code, dict) or not code.get("version"):
        return "unknown"
    commit = code.get("commit")
    return f"{code['version']} @ {str(commit)[:12]}" if commit else str(code["version"])
