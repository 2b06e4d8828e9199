"""Where named profiles live. Standard library only: shell completion uses it.

Search order (first match wins):
1. directories in `$JEPA_PROFILES` (os.pathsep separated),
2. `./profiles` in the current directory (a project's own),
3. the user's folder, `$XDG_CONFIG_HOME/jepa/profiles` (default `~/.config/jepa/profiles`),
   where `jepa profiles new` writes,
4. `$JEPA_HOME/profiles` (default `~/.cache/jepa/profiles`), the folder searched before
   the user's folder existed, still read so that profiles kept there keep working,
5. the shipped profiles: the repository's top-level `profiles/` folder, their one home,
   which the wheel carries as package data (`jepa_core/profiles_data`, a build mapping in
   pyproject.toml), so that an installed jepa has them wherever it runs.

A path to a `.toml` file (`--profile my.toml`) bypasses the search.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import ConfigError

#: Where an installed wheel holds the shipped profiles (pyproject.toml maps profiles/ there).
SHIPPED_PACKAGE, SHIPPED_FOLDER = "jepa_core", "profiles_data"
#: Their home in a source checkout (and so in an editable install): beside the package.
SOURCE_FOLDER = "profiles"

# A name becomes a file name and a `--profile` argument: no separators, no `.toml`,
# nothing a shell or `extends` would read as a path.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Source:
    """One folder on the search path and how `jepa profiles list` names it."""

    kind: str  # "JEPA_PROFILES", "./profiles", "user", "JEPA_HOME" or "shipped"
    dir: Path


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    path: Path
    source: str  # the Source.kind it came from
    shadows: tuple[str, ...] = field(default=())  # kinds of the later sources with a profile of this name


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
        what = f"JEPA_HOME={os.environ['JEPA_HOME']}" if os.environ.get("JEPA_HOME") else f"JEPA_HOME is unset, so the default {home}"
        inside = "" if p == home else f" ({p} is a file)"
        raise ConfigError(
            f"{what} is not a directory{inside}; jepa keeps its data caches and tokenizers there.",
            hint="Point JEPA_HOME at a directory (it is created when missing), e.g. export JEPA_HOME=~/.cache/jepa, or unset it.",
        )
    return home


def user_dir() -> Path:
    """`$XDG_CONFIG_HOME/jepa/profiles`, else `~/.config/jepa/profiles`."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    # the XDG spec says a relative value is invalid and is to be ignored
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "jepa" / "profiles"


@lru_cache(maxsize=1)
def shipped_dir() -> Path:
    """The shipped profiles' folder, wherever the package is installed."""
    root = resources.files(SHIPPED_PACKAGE) / SHIPPED_FOLDER
    if isinstance(root, Path):
        if root.is_dir():  # a wheel install
            return root
        # a source checkout or an editable install: the package has no copy, the repository has
        return root.parent.parent / SOURCE_FOLDER
    # a zipped install has no folder on disk; everything downstream reads Paths, and
    # `as_file` takes a directory only from Python 3.12, so copy the few files out once
    out = Path(tempfile.mkdtemp(prefix="jepa-profiles-"))
    for item in root.iterdir():
        if item.name.endswith(".toml"):
            (out / item.name).write_bytes(item.read_bytes())
    return out


def sources() -> list[Source]:
    """The search path, first match first; a folder listed twice counts once."""
    found: list[Source] = []
    env = os.environ.get("JEPA_PROFILES")
    if env:
        found.extend(Source("JEPA_PROFILES", Path(p)) for p in env.split(os.pathsep) if p)
    found.append(Source("./profiles", Path.cwd() / "profiles"))
    found.append(Source("user", user_dir()))
    # unchecked: a JEPA_HOME that is a file has no profiles, and completion must not fail over it
    found.append(Source("JEPA_HOME", _home() / "profiles"))
    found.append(Source("shipped", shipped_dir()))
    seen: set[Path] = set()
    unique = []
    # in a checkout's root, ./profiles is the shipped folder itself: list it under that name
    shipped = found[-1].dir.resolve() if found[-1].dir.exists() else found[-1].dir
    found = [s for s in found if s.kind == "shipped" or (s.dir.resolve() if s.dir.exists() else s.dir) != shipped]
    for s in found:
        r = s.dir.resolve() if s.dir.exists() else s.dir
        if r not in seen:
            seen.add(r)
            unique.append(s)
    return unique


