"""`jepa ablate`: train every arm for every seed, then compare the arms with the baseline.

Layout (one ablation folder, each run a normal run directory, so `jepa watch
ABLATION_DIR` can overlay them and `jepa inspect` reads their checkpoints):

    runs/ablate-<profile>-<UTC>/
      manifest.json        profile, arms and their overrides, seeds, the commands, per-run status
      base_config.toml     the profile with the global --set (and --budget-s) applied; arms start from it
      <arm>-s<i>/          run directory of arm <arm> with seed index i (train.seed = base seed + i)
        ...                config.toml, metrics.jsonl, checkpoints/ as for `jepa train`
        batches.txt        "<batch index> <sha256 of the batch>" per training batch drawn
      report.json, report.md

Arms: hand-named ones (`--arm NAME:k=v,...`) and the cross product of `--grid
KEY=V1,V2,...` options, each grid arm named from its values; with a grid, an
LM-only `baseline` arm is added unless an --arm already has that name. The arm
named `baseline` (else the first) is the reference every other arm is compared with.

Fair comparison is checked, not assumed: before anything runs, the settings
that decide the data order, the compute and the evaluation (dataset, vocab,
block and batch size, steps, time budget, eval cadence and coverage, resolved
device and precision, compile, seed) must be equal across arms; and every
training batch is hashed as it is drawn, and each run's shared initial weights
(run_start's `init_digest`), so the report can show that the arms of a seed
started from the same weights and consumed the same batches in the same order:
that pairing is what lets it compare arm and baseline seed by seed (the paired
t-test), and where it does not hold the report falls back to Welch's test. Seed index i sets
`train.seed`, which drives initialisation, data order and pair sampling
together: the spread over seeds is the run-to-run noise a reader should expect.

Arms are compared at equal steps (`train.max_steps`), or with a time budget
(`--budget-s`, i.e. `train.time_budget_s`) at equal seconds of step time; the
report says which.

Runs execute one after another in this process through `train(...)`, or with
`jobs` > 1 that many at once, each in its own process (`ablate_jobs`). Ctrl-C
(or a `stop` file) ends the current runs with a checkpoint and stops the
ablation; `--resume` continues it: finished, early-stopped (and diverged) runs are skipped,
an interrupted run resumes exactly from its last checkpoint (with what is left
of its time budget), and a run that died before its first checkpoint is
restarted from scratch. A resumed ablation can also gain arms and seeds.

Reading and reporting (`run_record`, `build_report`) only read files, through
`jepa_core.runlog`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runlog
from .config import Config, apply_overrides, config_to_toml, load_config, parse_override, validate
from .errors import CheckpointError, ConfigError, JepaError
from .fsutil import atomic_write_text
from .rundir import utc_now_iso, utc_stamp
from .codeversion import code_label
from .stats import holm, min_detectable_effect, paired_t_test, summarize, welch_t_test

FORMAT = "jepa-ablation/1"
REPORT_FORMAT = "jepa-ablation-report/2"
MANIFEST = "manifest.json"
BASE_CONFIG = "base_config.toml"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
BATCH_LOG = "batches.txt"

#: Run statuses that are final: such runs are skipped on --resume.
DONE = ("finished", "early_stopped", "diverged")
#: Final statuses whose last eval enters the statistics (an early stop is a completed run).
COUNTED = ("finished", "early_stopped")

#: Family-wise error rate of the verdicts (Holm-adjusted p-values are compared with it).
ALPHA = 0.05
#: Confidence level of the intervals on the difference to the baseline.
CI_LEVEL = 0.95
#: Power at which the report states the minimum detectable effect of the paired design.
POWER = 0.8

#: Settings every arm must share (for the same seed index). Keys this version's config lacks are skipped.
SAME_KEYS = (
    "data.dataset",
    "data.vocab_size",
    "data.lowercase",
    "data.block_size",
    "data.train_fraction",
    "data.val_fraction",
    "train.seed",
    "train.batch_size",
    "train.grad_accum_steps",
    "train.max_steps",
    "train.time_budget_s",
    "train.eval_every",
    "train.eval_batches",
    "train.eval_tokens",
    "train.eval_stride",
    "jepa.eval_pairs",
    "train.compile",
)

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

    def run_dir(self, spec: RunSpec) -> Path:
        return self.dir / spec.name

    @property
    def budget_s(self) -> float:
        """train.time_budget_s shared by every arm; 0 compares at equal steps."""
        return float(self.settings.get("train.time_budget_s") or 0.0)

    def config_for(self, arm: str, seed_index: int, extra: list[str] | tuple[str, ...] = ()) -> Config:
        raw = tomllib.loads(self.base_toml)
        over = [*self.arm(arm).overrides, f"train.seed={self.seeds[seed_index]}", *extra]
        try:
            raw = apply_overrides(copy.deepcopy(raw), over)
        except ConfigError as e:
            raise ConfigError(f"Arm `{arm}`: {e.message}", hint=e.hint) from None
        return validate(raw, source=f"arm `{arm}`")

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
    from .train.device import resolve_runtime

    out = {k: _get(cfg, k) for k in SAME_KEYS if hasattr(getattr(cfg, k.split(".")[0]), k.split(".")[1])}
    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    out["device"] = str(rt.device)
    out["precision"] = rt.precision
    return out


def check_arms_comparable(configs: dict[str, Config]) -> dict[str, Any]:
    """The shared settings, or a ConfigError naming every setting on which arms differ."""
    per_arm = {name: shared_settings(cfg) for name, cfg in configs.items()}
    names = list(per_arm)
    ref = per_arm[names[0]]
    diffs = []
    for key in ref:
        values = {n: per_arm[n][key] for n in names}
        if len({json.dumps(v) for v in values.values()}) > 1:
            diffs.append(f"{key} ({', '.join(f'{n}: {v!r}' for n, v in values.items())})")
    if diffs:
        raise ConfigError(
            "The arms would not be compared fairly: they differ in " + "; ".join(diffs) + ".",
            hint="Every arm must see the same data order, steps, time budget, evaluation, device, precision and compile setting. "
            "Set these with the global --set, not in an --arm or a --grid.",
        )
    return ref


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
) -> AblationPlan:
    """Resolve and check an ablation without touching the disk."""
    if n_seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {n_seeds}.")
    overrides = list(overrides)
    if budget_s is not None:
        if not (math.isfinite(budget_s) and budget_s > 0):
            raise ConfigError(f"--budget-s must be a positive number of seconds, got {budget_s}.", hint="Example: --budget-s 120")
        overrides.append(f"train.time_budget_s={float(budget_s)!r}")
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
    plan.settings = check_arms_comparable({a.name: plan.config_for(a.name, 0) for a in arm_list})
    return plan


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
    if new:
        settings = check_arms_comparable({a.name: grown.config_for(a.name, 0) for a in grown.arms})
        changed = [k for k in settings if k in plan.settings and json.dumps(settings[k]) != json.dumps(plan.settings[k])]
        if changed:
            raise ConfigError(
                f"{plan.dir} was run with other shared settings than this machine resolves now: "
                + ", ".join(f"{k} ({plan.settings[k]!r} then, {settings[k]!r} now)" for k in changed)
                + ".",
                hint="Add arms where the ablation was started (same device and precision), or start a new ablation.",
            )
        grown.settings = {**settings, **plan.settings}
    if n_seeds is not None and n_seeds > len(plan.seeds):
        grown.seeds = plan.seeds + [plan.seeds[0] + i for i in range(len(plan.seeds), n_seeds)]
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


# --------------------------------------------------------------------------- reading runs (files only, through runlog)


def horizon_values(final_eval: dict[str, float], prefix: str) -> dict[int, float]:
    """{k: value} of the keys `<prefix>{k}` in an eval line (e.g. retrieval_top1_h8)."""
    out = {}
    for key, v in final_eval.items():
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            out[int(key[len(prefix) :])] = v
    return out


def _exclusion(status: str, message: str, val_bpb: float | None) -> str | None:
    """Why a run does not enter the statistics, or None when it does."""
    if status in COUNTED:
        return None if val_bpb is not None else f"{status} without a finite final val BPB"
    if status == "incomplete":
        return "killed: no run_end in its metrics (continue with --resume)"
    if status == "pending":
        return "not run yet"
    return f"{status}: {message}" if message else status


def run_record(run_dir: Path) -> dict[str, Any]:
    """One run's final numbers and its val BPB curve, from its metrics.jsonl (via runlog)."""
    s = runlog.summarize_run(run_dir)
    fe = s.final_eval
    top1 = horizon_values(fe, "retrieval_top1_h")
    copy_top1 = horizon_values(fe, "retrieval_copy_top1_h")
    val_bpb = fe.get("val_bpb")
    return {
        "status": s.status,
        "step": s.step,
        "message": s.message,
        "segments": s.segments,
        "max_steps": s.max_steps,
        "final_step": s.final_eval_step,
        "val_loss": fe.get("val_loss"),
        "val_bpb": val_bpb,
        "eff_rank": fe.get("eff_rank"),
        "retrieval_top1": {str(k): v for k, v in sorted(top1.items())},
        "retrieval_copy_top1": {str(k): v for k, v in sorted(copy_top1.items())},
        "tok_per_s": s.tok_per_s,
        "train_time": s.train_time_to_step,
        "wall_s": s.wall_s or None,
        "curve": s.curve,
        "excluded": _exclusion(s.status, s.message, val_bpb),
        "init_digests": list(s.init_digests),
        "code": [code_label(c) for c in s.code],
    }


