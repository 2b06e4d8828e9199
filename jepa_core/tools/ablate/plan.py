"""The plan of an ablation: arms from --arm and --grid, the comparability checks, and the
ablation folder's manifest (written, extended, loaded)."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jepa_core.config import SAME_ACROSS_ARMS_KEYS, Config, apply_overrides, config_to_toml, load_config, parse_override, validate
from jepa_core.errors import CheckpointError, ConfigError
from jepa_core.fsutil import atomic_write_text
from jepa_core.rundir import BATCH_LOG, utc_now_iso, utc_stamp

FORMAT = "jepa-ablation/1"
REPORT_FORMAT = "jepa-ablation-report/2"
MANIFEST = "manifest.json"
#: in --init-from, the seed index: seed i of every arm starts from its own source
SEED_SLOT = "{i}"
BASE_CONFIG = "base_config.toml"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"


#: Settings every arm must share (for the same seed index): the config fields marked SAME_ACROSS_ARMS.
SAME_KEYS = SAME_ACROSS_ARMS_KEYS

#: Resolved settings an arm may set as its treatment (`--arm b:train.precision="bf16"`): where arms
#: differ in one, the plan records it per arm ({arm: value}) instead of refusing. Precision is the
#: one such setting: a study of bf16 against fp32 training compares exactly that.
PER_ARM_SETTINGS = ("precision",)

#: Grid and arm names longer than this are cut and given a hash suffix (run dirs add "-s<i>").
MAX_ARM_NAME = 60

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
# split "a.b=1,c.d=[2,8]" at the commas that start a new section.key= (not inside values)
_OVERRIDE_SPLIT = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\s*=)")


# --------------------------------------------------------------------------- arms and plan


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...] = ()
    origin: str = "arm"  # "arm" (--arm), "grid" (--grid) or "baseline" (added with a grid)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "overrides": list(self.overrides), "origin": self.origin}


BASELINE = "baseline"
BASELINE_ARM = Arm(BASELINE, ("jepa.run_baseline=true",), "baseline")
DEFAULT_ARMS = (Arm(BASELINE, ("jepa.run_baseline=true",)), Arm("jepa", ()))


def parse_arm(spec: str) -> Arm:
    """`NAME:section.key=value,section.key=value` (or just `NAME`: the profile as is)."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not _ARM_NAME.match(name) or len(name) > MAX_ARM_NAME:
        raise ConfigError(
            f"Arm `{spec}` needs a name of at most {MAX_ARM_NAME} letters, digits, `_`, `.`, `+` or `-` before the colon.",
            hint="Example: --arm barrier:model.grad_barrier=true,jepa.tau=0.2",
        )
    overrides = tuple(s.strip() for s in _OVERRIDE_SPLIT.split(rest) if s.strip()) if rest.strip() else ()
    for item in overrides:
        parse_override(item)  # the form section.key=value, checked now
    return Arm(name, overrides)


def split_values(text: str) -> list[str]:
    """Split `V1,V2,...` at the commas outside brackets, braces and quotes (`[2,8],[4,16]` is two values)."""
    out, cur, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch in "[{":
            depth += 1
            cur.append(ch)
        elif ch in "]}":
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return out


@dataclass(frozen=True)
class Grid:
    key: str  # section.key
    texts: tuple[str, ...]  # the values as typed (TOML)
    values: tuple[Any, ...]  # the values as parsed

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "values": list(self.texts)}


def parse_grid(spec: str) -> Grid:
    """`section.key=V1,V2,...`, every value read as TOML the way --set reads it."""
    key, eq, rest = spec.partition("=")
    key = key.strip()
    texts = split_values(rest) if eq else []
    if not eq or not rest.strip() or any(not t for t in texts):
        raise ConfigError(
            f"Grid `{spec}` is not of the form section.key=V1,V2,... with a value between every two commas.",
            hint='Example: --grid jepa.jepa_weight=0.1,0.2,0.5 --grid jepa.teacher=projector,encoder (lists: --grid jepa.horizons=[2,8],[4,16])',
        )
    values = []
    for t in texts:
        parts, value = parse_override(f"{key}={t}")
        if len(parts) != 2:
            raise ConfigError(f"Grid `{spec}`: `{key}` is not a section.key setting.", hint="Example: --grid jepa.jepa_weight=0.1,0.5")
        values.append(value)
    if key == "train.seed":
        raise ConfigError("A grid over train.seed is what --seeds does.", hint="Use --seeds N (and --set train.seed=BASE for the first seed).")
    canon = [json.dumps(v, sort_keys=True) for v in values]
    dup = next((t for t, c in zip(texts, canon) if canon.count(c) > 1), None)
    if dup is not None:
        raise ConfigError(f"Grid `{spec}` lists the value {dup} twice.", hint="List every value once.")
    return Grid(key, tuple(texts), tuple(values))


