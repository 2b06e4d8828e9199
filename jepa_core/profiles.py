"""Where named profiles live. Standard library only: shell completion uses it.

Search order (first match wins):
1. directories in `$JEPA_PROFILES` (os.pathsep separated),
2. `./profiles` in the current directory,
3. `$JEPA_HOME/profiles` (default `~/.cache/jepa/profiles`),
4. the `profiles/` folder shipped next to the package.
"""

from __future__ import annotations

import os
from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "profiles"


def _home() -> Path:
    return Path(os.environ.get("JEPA_HOME") or Path.home() / ".cache" / "jepa")


def jepa_home() -> Path:
    """$JEPA_HOME (default ~/.cache/jepa), where caches and tokenizers are written.

    A ConfigError when it cannot be a directory: a JEPA_HOME pointing at a file would
    otherwise surface as a NotADirectoryError from whichever cache writes first.
    """
    home = _home()
    p = home
    while not os.path.exists(p) and p != p.parent:  # os.path: no PermissionError from stat
        p = p.parent
    if os.path.exists(p) and not os.path.isdir(p):
        from jepa_core.errors import ConfigError

        what = f"JEPA_HOME={os.environ['JEPA_HOME']}" if os.environ.get("JEPA_HOME") else f"JEPA_HOME is unset, so the default {home}"
        inside = "" if p == home else f" ({p} is a file)"
        raise ConfigError(
            f"{what} is not a directory{inside}; jepa keeps its data caches and tokenizers there.",
            hint="Point JEPA_HOME at a directory (it is created when missing), e.g. export JEPA_HOME=~/.cache/jepa, or unset it.",
        )
    return home


def search_path() -> list[Path]:
    dirs: list[Path] = []
    env = os.environ.get("JEPA_PROFILES")
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    dirs.append(Path.cwd() / "profiles")
    # unchecked: a JEPA_HOME that is a file has no profiles, and completion must not fail over it
    dirs.append(_home() / "profiles")
    dirs.append(SHIPPED_DIR)
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        r = d.resolve() if d.exists() else d
        if r not in seen:
            seen.add(r)
            unique.append(d)
    return unique


def list_profiles() -> dict[str, Path]:
    """Profile name -> file, earlier search-path entries shadowing later ones."""
    found: dict[str, Path] = {}
    for d in search_path():
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.toml")):
            found.setdefault(f.stem, f)
    return dict(sorted(found.items()))


def find_profile(name_or_path: str) -> Path | None:
    """A profile by name, or a path to a TOML file; None when not found."""
    p = Path(name_or_path)
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        return p if p.is_file() else None
    return list_profiles().get(name_or_path)


def shipped_profiles() -> dict[str, Path]:
    return {f.stem: f for f in sorted(SHIPPED_DIR.glob("*.toml"))}


def profile_purpose(path: Path) -> str:
    """The profile's one-line purpose: its `description` key, else its first comment."""
    first_comment = ""
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            s = line.strip()
            if s.startswith("description") and "=" in s:
                return s.split("=", 1)[1].strip().strip('"').strip("'")
            if s.startswith("#") and not first_comment:
                first_comment = s.lstrip("#").strip()
    except OSError:
        return ""
    return first_comment