def read_batch_log(run_dir: Path) -> dict[int, str]:
    """Batch index -> digest; a batch replayed after a crash keeps its last digest."""
    out: dict[int, str] = {}
    try:
        text = (Path(run_dir) / BATCH_LOG).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and len(parts[0]) < 16:
            out[int(parts[0])] = parts[1]
    return out


def verify_data_order(plan: AblationPlan) -> dict[str, Any]:
    """Compare the recorded batch digests of every arm with the reference arm, seed by seed."""
    per_seed = []
    mismatches: list[str] = []
    broken: list[dict[str, Any]] = []  # {"seed_index", "arm"} of every mismatch, for the pairing check
    compared = 0  # arm pairs with at least one batch in common
    for i in range(len(plan.seeds)):
        logs = {a.name: read_batch_log(plan.dir / f"{a.name}-s{i}") for a in plan.arms}
        ref = logs[plan.reference]
        counts = {name: len(log) for name, log in logs.items()}
        for name, log in logs.items():
            if name == plan.reference:
                continue
            common = sorted(set(ref) & set(log))
            compared += bool(common)
            bad = next((k for k in common if ref[k] != log[k]), None)
            if bad is not None:
                mismatches.append(f"seed {i}: arm `{name}` drew a different batch {bad} than `{plan.reference}`")
                broken.append({"seed_index": i, "arm": name})
        per_seed.append({"seed_index": i, "batches": counts})
    # None: nothing to compare yet (one arm ran, or no batches were recorded)
    ok = False if mismatches else (True if compared else None)
    return {"ok": ok, "compared_pairs": compared, "per_seed": per_seed, "mismatches": mismatches, "broken": broken}