def value_slug(v: Any) -> str:
    """A value as a short, filesystem-safe piece of a name: 0.05 -> 0.05, "encoder" -> encoder, [2, 8] -> 2-8."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v).replace("+", "")  # shortest round-trip form: 0.05, 1e-05, 1e20
    if isinstance(v, list):
        return "-".join(value_slug(x) for x in v) or "empty"
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "empty"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _fit_name(name: str, canonical: str) -> str:
    if len(name) <= MAX_ARM_NAME:
        return name
    return name[: MAX_ARM_NAME - 9].rstrip("-+.") + "-" + _short_hash(canonical)


def grid_arms(grids: list[Grid] | tuple[Grid, ...]) -> list[Arm]:
    """The cross product of the grids, first grid slowest, each arm named `key-value+key-value`.

    A key is named by its last part (`jepa.jepa_weight` -> `jepa_weight`) unless two grids share
    that part. Names are a function of the grid alone, so the same grid always names its arms
    the same way; two values whose names would coincide get a hash of their settings appended.
    """
    keys = [g.key for g in grids]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ConfigError(f"Two --grid options set `{dup}`.", hint=f"Give all its values in one: --grid {dup}=V1,V2,...")
    leaves = [k.split(".")[-1] for k in keys]
    labels = [leaf if leaves.count(leaf) == 1 else key for leaf, key in zip(leaves, keys)]
    arms: list[Arm] = []
    for combo in itertools.product(*[range(len(g.texts)) for g in grids]):
        overrides = tuple(f"{g.key}={g.texts[i]}" for g, i in zip(grids, combo))
        canonical = json.dumps([[g.key, g.values[i]] for g, i in zip(grids, combo)], sort_keys=True)
        name = "+".join(f"{lab}-{value_slug(g.values[i])}" for lab, g, i in zip(labels, grids, combo))
        arms.append(Arm(_fit_name(name, canonical), overrides, "grid"))
    names = [a.name for a in arms]
    return [
        a if names.count(a.name) == 1 else Arm(a.name[: MAX_ARM_NAME - 9] + "-" + _short_hash(json.dumps(a.overrides)), a.overrides, "grid")
        for a in arms
    ]


@dataclass(frozen=True)
class RunSpec:
    arm: str
    seed_index: int
    train_seed: int

    @property
    def name(self) -> str:
        return f"{self.arm}-s{self.seed_index}"


@dataclass
class AblationPlan:
    dir: Path
    profile: str
    overrides: list[str]
    arms: list[Arm]
    seeds: list[int]  # train.seed of seed index i
    reference: str  # the arm the others are compared with
    base_toml: str  # resolved profile + global overrides
    settings: dict[str, Any] = field(default_factory=dict)  # the shared settings, checked
    grids: list[dict[str, Any]] = field(default_factory=list)  # the --grid options, as typed
    commands: list[str] = field(default_factory=list)  # the command lines that made and extended the ablation
    created: str = field(default_factory=utc_now_iso)
    state: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> status record

    def runs(self) -> list[RunSpec]:
        # seed-major: after the first len(arms) runs there is already one comparable set
        return [RunSpec(a.name, i, s) for i, s in enumerate(self.seeds) for a in self.arms]

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def against(self, reference: str | None) -> "AblationPlan":
        """The plan with every arm compared with `reference` (`jepa ablate --reference`); None keeps its own."""
        if reference is None or reference == self.reference:
            return self
        names = [a.name for a in self.arms]
        if reference not in names:
            raise ConfigError(f"--reference {reference}: the ablation {self.dir.name} has no arm of that name.", hint=f"Its arms: {', '.join(names)}.")
        return replace(self, reference=reference)

    def run_dir(self, spec: RunSpec) -> Path:
        return self.dir / spec.name

    @property
    def budget_s(self) -> float:
        """train.time_budget_s shared by every arm; 0 compares at equal steps."""
        return float(self.settings.get("train.time_budget_s") or 0.0)

    def overrides_for(self, spec: RunSpec) -> list[str]:
        """The `--set` values a run's config differs from its profile by: the ablation's own, the
        arm's and the seed (recorded in run_start, so `jepa runs` shows them)."""
        return [*self.overrides, *self.arm(spec.arm).overrides, f"train.seed={spec.train_seed}"]

    def config_for(self, arm: str, seed_index: int, extra: list[str] | tuple[str, ...] = ()) -> Config:
        raw = tomllib.loads(self.base_toml)
        over = [*self.arm(arm).overrides, f"train.seed={self.seeds[seed_index]}", *extra]
        try:
            raw = apply_overrides(copy.deepcopy(raw), over)
        except ConfigError as e:
            raise ConfigError(f"Arm `{arm}`: {e.message}", hint=e.hint) from None
        train = raw.get("train", {})
        if SEED_SLOT in train.get("init_from", ""):
            # one source per seed (`--init-from 'bases/baseline-s{i}'`): every arm of seed i starts from base i
            train["init_from"] = train["init_from"].replace(SEED_SLOT, str(seed_index))
        return validate(raw, source=f"arm `{arm}`")

    def init_source(self, arm: str, seed_index: int) -> str:
        """The weights a run starts from (train.init_from, `{i}` filled in); "" for random ones.
        Arms of one seed that differ here start from other weights, and may read the data with
        another tokenizer, by design."""
        return self.config_for(arm, seed_index).train.init_from

    def manifest(self) -> dict[str, Any]:
        runs = []
        for spec in self.runs():
            rec = {"name": spec.name, "arm": spec.arm, "seed_index": spec.seed_index, "train_seed": spec.train_seed, "dir": spec.name}
            rec.update(self.state.get(spec.name, {"status": "pending"}))
            runs.append(rec)
        return {
            "format": FORMAT,
            "profile": self.profile,
            "overrides": self.overrides,
            "arms": [a.to_dict() for a in self.arms],
            "grids": self.grids,
            "reference": self.reference,
            "seeds": [{"index": i, "train_seed": s} for i, s in enumerate(self.seeds)],
            "settings": self.settings,
            "commands": self.commands,
            "runs": runs,
            "created": self.created,
            "updated": utc_now_iso(),
        }

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / BASE_CONFIG).is_file():
            atomic_write_text(self.dir / BASE_CONFIG, self.base_toml)
        atomic_write_text(self.dir / MANIFEST, json.dumps(self.manifest(), indent=2) + "\n")