def search_path() -> list[Path]:
    return [s.dir for s in sources()]


def _candidates(name: str) -> list[tuple[Source, Path]]:
    """Every file named `name.toml` on the search path, first match first."""
    return [(s, s.dir / f"{name}.toml") for s in sources() if (s.dir / f"{name}.toml").is_file()]


def profile_entries() -> list[ProfileEntry]:
    """Every profile name with the file that wins, where it comes from, and what it shadows."""
    by_name: dict[str, list[tuple[Source, Path]]] = {}
    for s in sources():
        if not s.dir.is_dir():
            continue
        for f in sorted(s.dir.glob("*.toml")):
            by_name.setdefault(f.stem, []).append((s, f))
    return [
        ProfileEntry(name, hits[0][1], hits[0][0].kind, tuple(s.kind for s, _ in hits[1:]))
        for name, hits in sorted(by_name.items())
    ]


def list_profiles() -> dict[str, Path]:
    """Profile name -> file, earlier search-path entries shadowing later ones."""
    return {e.name: e.path for e in profile_entries()}


def is_path(name_or_path: str) -> bool:
    return name_or_path.endswith(".toml") or os.sep in name_or_path or "/" in name_or_path


def find_profile(name_or_path: str, after: Path | None = None) -> Path | None:
    """A profile by name, or a path to a TOML file; None when not found.

    `after`: the file that asks (through `extends`). A profile that extends its own
    name means the next one of that name down the search path, so a user's `tiny.toml`
    can say `extends = "tiny"` and change a few keys of the shipped one.
    """
    p = Path(name_or_path)
    if is_path(name_or_path):
        return p if p.is_file() else None
    hits = [path for _, path in _candidates(name_or_path)]
    if after is not None:
        resolved = [h.resolve() for h in hits]
        me = after.resolve()
        if me in resolved:
            hits = hits[resolved.index(me) + 1 :]
    return hits[0] if hits else None


def source_of(path: Path) -> str | None:
    """The search-path kind a profile file lives in (None for a file elsewhere)."""
    parent = path.resolve().parent
    for s in sources():
        if s.dir.exists() and s.dir.resolve() == parent:
            return s.kind
    return None


def shipped_profiles() -> dict[str, Path]:
    return {f.stem: f for f in sorted(shipped_dir().glob("*.toml"))}


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


def new_profile(name: str, source: str) -> tuple[Path, Path]:
    """Copy profile `source` (a name or a .toml path) to the user's folder as `name`.

    Returns (the new file, the file it was copied from). Never overwrites: a profile
    the user has edited is worth more than the copy.
    """
    if not _NAME.match(name) or name.endswith(".toml"):
        raise ConfigError(
            f"`{name}` is not a profile name: use letters, digits, `-`, `_` and `.`, without `.toml` or a folder.",
            hint="Example: `jepa profiles new my-tiny --from tiny` writes my-tiny.toml into " + str(user_dir()) + ".",
        )
    src = find_profile(source)
    if src is None:
        import difflib

        known = list(list_profiles())
        match = difflib.get_close_matches(source, known, n=1, cutoff=0.5)
        near = f" Did you mean `{match[0]}`?" if match else ""
        raise ConfigError(
            f"No profile named `{source}` to copy.{near}",
            hint=f"Known profiles: {', '.join(known) or 'none'}. `--from` also takes a path to a .toml file.",
        )
    dest = user_dir() / f"{name}.toml"
    if dest.exists():
        raise ConfigError(
            f"{dest} already exists; not overwritten.",
            hint=f"Edit it, choose another name, or delete it first to start again from `{source}`.",
        )
    try:
        text = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Cannot read profile file {src}: {e}.") from None
    header = (
        f"# {name}: a copy of `{source}` ({src}), made by `jepa profiles new`.\n"
        f"# Edit freely; `jepa profiles show {name}` prints every key with its value.\n"
    )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # "x": a file that appeared since the check above is still not overwritten
        with open(dest, "x", encoding="utf-8") as f:
            f.write(header + text)
    except FileExistsError:
        raise ConfigError(f"{dest} already exists; not overwritten.") from None
    except OSError as e:
        raise ConfigError(
            f"Cannot write {dest}: {e.strerror or e}.",
            hint="Set XDG_CONFIG_HOME to a writable folder, or copy the file by hand: `jepa profiles show NAME --plain > my.toml`.",
        ) from None
    return dest, src