def verify_init(plan: AblationPlan, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Compare each run's init digest (run_start) with the reference arm's, seed by seed.

    `runs` maps run names to `run_record`s. A run without a digest predates it
    (or never started) and is listed as missing, not as a mismatch.
    """
    mismatches, broken, missing = [], [], []
    compared = 0
    for i in range(len(plan.seeds)):
        ref = runs[f"{plan.reference}-s{i}"]["init_digests"]
        for a in plan.arms:
            name = f"{a.name}-s{i}"
            digs = runs[name]["init_digests"]
            if runs[name]["status"] != "pending" and not digs:
                missing.append(name)
            if a.name == plan.reference or not digs or not ref:
                continue
            compared += 1
            if set(digs) != set(ref) or len(digs) > 1:
                mismatches.append(f"seed {i}: arm `{a.name}` started from other weights than `{plan.reference}`")
                broken.append({"seed_index": i, "arm": a.name})
    ok = False if mismatches else (True if compared else None)
    return {"ok": ok, "compared_pairs": compared, "mismatches": mismatches, "broken": broken, "missing": missing}


# --------------------------------------------------------------------------- report


def _horizon_summaries(finished: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per horizon: top-1, the copy control and the lift (top-1 minus copy, per run), over finished runs."""
    horizons = sorted({int(h) for r in finished for h in r["retrieval_top1"]})
    out = []
    for h in horizons:
        key = str(h)
        top = [r["retrieval_top1"].get(key) for r in finished]
        cp = [r["retrieval_copy_top1"].get(key) for r in finished]
        lift = [t - c for t, c in zip(top, cp) if t is not None and c is not None]
        out.append(
            {
                "horizon": h,
                "top1": summarize(top).to_dict(),
                "copy_top1": summarize(cp).to_dict(),
                "lift": summarize(lift).to_dict(),
            }
        )
    return out


def _verdict(arm: str, ref: str, c: dict[str, Any], family: int) -> str:
    n_a, n_r = c["n_arm"], c["n_ref"]
    if c["p"] is None:
        return f"not tested: n = {n_a} vs {n_r} finished seeds with a val BPB; the tests need 2 per arm"
    diff, lo, hi = c["diff"], c["ci_low"], c["ci_high"]
    ci = f"{int(round(CI_LEVEL * 100))}% CI {lo:+.4f}..{hi:+.4f}"
    holm_p = fmt_p(c["p_holm"])
    sample = f"paired over n = {c['n_pairs']} seeds" if c["test"] == "paired" else f"n = {n_a} vs {n_r}"
    if c["p_holm"] < ALPHA:
        side = "worse" if diff > 0 else "better"
        out = f"{side} than {ref} by {abs(diff):.4f} BPB ({ci}), Holm p = {holm_p} ({sample})"
    else:
        note = ""
        if c["p"] < ALPHA:
            note = f"; unadjusted p = {fmt_p(c['p'])} does not survive Holm over {family} comparisons"
        out = f"no detectable difference at {sample}: {diff:+.4f} BPB ({ci}), Holm p = {holm_p}{note}"
        if c["mde"] is not None:
            out += f"; this design detects {c['mde']:.4f} BPB with {int(POWER * 100)}% power"
    if c["unpaired_because"]:
        out += f"; Welch (unpaired) because {c['unpaired_because']}"
    return out


def _caveats(rep: dict[str, Any]) -> list[str]:
    """What the report does not show, worded from its own numbers."""
    s = rep["settings"]
    cmp_ = rep["comparison"]
    ns = sorted({a["n"] for a in rep["arms"]})
    n_text = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}..{ns[-1]}"
    out = [
        f"Sample size: {n_text} finished seeds per arm. The t-tests assume roughly normal per-seed results (the paired "
        "test: normal differences), and at this n they have little power: \"no detectable difference\" is not evidence "
        "of no difference; the confidence interval is the range of effects the data do not rule out, and the minimum "
        "detectable effect is estimated from the same few differences.",
        f"One scale: profile `{rep['profile']}` on `{s.get('data.dataset')}`, "
        + (f"{cmp_['max_steps']} steps" if cmp_["mode"] == "steps" else f"{cmp_['budget_s']:g} s of training per run")
        + ". The effects can change with model size, data and training length.",
    ]
    if cmp_["mode"] == "steps":
        out.append(
            "Equal steps, not equal compute: arms that cost more per step (JEPA heads, an encoder teacher) used more "
            "time; compare tok/s, or rerun with --budget-s for equal time."
        )
    else:
        out.append(
            f"Equal time, not equal steps: the learning-rate schedule is laid out over train.max_steps = {cmp_['max_steps']}, "
            "so a run the budget stopped early did not finish its decay, and faster arms are further along it."
        )
        if cmp_.get("reached_max_steps"):
            out.append(
                "Runs that reached train.max_steps before the time budget ("
                + ", ".join(cmp_["reached_max_steps"])
                + ") trained for less time than the budget: raise train.max_steps for a pure time comparison."
            )
    out.append(
        "Seeds: seed index i sets train.seed for every arm, which drives initialisation, data order and pair sampling "
        "together; within a seed every arm starts from the same shared weights and draws the same batches, which is what "
        "the paired test relies on (the initial weights and data order lines say whether that was verified)."
    )
    out.append(
        f"Holm's adjustment covers the {cmp_['family']} val BPB comparison(s) with `{rep['reference']}` only (on the p of "
        "the test each verdict uses; the Welch column has its own); retrieval, "
        "effective rank and tok/s are descriptive (no tests)."
    )
    if rep["excluded"]:
        out.append(
            f"{len(rep['excluded'])} run(s) are excluded from the statistics (listed above); an arm with excluded runs is "
            "summarised by its surviving seeds, which may flatter it."
        )
    return out