def _get(cfg: Config, dotted: str) -> Any:
    sec, key = dotted.split(".")
    return getattr(getattr(cfg, sec), key)


def shared_settings(cfg: Config) -> dict[str, Any]:
    """The settings that must match across arms, with device and precision resolved."""
    from jepa_core.train.device import resolve_runtime

    out = {k: _get(cfg, k) for k in SAME_KEYS if hasattr(getattr(cfg, k.split(".")[0]), k.split(".")[1])}
    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    out["device"] = str(rt.device)
    out["precision"] = rt.precision
    return out


def check_arms_comparable(configs: dict[str, Config]) -> dict[str, Any]:
    """The shared settings, or a ConfigError naming every setting on which arms differ.

    A setting of PER_ARM_SETTINGS on which arms differ is returned as {arm: value}."""
    per_arm = {name: shared_settings(cfg) for name, cfg in configs.items()}
    names = list(per_arm)
    ref = dict(per_arm[names[0]])
    diffs = []
    for key in ref:
        values = {n: per_arm[n][key] for n in names}
        if len({json.dumps(v) for v in values.values()}) > 1:
            if key in PER_ARM_SETTINGS:
                ref[key] = values
                continue
            diffs.append(f"{key} ({', '.join(f'{n}: {v!r}' for n, v in values.items())})")
    if diffs:
        raise ConfigError(
            "The arms would not be compared fairly: they differ in " + "; ".join(diffs) + ".",
            hint="Every arm must see the same data order, steps, time budget, evaluation, device and compile setting. "
            "Set these with the global --set, not in an --arm or a --grid (precision may differ: it can be the treatment).",
        )
    return ref


def setting_for(settings: dict[str, Any], key: str, arm: str) -> Any:
    """One arm's value of a shared setting (PER_ARM_SETTINGS may be stored per arm)."""
    value = settings.get(key)
    return value.get(arm) if isinstance(value, dict) else value


def setting_text(settings: dict[str, Any], key: str) -> str:
    """A shared setting for a report line: "bf16", or "fp32 (a), bf16 (b)" when stored per arm."""
    value = settings.get(key)
    if isinstance(value, dict):
        return ", ".join(f"{v} ({arm})" for arm, v in value.items())
    return str(value)


