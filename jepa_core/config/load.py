"""Loading a profile: `extends` bases merged, `--set` overrides applied, strict validation with
errors that name the file, the dotted key and the fix; TOML in and out; config differences."""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from jepa_core.errors import ConfigError
from jepa_core.profiles import find_profile, list_profiles

from .schema import _BOUND_WHY, SECTION_MODELS, SECTIONS, TOP_LEVEL_KEYS, Config, _CrossError, all_keys, field_of, upper_bound

# --------------------------------------------------------------------------- helpers


def _suggest(key: str) -> str:
    candidates = all_keys() + list(SECTIONS) if "." in key else list(TOP_LEVEL_KEYS) + list(SECTIONS)
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" Did you mean `{match[0]}`?" if match else ""


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


def _check_keys(raw: dict[str, Any], source: str | None) -> None:
    for key, value in raw.items():
        if key in SECTION_MODELS:
            if not isinstance(value, dict):
                raise ConfigError(f"`{key}`{_where(source)} must be a table ([{key}]), got {type(value).__name__}.")
            fields = SECTION_MODELS[key].model_fields
            for sub in value:
                if sub not in fields:
                    raise ConfigError(
                        f"Unknown key `{key}.{sub}`{_where(source)}.{_suggest(f'{key}.{sub}')}",
                        hint="`jepa profiles show NAME` lists every key with its current value.",
                    )
        elif key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"Unknown key `{key}`{_where(source)}.{_suggest(key)}",
                hint=f"A profile has the tables {', '.join(SECTIONS)} and the top-level keys description and extends.",
            )


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Profile file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Cannot read profile file {path}: {e}.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}.") from None


def _resolve_profile_path(name: str, referrer: str | None = None) -> Path:
    path = find_profile(name, after=Path(referrer) if referrer else None)
    if path is None:
        known = list(list_profiles())
        match = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        near = f" Did you mean `{match[0]}`?" if match else ""
        if referrer and Path(referrer).stem == name:
            near = f" {referrer} extends its own name, and no profile of that name comes after it on the search path."
        ctx = f" (extended by {referrer})" if referrer else ""
        raise ConfigError(
            f"No profile named `{name}`{ctx}.{near}",
            hint=f"Known profiles: {', '.join(known) or 'none'}. Run `jepa profiles list`, or pass a path to a .toml file.",
        )
    return path


def load_raw(name_or_path: str, _chain: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    """The merged raw dict of a profile and its `extends` chain (unvalidated)."""
    path = _resolve_profile_path(name_or_path, referrer=_chain[-1] if _chain else None)
    key = str(path.resolve())
    if key in _chain:
        names = [Path(p).stem for p in _chain] + [path.stem]
        raise ConfigError(f"`extends` cycle: {' -> '.join(names)}.", hint="Remove one of the `extends` keys.")
    raw = _read_toml(path)
    _check_keys(raw, str(path))
    base_name = raw.pop("extends", None)
    if base_name is not None:
        if not isinstance(base_name, str):
            raise ConfigError(f"`extends` in {path} must be a profile name string, got {base_name!r}.")
        if base_name.endswith(".toml") or "/" in base_name:
            # a path in `extends` is relative to the file that names it
            base_name = str((path.parent / base_name).resolve())
        base, _ = load_raw(base_name, _chain + (key,))
        base.pop("name", None)
        base.pop("description", None)
        raw = deep_merge(base, raw)
    return raw, path


def parse_override(item: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value), the value read as TOML."""
    if "=" not in item:
        raise ConfigError(
            f"Override `{item}` is not of the form section.key=value.",
            hint="Example: --set optim.lr=3e-4 --set jepa.horizons=[2,8]",
        )
    if "\n" in item or "\r" in item:
        # TOML would read the first line and silently drop (or take as other keys) what follows
        raise ConfigError(
            f"--set {item!r} holds a line break: a --set is one line, and what follows the break would be dropped.",
            hint="Give each key its own --set (--set optim.lr=3e-4 --set train.max_steps=2000); a value that needs "
            "a line break belongs in a profile .toml file (--profile PATH).",
        )
    key, _, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in SECTION_MODELS:
        if len(parts) == 1 and parts[0] in ("description", "name"):
            return parts, text
        raise ConfigError(
            f"Override key `{key}` must be section.key with section one of {', '.join(SECTIONS)}.{_suggest(key)}"
        )
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word is a string
    return parts, value


class _Overridden(dict):
    """A raw config dict that remembers which dotted keys `--set` gave it (and the --set text),
    so that `validate` can name `--set KEY=VALUE` as the source of a bad value, not the profile."""

    set_by: dict[str, str]


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    out = _Overridden(raw)
    out.set_by = dict(getattr(raw, "set_by", {}))
    for item in overrides:
        parts, value = parse_override(item)
        if len(parts) == 1:
            out[parts[0]] = value
            out.set_by[parts[0]] = item.strip()
            continue
        sec, key = parts
        if key not in SECTION_MODELS[sec].model_fields:
            raise ConfigError(
                f"Unknown key `{sec}.{key}` in --set {item}.{_suggest(f'{sec}.{key}')}",
                hint=f"`jepa profiles show NAME` lists every key of the [{sec}] section with its value.",
            )
        out[sec] = {**out.get(sec, {}), key: value}
        out.set_by[f"{sec}.{key}"] = item.strip()
    return out


def _set_source(set_by: dict[str, str], key: str) -> str:
    """How an error names a --set: `--set 'jepa.horizons=2,8'`, quoted as the shell needs it."""
    import shlex

    return f"--set {shlex.quote(set_by[key])}"


def toml_value(v: Any) -> str:
    """A value as it is typed after --set KEY= (compact TOML)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v) if isinstance(v, float) else str(v)