def build_report(folder: Path) -> dict[str, Any]:
    """The comparison of an ablation folder, from its manifest and the runs' metrics files."""
    plan = load_plan(folder)
    arms_out: list[dict[str, Any]] = []
    bpb: dict[str, list[float]] = {}
    bpb_by_seed: dict[str, dict[int, float]] = {}
    curves: dict[str, Any] = {}
    excluded = []
    for arm in plan.arms:
        runs = []
        for i, seed in enumerate(plan.seeds):
            name = f"{arm.name}-s{i}"
            r = run_record(plan.dir / name)
            runs.append({"name": name, "arm": arm.name, "seed_index": i, "train_seed": seed, "dir": name, **r})
            if r["excluded"]:
                excluded.append({"name": name, "arm": arm.name, "status": r["status"], "step": r["step"], "reason": r["excluded"]})
        finished = [r for r in runs if not r["excluded"]]
        bpb[arm.name] = [r["val_bpb"] for r in finished]
        bpb_by_seed[arm.name] = {r["seed_index"]: r["val_bpb"] for r in finished}
        arms_out.append(
            {
                "name": arm.name,
                "origin": arm.origin,
                "overrides": list(arm.overrides),
                "n": len(finished),
                "runs": runs,
                "val_bpb": summarize(bpb[arm.name]).to_dict(),
                "val_loss": summarize(r["val_loss"] for r in finished).to_dict(),
                "eff_rank": summarize(r["eff_rank"] for r in finished).to_dict(),
                "tok_per_s": summarize(r["tok_per_s"] for r in finished).to_dict(),
                "steps": summarize(r["step"] for r in finished).to_dict(),
                "train_time": summarize(r["train_time"] for r in finished).to_dict(),
                "retrieval": _horizon_summaries(finished),
                "has_copy_control": any(r["retrieval_copy_top1"] for r in finished),
            }
        )
        # the arm's mean curve over the eval steps every finished seed has
        per_seed = {r["seed_index"]: r["curve"] for r in finished}
        steps = sorted(set.intersection(*(set(s for s, _ in c) for c in per_seed.values()))) if per_seed else []
        lookup = {i: dict(c) for i, c in per_seed.items()}
        mean = [sum(lookup[i][s] for i in lookup) / len(lookup) for s in steps]
        curves[arm.name] = {"steps": steps, "mean": mean, "per_seed": {str(r["seed_index"]): r["curve"] for r in runs}}

    # val BPB against the reference: paired where the pairing holds, Welch alongside, Holm across the arms
    records = {r["name"]: r for a in arms_out for r in a["runs"]}
    data_order, init = verify_data_order(plan), verify_init(plan, records)
    comparisons = []
    for arm in plan.arms:
        if arm.name == plan.reference:
            continue
        why = _unpaired_reason(arm.name, plan.reference, bpb_by_seed, records, data_order, init)
        comparisons.append(_comparison(arm.name, bpb_by_seed[arm.name], bpb_by_seed[plan.reference], why))
    for c, adj in zip(comparisons, holm([c["p"] for c in comparisons])):
        c["p_holm"] = adj
    welch = [c["welch"] for c in comparisons if c["welch"] is not None]
    for w, adj in zip(welch, holm([w["p"] for w in welch])):
        w["p_holm"] = adj
    family = sum(c["p"] is not None for c in comparisons)
    by_arm = {c["arm"]: c for c in comparisons}
    for a in arms_out:
        a["comparison"] = by_arm.get(a["name"])
        a["verdict"] = "reference" if a["name"] == plan.reference else _verdict(a["name"], plan.reference, by_arm[a["name"]], family)
        out_runs = [r["status"] for r in a["runs"] if r["excluded"]]
        if out_runs:
            counts = ", ".join(f"{out_runs.count(st)} {st}" for st in dict.fromkeys(out_runs))
            a["verdict"] += f"; {len(out_runs)} of {len(a['runs'])} runs excluded ({counts})"

    budget = plan.budget_s
    max_steps = plan.settings.get("train.max_steps")
    comparison = {"mode": "time" if budget > 0 else "steps", "budget_s": budget if budget > 0 else None, "max_steps": max_steps, "family": family}
    if budget > 0:
        comparison["reached_max_steps"] = [
            r["name"] for a in arms_out for r in a["runs"] if not r["excluded"] and max_steps and r["step"] >= max_steps and (r["train_time"] or 0) < 0.98 * budget
        ]
    all_runs = [r for a in arms_out for r in a["runs"]]
    rep = {
        "format": REPORT_FORMAT,
        "ablation_dir": plan.dir.name,
        "profile": plan.profile,
        "overrides": plan.overrides,
        "grids": plan.grids,
        "commands": plan.commands,
        "reference": plan.reference,
        "seeds": plan.seeds,
        "settings": plan.settings,
        "comparison": comparison,
        "alpha": ALPHA,
        "ci_level": CI_LEVEL,
        "arms": arms_out,
        "comparisons": comparisons,
        "excluded": excluded,
        "curves": curves,
        "power": POWER,
        "data_order": data_order,
        "init": init,
        "code": _code_versions(all_runs),
        "complete": all(r["status"] in DONE for r in all_runs),
        "created": utc_now_iso(),
    }
    rep["caveats"] = _caveats(rep)
    return _without_machine_paths(rep, plan.dir)