def _check_arm_list(arm_list: list[Arm]) -> None:
    seen: set[str] = set()
    for a in arm_list:
        if any(o.split("=", 1)[0].strip() == "train.seed" for o in a.overrides):
            raise ConfigError(f"Arm `{a.name}` sets train.seed; seeds come from --seeds.", hint="Set the base seed for every arm with --set train.seed=N.")
        if a.name in seen:
            raise ConfigError(f"Two arms are named `{a.name}`.", hint="Give every --arm its own name (grid arms are named from their values).")
        seen.add(a.name)


def assemble_arms(arms: list[str] | tuple[str, ...] = (), grids: list[str] | tuple[str, ...] = (), with_baseline: bool = True) -> tuple[list[Arm], list[Grid]]:
    """The arm list of --arm and --grid options, in order: baseline, hand-named arms, grid arms.

    No --arm and no --grid: the default arms (baseline and the profile as is). A grid adds the
    LM-only baseline (when `with_baseline` and no --arm is named `baseline`); --arm options alone
    are taken as given, as before grids existed.
    """
    hand = [parse_arm(a) for a in arms]
    parsed = [parse_grid(g) for g in grids]
    if not hand and not parsed:
        return (list(DEFAULT_ARMS) if with_baseline else []), []
    out = list(hand)
    if parsed:
        if with_baseline and not any(a.name == BASELINE for a in hand):
            out.insert(0, BASELINE_ARM)
        out += grid_arms(parsed)
    _check_arm_list(out)
    return out, parsed