def _range_hint(dotted: str, err_type: str) -> str | None:
    """For a value over a key's `le=`: the largest one it takes (the syntax was right, so no syntax example)."""
    bound = upper_bound(dotted)
    if err_type != "less_than_equal" or bound is None:
        return None
    shown = f"{int(bound):,}" if float(bound).is_integer() else str(bound)
    why = _BOUND_WHY.get(bound)
    return f"`{dotted}` takes at most {shown}" + (f" ({why})." if why else ".")


def _syntax_hint(dotted: str, got: Any) -> str | None:
    """What a value of this key looks like after --set, with an example (the fix for a --set typo)."""
    import re
    import shlex
    import typing

    f = field_of(dotted)
    if f is None:
        return None
    ann, default = f.annotation, f.default
    origin = typing.get_origin(ann)

    def example(v: Any) -> str:
        # a plain word needs no TOML quotes after --set (it is read as a string)
        bare = isinstance(v, str) and re.fullmatch(r"[A-Za-z_][\w:/.\-]*", v) and v not in ("true", "false", "inf", "nan")
        return f"--set {shlex.quote(f'{dotted}={v if bare else toml_value(v)}')}"

    if origin is list:
        if isinstance(got, str) and not got.lstrip().startswith("["):
            try:
                as_list = tomllib.loads(f"v = [{got}]")["v"]
            except tomllib.TOMLDecodeError:
                as_list = None
            if as_list:
                return f"A list is written in TOML brackets: {example(as_list)}."
        return f"A list is written in TOML brackets, e.g. {example(default)}."
    if origin is Literal:
        args = typing.get_args(ann)
        choices = " | ".join(str(c) for c in args)
        other = next((c for c in args if c != default), default)
        return f"One of {choices}, e.g. {example(other)}."
    if ann is bool:
        return f"true or false (lowercase TOML), e.g. {example(not default)}."
    if ann is int:
        bound = upper_bound(dotted)
        if isinstance(got, float) and got.is_integer() and (bound is None or got <= bound):
            return f"A whole number, without a decimal point or exponent: {example(int(got))}."
        if isinstance(got, float) and bound is not None and got > bound:
            return f"A whole number up to {bound:,}, e.g. {example(default)}."
        return f"A whole number, e.g. {example(default)}."
    if ann is float:
        if isinstance(got, str) and got.strip().startswith((".", "-.", "+.")) or (isinstance(got, str) and got.strip().endswith(".")):
            return f"TOML numbers need a digit on both sides of the point (0.5, 1.0), e.g. {example(default)}."
        return f"A number, e.g. {example(default)} (TOML: 3e-4, 0.001, 1)."
    if ann is str:
        if not isinstance(got, str):
            return f"A string; a value that reads as a number, list or boolean needs TOML quotes: --set {shlex.quote(f'{dotted}={toml_value(str(got))}')}."
        return f'A string, e.g. {example(default or "TEXT")}; quote it for the shell when it has spaces.'
    return None


#: Lists that pair up one to one: (key, sibling, what pairs with what).
_LIST_SIBLINGS = (("jepa.horizons", "jepa.horizon_probs", "one probability per horizon"),)


def _raw_value(raw: dict[str, Any], dotted: str) -> Any:
    sec, _, key = dotted.partition(".")
    section = raw.get(sec)
    if isinstance(section, dict) and key in section:
        return section[key]
    f = field_of(dotted)
    return f.default if f is not None else None