def _seed_list(seeds: set[int] | list[int]) -> str:
    return ", ".join(f"s{i}" for i in sorted(seeds)) or "none"


def _unpaired_reason(
    arm: str, ref: str, bpb_by_seed: dict[str, dict[int, float]], records: dict[str, dict[str, Any]],
    data_order: dict[str, Any], init: dict[str, Any],
) -> str | None:
    """Why arm and reference cannot be compared seed by seed, or None when the pairing holds."""
    seeds, ref_seeds = set(bpb_by_seed[arm]), set(bpb_by_seed[ref])
    if seeds != ref_seeds:
        return f"the finished seeds differ (`{arm}`: {_seed_list(seeds)}; `{ref}`: {_seed_list(ref_seeds)})"
    for check, what in ((data_order, "drew other batches"), (init, "started from other initial weights")):
        bad = sorted({b["seed_index"] for b in check["broken"] if b["arm"] == arm and b["seed_index"] in seeds})
        if bad:
            return f"it {what} than `{ref}` at {_seed_list(bad)}"
    no_digest = [n for n in (f"{x}-s{i}" for x in (ref, arm) for i in sorted(seeds)) if not records[n]["init_digests"]]
    if no_digest:
        return f"{', '.join(no_digest)} recorded no init digest (runs from before the pairing check)"
    return None


def _comparison(arm: str, vals: dict[int, float], ref_vals: dict[int, float], why: str | None) -> dict[str, Any]:
    """One arm against the reference: the paired test when `why` is None, Welch's always."""
    sa, sr = summarize(vals.values()), summarize(ref_vals.values())
    w = welch_t_test(list(vals.values()), list(ref_vals.values()))
    welch = None
    if w is not None:
        lo, hi = w.ci(CI_LEVEL)
        welch = {"diff": w.diff, "ci_low": lo, "ci_high": hi, "t": w.t, "df": w.df, "p": w.p, "p_holm": None}
    paired = None
    if why is None:
        seeds = sorted(vals)
        pr = paired_t_test([vals[i] for i in seeds], [ref_vals[i] for i in seeds])
        if pr is not None:
            lo, hi = pr.ci(CI_LEVEL)
            mde = min_detectable_effect(pr.sd, pr.n, ALPHA, POWER)
            paired = {"diff": pr.diff, "ci_low": lo, "ci_high": hi, "t": pr.t, "df": pr.df, "p": pr.p, "sd": pr.sd, "n": pr.n, "mde": mde}
    used = paired or welch
    diff = (sa.mean - sr.mean) if sa.mean is not None and sr.mean is not None else None
    return {
        "arm": arm,
        "metric": "val_bpb",
        "test": "paired" if paired else ("welch" if welch else None),
        # only when Welch stands in for a paired test that had the seeds for it
        "unpaired_because": why if welch is not None else None,
        "diff": used["diff"] if used else diff,
        **{k: (used[k] if used else None) for k in ("ci_low", "ci_high", "t", "df", "p")},
        "p_holm": None,
        "n_arm": sa.n,
        "n_ref": sr.n,
        "n_pairs": paired["n"] if paired else 0,
        "mde": paired["mde"] if paired else None,
        "paired": paired,
        "welch": welch,
    }