def plan_ablation(
    profile: str,
    n_seeds: int,
    arms: list[str] | tuple[str, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
    out: Path | None = None,
    grids: list[str] | tuple[str, ...] = (),
    budget_s: float | None = None,
    command: str | None = None,
    init_from: str | None = None,
) -> AblationPlan:
    """Resolve and check an ablation without touching the disk.

    `init_from` (`--init-from SRC`) starts every arm from SRC's weights: it is one more global
    override (train.init_from), and every arm's model is checked against SRC here, before any run.
    A `{i}` in SRC is the seed's index: seed i's arms start from their own source (one base model
    per seed, e.g. `--init-from 'runs/bases/baseline-s{i}'` after an ablation that made them)."""
    if n_seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {n_seeds}.")
    overrides = list(overrides)
    if budget_s is not None:
        if not (math.isfinite(budget_s) and budget_s > 0):
            raise ConfigError(f"--budget-s must be a positive number of seconds, got {budget_s}.", hint="Example: --budget-s 120")
        overrides.append(f"train.time_budget_s={float(budget_s)!r}")
    if init_from is not None:
        overrides.append(f"train.init_from={json.dumps(init_from)}")
    base = load_config(profile, overrides)
    arm_list, parsed = assemble_arms(arms, grids)
    names = {a.name for a in arm_list}
    reference = BASELINE if BASELINE in names else arm_list[0].name
    folder = Path(out) if out is not None else Path(base.train.out_dir) / f"ablate-{base.name}-{utc_stamp()}"
    if (folder / MANIFEST).exists():
        raise ConfigError(f"{folder} already holds an ablation.", hint=f"Continue it with --resume {folder}, or choose another --out.")
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not empty.", hint="Choose another --out.")
    seeds = [base.train.seed + i for i in range(n_seeds)]
    plan = AblationPlan(folder, profile, overrides, arm_list, seeds, reference, config_to_toml(base))
    plan.grids = [g.to_dict() for g in parsed]
    plan.commands = [command] if command else []
    configs = {a.name: plan.config_for(a.name, 0) for a in arm_list}
    plan.settings = check_arms_comparable(configs)
    _check_init_from(plan, [(a.name, i) for a in arm_list for i in range(len(seeds))])
    return plan


def _check_init_from(plan: AblationPlan, runs: list[tuple[str, int]]) -> None:
    """Each run's model (arm, seed index) against the weights it starts from (train.init_from), before anything runs.

    Arms may start from different sources (the starting point as the treatment) and seeds from
    their own (`{i}`), so each source is resolved once and checked against the runs that name it."""
    from jepa_core.train.init_from import check_shape, check_tokenizer, resolve_source

    sources: dict[str, Any] = {}
    for name, i in runs:
        cfg = plan.config_for(name, i)
        where = cfg.train.init_from
        if not where:
            continue
        try:
            if where not in sources:
                sources[where] = resolve_source(where)
                check_tokenizer(sources[where], cfg.data)
            check_shape(cfg, sources[where])
        except ConfigError as e:
            raise ConfigError(f"Arm `{name}`: {e.message}", hint=e.hint) from None


def extend_plan(
    plan: AblationPlan,
    n_seeds: int | None = None,
    arms: list[str] | tuple[str, ...] = (),
    grids: list[str] | tuple[str, ...] = (),
    command: str | None = None,
) -> AblationPlan:
    """Add arms (--arm, --grid) and seeds to an existing ablation; its finished runs are kept.

    The new arms start from the same base config and must be comparable with the old ones,
    so every arm still sees the same batches per seed. Seeds can be added, never removed.
    """
    if n_seeds is not None and n_seeds < len(plan.seeds):
        raise ConfigError(
            f"{plan.dir} has {len(plan.seeds)} seeds; --seeds {n_seeds} would drop some.",
            hint=f"Leave --seeds out to keep {len(plan.seeds)}, or raise it to add seeds.",
        )
    new, parsed = assemble_arms(arms, grids, with_baseline=False)
    old = {a.name for a in plan.arms}
    clash = [a.name for a in new if a.name in old]
    if clash:
        raise ConfigError(
            f"{plan.dir} already has arm(s) {', '.join(f'`{c}`' for c in clash)}.",
            hint="Name new --arm options differently; a grid that repeats old values is not needed (those runs exist).",
        )
    grown = copy.copy(plan)  # the plan changes only once every check has passed
    grown.arms = plan.arms + new
    # on every resume, not only when arms are added: runs not started yet resolve device and precision here
    settings = check_arms_comparable({a.name: grown.config_for(a.name, 0) for a in grown.arms})
    old_arms = [a.name for a in plan.arms]
    changed = [
        k for k in settings if k in plan.settings
        and any(json.dumps(setting_for(settings, k, a)) != json.dumps(setting_for(plan.settings, k, a)) for a in old_arms)
    ]
    if changed:
        raise ConfigError(
            f"{plan.dir} was run with other shared settings than this machine resolves now: "
            + ", ".join(f"{k} ({setting_text(plan.settings, k)} then, {setting_text(settings, k)} now)" for k in changed)
            + ".",
            hint="Resume or extend the ablation where it was started (same device and precision), or start a new ablation"
            + (" (to match its precision: --set 'train.precision=\"fp32\"' or \"bf16\")." if "precision" in changed else "."),
        )
    grown.settings = {**plan.settings, **settings}  # equal where both have a key, but for the new arms' entries
    if n_seeds is not None and n_seeds > len(plan.seeds):
        grown.seeds = plan.seeds + [plan.seeds[0] + i for i in range(len(plan.seeds), n_seeds)]
    # the runs this adds: new arms at every seed, every arm at a new seed (its own base with `{i}`)
    _check_init_from(grown, [(a.name, i) for a in grown.arms for i in range(len(grown.seeds))
                             if a.name not in old or i >= len(plan.seeds)])
    grown.grids = plan.grids + [g.to_dict() for g in parsed]
    if command and grown.runs() != plan.runs():
        grown.commands = plan.commands + [command]
    return grown


def load_plan(folder: Path) -> AblationPlan:
    """The plan of an existing ablation folder (for --resume and reports)."""
    folder = Path(folder)
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        base_toml = (folder / BASE_CONFIG).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder} is not an ablation folder (no {MANIFEST} or {BASE_CONFIG}).",
            hint="Pass the folder `jepa ablate` created, e.g. runs/ablate-tiny-<time>.",
        ) from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / MANIFEST} is unreadable ({e}).") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CheckpointError(f"{folder / MANIFEST} has format {m.get('format') if isinstance(m, dict) else None!r}, expected {FORMAT!r}.")
    try:
        plan = AblationPlan(
            dir=folder,
            profile=m["profile"],
            overrides=list(m.get("overrides", [])),
            arms=[Arm(a["name"], tuple(a.get("overrides", [])), a.get("origin", "arm")) for a in m["arms"]],
            seeds=[s["train_seed"] for s in sorted(m["seeds"], key=lambda s: s["index"])],
            reference=m["reference"],
            base_toml=base_toml,
            settings=m.get("settings", {}),
            grids=list(m.get("grids", [])),
            commands=list(m.get("commands", [])),
            created=m.get("created", utc_now_iso()),
        )
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{folder / MANIFEST} lacks a field or has one of the wrong type ({e}).") from None
    for r in m.get("runs", []):
        if isinstance(r, dict) and "name" in r:
            plan.state[r["name"]] = {k: v for k, v in r.items() if k in ("status", "step", "message", "action")}
    return plan