def _sibling_length_error(raw: dict[str, Any], set_by: dict[str, str], source: str | None) -> ConfigError | None:
    """Two paired lists of different lengths: name both, say where each came from, and give a --set for the fix."""
    import shlex

    for a, b, what in _LIST_SIBLINGS:
        va, vb = _raw_value(raw, a), _raw_value(raw, b)
        if not (isinstance(va, list) and isinstance(vb, list)) or len(va) == len(vb):
            continue

        def origin(k: str) -> str:
            return _set_source(set_by, k) if k in set_by else (f"from {source}" if source else "the default")

        msg = f"`{a}` has {len(va)} entries ({origin(a)}) but `{b}` has {len(vb)} ({origin(b)}): {what}."
        if a in set_by and b not in set_by:
            n = len(va)
            probs = [round(1 / n, 4)] * n
            probs[0] = round(1 - sum(probs[1:]), 4)
            fix = f"Set `{b}` with it: --set {shlex.quote(set_by[a])} --set {shlex.quote(f'{b}={toml_value(probs)}')} (any {n} values that sum to 1)."
        elif b in set_by and a not in set_by:
            fix = f"Set `{a}` with it ({len(vb)} entries): e.g. --set {shlex.quote(f'{a}={toml_value(va[: len(vb)] or [2])}')} --set {shlex.quote(set_by[b])}."
        else:
            fix = f"Give `{a}` and `{b}` the same number of entries."
        return ConfigError(msg, hint=fix)
    return None


def validate(raw: dict[str, Any], source: str | None = None) -> Config:
    """Validate a raw dict into a `Config`, turning pydantic errors into one clear message."""
    set_by: dict[str, str] = getattr(raw, "set_by", {})
    _check_keys(raw, source)
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        ctx = err.get("ctx") or {}
        inner = ctx.get("error")
        if isinstance(inner, _CrossError):
            sibling = _sibling_length_error(raw, set_by, source)
            if sibling is not None:
                raise sibling from None
            # a rule between keys: name the --set that gave this key, else the file and any --set it involves
            if inner.key in set_by:
                where = f" in {_set_source(set_by, inner.key)}"
            else:
                involved = [k for k in set_by if k in inner.msg or k.split(".")[-1] in inner.msg.split()]
                where = _where(source) + (f" with {' '.join(_set_source(set_by, k) for k in involved)}" if involved else "")
            raise ConfigError(f"Invalid `{inner.key}`{where}: {inner.msg}.", hint=_field_doc(tuple(inner.key.split(".")))) from None
        got = err.get("input")
        got_s = f" (got {got!r})" if not isinstance(got, dict) else ""
        dotted = ".".join(str(p) for p in err["loc"][:2])
        if dotted in set_by or (len(err["loc"]) == 1 and loc in set_by):
            key = dotted if dotted in set_by else loc
            hint = _range_hint(key, err["type"]) or _syntax_hint(key, set_by[key].partition("=")[2].strip() if isinstance(got, str) else got)
            doc = _field_doc(err["loc"])
            raise ConfigError(
                f"Invalid value for `{key}` in {_set_source(set_by, key)}: {err['msg']}{got_s}.",
                hint=" ".join(h for h in (hint, doc) if h) or None,
            ) from None
        raise ConfigError(
            f"Invalid `{loc}`{_where(source)}: {err['msg']}{got_s}.",
            hint=" ".join(h for h in (_range_hint(dotted, err["type"]), _field_doc(err["loc"])) if h) or None,
        ) from None


def _field_doc(loc: tuple) -> str | None:
    if len(loc) >= 2 and loc[0] in SECTION_MODELS:
        f = SECTION_MODELS[loc[0]].model_fields.get(str(loc[1]))
        if f is not None and f.description:
            return f"`{loc[0]}.{loc[1]}`: {f.description}"
    return None


def load_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a profile by name or path, merge `extends`, apply overrides, validate."""
    raw, path = load_raw(name_or_path)
    raw.setdefault("name", path.stem)
    raw = apply_overrides(raw, overrides)
    return validate(raw, source=str(path))


def config_to_toml(cfg: Config) -> str:
    import tomli_w

    return tomli_w.dumps(cfg.to_dict())


def config_from_toml(text: str, source: str = "<config>") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source} is not valid TOML: {e}.") from None
    raw.pop("extends", None)
    return validate(raw, source=source)


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config atomically; `load_config(path)` returns an equal Config."""
    from jepa_core.fsutil import atomic_write_text

    atomic_write_text(Path(path), config_to_toml(cfg))


def diff_configs(a: Config, b: Config) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (a value, b value) for every key that differs."""
    out: dict[str, tuple[Any, Any]] = {}
    da, db = a.to_dict(), b.to_dict()
    for k in TOP_LEVEL_KEYS:
        if k in da and da.get(k) != db.get(k):
            out[k] = (da.get(k), db.get(k))
    for sec in SECTIONS:
        for key in da[sec]:
            if da[sec][key] != db[sec][key]:
                out[f"{sec}.{key}"] = (da[sec][key], db[sec][key])
    return out


def non_default_keys(cfg: Config) -> set[str]:
    """Dotted keys whose value differs from the schema default."""
    return {k for k in diff_configs(cfg, Config(name=cfg.name, description=cfg.description))}