def _code_versions(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The code version of every run that started, and a warning when they differ."""
    per_run = {r["name"]: r["code"] for r in runs if r["code"]}
    distinct = sorted({c for codes in per_run.values() for c in codes})
    warning = None
    if len(distinct) > 1:
        warning = f"the runs of this folder were trained by {len(distinct)} code versions ({'; '.join(distinct)}): differences between arms may come from the code"
    return {"runs": per_run, "versions": distinct, "warning": warning}


# an absolute POSIX path where a report field starts one: at the start, after a space, =, :, a quote or a
# bracket (text:/data/x.txt); never a URL's //
_ABS_PATH = re.compile(r"(?:^|(?<=[\s=:`'\"(\[]))/(?!/)[^\s`'\",)\]]*")


def _without_machine_paths(obj: Any, folder: Path) -> Any:
    """`obj` with every absolute path in its strings made relative to the ablation folder:
    a committed report then names nothing of the machine it ran on."""
    base = Path(folder).resolve()
    if isinstance(obj, str):
        return _ABS_PATH.sub(lambda m: os.path.relpath(m.group(0), base), obj)
    if isinstance(obj, dict):
        return {k: _without_machine_paths(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_machine_paths(v, base) for v in obj]
    return obj


def _num(v: Any, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "NA" if v is None else str(v)
    return format(v, spec)


_FORMATS = {"tok_per_s": ",.0f", "steps": ".0f", "wall_s": ".1f", "train_time": ".1f", "eff_rank": ".1f", "top1": ".3f", "copy_top1": ".3f", "lift": ".3f"}


def fmt_metric(key: str, v: Any) -> str:
    """A number as the report prints that metric (BPB and losses to 4 decimals)."""
    return _num(v, _FORMATS.get(key, ".4f"))


def fmt_mean_sd(key: str, sm: dict[str, Any] | None) -> str:
    """`mean ± sd` of a summary dict (`NA` without values, the mean alone for one value)."""
    if not sm or sm.get("mean") is None:
        return "NA"
    out = fmt_metric(key, sm["mean"])
    return out + (f" ± {fmt_metric(key, sm['std'])}" if sm.get("std") is not None else "")


def fmt_p(p: float | None) -> str:
    if p is None:
        return "NA"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def fmt_diff(c: dict[str, Any] | None) -> str:
    """`+0.0123 (-0.0040..+0.0286)`: difference to the reference and its confidence interval."""
    if not c or c.get("diff") is None:
        return "NA"
    out = f"{c['diff']:+.4f}"
    if c.get("ci_low") is not None:
        out += f" ({c['ci_low']:+.4f}..{c['ci_high']:+.4f})"
    return out


def fmt_retrieval(h: dict[str, Any], with_lift: bool) -> str:
    cell = fmt_mean_sd("top1", h["top1"])
    if with_lift:
        cell += f" ({h['lift']['mean']:+.3f})" if h["lift"]["mean"] is not None else " (NA)"
    return cell


def comparison_text(rep: dict[str, Any]) -> str:
    c = rep["comparison"]
    if c["mode"] == "time":
        return f"equal training time: {c['budget_s']:g} s of step time per run (train.time_budget_s), at most {c['max_steps']} steps"
    return f"equal steps: {c['max_steps']} steps per run (train.max_steps)"


def report_markdown(rep: dict[str, Any]) -> str:
    s = rep["settings"]
    ref = rep["reference"]
    lines = [f"# Ablation: profile `{rep['profile']}`", ""]
    if rep.get("commands"):
        lines += ["```", *rep["commands"], "```", ""]
    lines += [
        f"Folder `{rep['ablation_dir']}`; seeds {rep['seeds']} (train.seed); reference arm `{ref}`.",
        f"Comparison: {comparison_text(rep)}.",
    ]
    if s:
        lines.append(
            f"Shared settings (checked equal across arms): dataset `{s.get('data.dataset')}`, block {s.get('data.block_size')}, "
            f"batch {s.get('train.batch_size')} x {s.get('train.grad_accum_steps')}, eval every {s.get('train.eval_every')}, "
            f"{s.get('device')} {s.get('precision')}, compile {s.get('train.compile')}."
        )
    if rep["overrides"]:
        lines.append("Every arm: " + ", ".join(f"`{o}`" for o in rep["overrides"]) + ".")
    pct = int(round(rep["ci_level"] * 100))
    lines += [
        "",
        f"## Verdicts: final val BPB against `{ref}` (paired t-test over seeds where the pairing holds, else Welch; "
        f"Holm-adjusted over {rep['comparison']['family']} comparisons, alpha = {rep['alpha']})",
        "",
    ]
    for a in rep["arms"]:
        if a["name"] != ref:
            lines.append(f"- `{a['name']}`: {a['verdict']}")
    lines += [
        "",
        f"## Per arm (mean ± sd over finished seeds; diff = arm - {ref}, {pct}% CI, of the test named; Welch alongside)",
        "",
        "| arm | overrides | n | val BPB | test | diff (CI) | p | Holm p | Welch diff (CI) | Welch p | Welch Holm p | eff rank | tok/s | steps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in rep["arms"]:
        c = a["comparison"]
        w = c["welch"] if c else None
        lines.append(
            f"| {a['name']} | {', '.join(f'`{o}`' for o in a['overrides']) or '(profile)'} | {a['n']} | {fmt_mean_sd('val_bpb', a['val_bpb'])} | "
            f"{(c['test'] or 'none') if c else ''} | {fmt_diff(c) if c else '(reference)'} | {fmt_p(c['p']) if c else ''} | {fmt_p(c['p_holm']) if c else ''} | "
            f"{fmt_diff(w) if c else ''} | {fmt_p(w['p'] if w else None) if c else ''} | {fmt_p(w['p_holm'] if w else None) if c else ''} | "
            f"{fmt_mean_sd('eff_rank', a['eff_rank'])} | {fmt_mean_sd('tok_per_s', a['tok_per_s'])} | {fmt_mean_sd('steps', a['steps'])} |"
        )
    lines += ["", *mde_lines(rep)]
    horizons = sorted({h["horizon"] for a in rep["arms"] for h in a["retrieval"]})
    if horizons:
        any_copy = any(a["has_copy_control"] for a in rep["arms"])
        lines += ["", "## Retrieval top-1 per horizon" + (" (lift over the copy control)" if any_copy else ""), ""]
        if not any_copy:
            lines += ["These runs log no copy control (`retrieval_copy_top1_h{k}`), so no lift is shown.", ""]
        lines += ["| arm | " + " | ".join(f"h{h}" for h in horizons) + " |", "|---|" + "---|" * len(horizons)]
        for a in rep["arms"]:
            if not a["retrieval"]:
                continue
            by_h = {h["horizon"]: h for h in a["retrieval"]}
            cells = [fmt_retrieval(by_h[h], a["has_copy_control"]) if h in by_h else "NA" for h in horizons]
            lines.append(f"| {a['name']} | " + " | ".join(cells) + " |")
    if rep["excluded"]:
        lines += ["", "## Excluded runs (not averaged)", "", "| run | status | step | reason |", "|---|---|---|---|"]
        for e in rep["excluded"]:
            lines.append(f"| {e['name']} | {e['status']} | {e['step']} | {e['reason']} |")
    lines += ["", "## Runs", "", "| run | seed | status | step | val loss | val BPB | eff rank | tok/s | train s | code |", "|---|---|---|---|---|---|---|---|---|---|"]
    for a in rep["arms"]:
        for r in a["runs"]:
            lines.append(
                f"| {r['name']} | {r['train_seed']} | {r['status']} | {r['step']} | {fmt_metric('val_loss', r['val_loss'])} | "
                f"{fmt_metric('val_bpb', r['val_bpb'])} | {fmt_metric('eff_rank', r['eff_rank'])} | {fmt_metric('tok_per_s', r['tok_per_s'])} | "
                f"{fmt_metric('train_time', r['train_time'])} | {' + '.join(r['code']) or 'unknown'} |"
            )
    if rep["code"]["warning"]:
        lines += ["", f"Warning: {rep['code']['warning']}."]
    steps = sorted(set().union(*(set(c["steps"]) for c in rep["curves"].values()))) if rep["curves"] else []
    if steps:
        names = list(rep["curves"])
        lines += ["", "## Mean val BPB by step", "", "| step | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for st in steps:
            row = []
            for n in names:
                c = dict(zip(rep["curves"][n]["steps"], rep["curves"][n]["mean"]))
                row.append(_num(c.get(st)))
            lines.append(f"| {st} | " + " | ".join(row) + " |")
    d = rep["data_order"]
    verdict = {True: "identical batches across arms for every seed", False: "MISMATCH: " + "; ".join(d["mismatches"]), None: "not compared yet"}[d["ok"]]
    lines += ["", f"Data order: {verdict}.", f"Initial weights: {init_text(rep['init'])}.", "", "## What this does not show", ""]
    lines += [f"- {c}" for c in rep["caveats"]]
    if not rep["complete"]:
        lines.append(f"\nIncomplete: some runs have not finished; continue with `jepa ablate --resume {rep['ablation_dir']}`.")
    return "\n".join(lines) + "\n"


def init_text(init: dict[str, Any]) -> str:
    """The init-digest check in words."""
    if init["ok"] is False:
        return "MISMATCH: " + "; ".join(init["mismatches"])
    text = {True: "identical shared weights across arms for every seed compared", None: "not compared yet"}[init["ok"]]
    if init["missing"]:
        text += f" ({len(init['missing'])} run(s) recorded no init digest: {', '.join(init['missing'])})"
    return text


def mde_lines(rep: dict[str, Any]) -> list[str]:
    """What 'no difference' rules out: the minimum detectable effect of each paired comparison."""
    pw, alpha = int(round(rep["power"] * 100)), rep["alpha"]
    head = f"Minimum detectable effect ({pw}% power, two-sided alpha = {alpha}, paired t-test, from the sd of the per-seed differences):"
    rows = [
        f"- `{c['arm']}`: {c['mde']:.4f} BPB at n = {c['n_pairs']} paired seeds (sd of the differences {c['paired']['sd']:.4f})"
        for c in rep["comparisons"]
        if c["mde"] is not None
    ]
    return [head, "", *rows] if rows else [head + " none (no comparison is paired)."]


def write_report(folder: Path) -> dict[str, Any]:
    rep = build_report(folder)
    atomic_write_text(Path(folder) / REPORT_JSON, json.dumps(rep, indent=2, allow_nan=True) + "\n")
    atomic_write_text(Path(folder) / REPORT_MD, report_markdown(rep))
    return rep


# --------------------------------------------------------------------------- running


def batch_digest(x, y) -> str:
    h = hashlib.sha256()
    for t in (x, y):
        a = t.detach().cpu().contiguous().numpy()
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


class RecordingCallbacks:
    """Train callbacks that log a digest of every training batch to run_dir/batches.txt
    (one line "index digest"), then pass every hook on to `inner`."""

    def __init__(self, run_dir: Path, inner=None):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self._log = open(Path(run_dir) / BATCH_LOG, "a", encoding="utf-8", buffering=1)
        self._inner = inner

    def on_batch(self, index: int, x, y) -> None:
        self._log.write(f"{index} {batch_digest(x, y)}\n")
        if self._inner is not None and hasattr(self._inner, "on_batch"):
            self._inner.on_batch(index, x, y)

    def __getattr__(self, name: str):
        # on_prepare / on_start / on_step / on_record: the inner callbacks, or no-ops
        inner = self.__dict__.get("_inner")
        if inner is not None and hasattr(inner, name):
            return getattr(inner, name)
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def close(self) -> None:
        self._log.close()


class AblationCallbacks:
    """Progress hooks for the CLI; the defaults do nothing."""

    def on_begin(self, plan: AblationPlan, todo: list[RunSpec]) -> None:
        pass

    def on_prepare(self, stage: str, done: int, total: int) -> None:  # data preparation, before the first run
        pass

    def on_skip(self, spec: RunSpec, status: str) -> None:
        pass

    def on_jobs(self, jobs: int, threads: int, gpus: tuple[str, ...]) -> None:  # runs at once, only when more than one
        pass

    def on_run_start(self, spec: RunSpec, position: int, total: int, action: str) -> None:
        pass

    def train_callbacks(self, spec: RunSpec):  # -> TrainCallbacks | None
        return None

    def on_run_end(self, spec: RunSpec, status: str, message: str) -> None:
        pass


@dataclass
class AblationOutcome:
    plan: AblationPlan
    report: dict[str, Any]
    stopped: bool  # Ctrl-C / stop file: the ablation did not run every run
    failed: list[str]  # run names that ended "failed"

    @property
    def data_order_ok(self) -> bool | None:
        return self.report["data_order"]["ok"]


def _stop_flag():
    """Ctrl-C between runs stops the ablation before the next run (inside a run, the trainer's own
    handler ends the run with a checkpoint and restores this one afterwards); a second Ctrl-C aborts."""
    import signal

    from .train.stops import SignalFlag

    return SignalFlag(signals=(signal.SIGINT,))


def remaining_budget(run_dir: Path, step: int, budget_s: float) -> float:
    """Seconds of the time budget a run resumed at `step` has left.

    The trainer counts its budget from zero in every process, so a resumed run would get
    the whole budget again; this is the budget minus the step time spent up to `step`
    (steps replayed after the checkpoint are not counted, they are trained again).
    """
    recs = runlog.read_records(run_dir)
    # a resume marker cuts the record of time at the checkpoint, as the next segment will
    spent = runlog.summarize_run(run_dir, recs + [{"type": "event", "event": "resume", "step": step, "from_step": step}]).train_time_to_step or 0.0
    # at least a millisecond: 0 would mean "no budget" to the trainer
    return max(1e-3, budget_s - spent)


def _prepare_run(plan: AblationPlan, spec: RunSpec):
    """(config, resume ref or None, action) for a run that is not done yet."""
    from .rundir import read_latest
    from .train.loop import resolve_resume

    cfg = plan.config_for(spec.arm, spec.seed_index)
    run_dir = plan.run_dir(spec)
    ref = read_latest(run_dir) if run_dir.is_dir() else None
    if ref is not None:
        action = f"resume from step {ref.step}"
        if plan.budget_s > 0:
            left = remaining_budget(run_dir, ref.step, plan.budget_s)
            cfg = plan.config_for(spec.arm, spec.seed_index, [f"train.time_budget_s={left!r}"])
            action += f" ({left:.1f} s of the budget left)"
        cfg, ref = resolve_resume(str(run_dir), cfg, None)
        return cfg, ref, action
    if run_dir.exists():
        # it died before its first checkpoint: nothing to resume, start it over
        shutil.rmtree(run_dir)
        return cfg, None, "restart (no checkpoint)"
    return cfg, None, "start"


def run_ablation(plan: AblationPlan, callbacks: AblationCallbacks | None = None, jobs: int = 1) -> AblationOutcome:
    """Run (or continue) every run of the plan, `jobs` at a time (1: in order, in this process),
    then write report.json and report.md."""
    from .ablate_jobs import check_jobs

    check_jobs(jobs)
    cb = callbacks or AblationCallbacks()
    plan.save()
    todo = []
    for spec in plan.runs():
        s = runlog.summarize_run(plan.run_dir(spec))
        plan.state[spec.name] = {"status": s.status, "step": s.step, "message": s.message}
        if s.status not in DONE:
            todo.append(spec)
    plan.save()
    cb.on_begin(plan, todo)
    for spec in plan.runs():
        if spec not in todo:
            cb.on_skip(spec, plan.state[spec.name]["status"])
    if todo:
        from .data import ensure_prepared

        # prepared once up front, so no run's wall time includes tokenizing the data
        ensure_prepared(plan.config_for(todo[0].arm, todo[0].seed_index).data, progress=cb.on_prepare)
    ran = None
    if jobs > 1 and len(todo) > 1:
        from .ablate_jobs import run_parallel

        ran = run_parallel(plan, todo, cb, jobs)
    stopped, failed = ran if ran is not None else _run_in_process(plan, todo, cb)
    report = write_report(plan.dir)
    return AblationOutcome(plan=plan, report=report, stopped=stopped, failed=failed)


def _run_in_process(plan: AblationPlan, todo: list[RunSpec], cb: AblationCallbacks) -> tuple[bool, list[str]]:
    """The runs one after another through `train(...)` in this process: (stopped, failed run names)."""
    from .train.loop import train

    stopped, failed = False, []
    with _stop_flag() as flag:
        for pos, spec in enumerate(todo):
            if flag.requested:
                stopped = True
                break
            cfg, ref, action = _prepare_run(plan, spec)
            run_dir = plan.run_dir(spec)
            plan.state[spec.name] = {"status": "running", "step": ref.step if ref else 0, "message": "", "action": action}
            plan.save()
            cb.on_run_start(spec, pos, len(todo), action)
            try:
                recorder = RecordingCallbacks(run_dir, cb.train_callbacks(spec))
                try:
                    result = train(cfg, run_dir=run_dir, resume=ref, callbacks=recorder, handle_signals=True)
                finally:
                    recorder.close()
                status, step, message = result.status, result.step, result.message
            except JepaError as e:
                plan.state[spec.name] = {"status": "failed", "step": 0, "message": e.message, "action": action}
                plan.save()
                raise
            except KeyboardInterrupt:
                status, step, message = "interrupted", plan.state[spec.name]["step"], "aborted (second Ctrl-C)"
            except Exception as e:  # a bug in one arm's run; record it and go on with the others
                status, step, message = "failed", 0, f"{type(e).__name__}: {e}"
            plan.state[spec.name] = {"status": status, "step": step, "message": message, "action": action}
            plan.save()
            cb.on_run_end(spec, status, message)
            if status == "failed":
                failed.append(spec.name)
            if status == "interrupted":
                stopped = True
                break
    return stopped, failed
