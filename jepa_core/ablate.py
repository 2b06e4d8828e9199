"""`jepa ablate`: train every arm for every seed, then compare the arms over seeds.

Layout (one ablation folder, each run a normal run directory, so `jepa watch
ABLATION_DIR` can overlay them and `jepa inspect` reads their checkpoints):

    runs/ablate-<profile>-<UTC>/
      manifest.json        profile, arms and their overrides, seeds, per-run status and dir
      base_config.toml     the profile with the global --set applied (arms start from it)
      <arm>-s<i>/          run directory of arm <arm> with seed index i (train.seed = base seed + i)
        ...                config.toml, metrics.jsonl, checkpoints/ as for `jepa train`
        batches.txt        "<batch index> <sha256 of the batch>" per training batch drawn
      report.json, report.md

Fair comparison is checked, not assumed: before anything runs, the settings
that decide the data order, the compute and the evaluation (dataset, vocab,
block and batch size, steps, eval cadence, resolved device and precision,
compile, seed) must be equal across arms; and every training batch is hashed
as it is drawn, so the report can show that the arms of a seed consumed the
same batches in the same order.

Runs execute one after another in this process through `train(...)`. Ctrl-C
(or a `stop` file) ends the current run with a checkpoint and stops the
ablation; `--resume` continues it: finished (and diverged) runs are skipped,
an interrupted run resumes exactly from its last checkpoint, and a run that
died before its first checkpoint is restarted from scratch.

Reading and reporting (`run_summary`, `build_report`) only read files.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import shutil
import signal
import threading
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .config import Config, apply_overrides, config_to_toml, load_config, parse_override, validate
from .errors import CheckpointError, ConfigError, JepaError
from .fsutil import atomic_write_text
from .stats import summarize, welch_t_test

FORMAT = "jepa-ablation/1"
MANIFEST = "manifest.json"
BASE_CONFIG = "base_config.toml"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
BATCH_LOG = "batches.txt"

#: Run statuses that are final: such runs are skipped on --resume.
DONE = ("finished", "diverged")

#: Settings every arm must share (for the same seed index).
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
    "train.compile",
)

#: (key, short label, description) of the compared metrics.
METRICS = (
    ("val_loss", "val loss", "final validation loss (nats/token)"),
    ("val_bpb", "val BPB", "final validation bits per byte"),
    ("retrieval_top1", "top-1", "final retrieval top-1, mean over horizons (NA for the baseline)"),
    ("eff_rank", "eff rank", "final effective rank of the anchor latents (NA for the baseline)"),
    ("tok_per_s", "tok/s", "training throughput, tokens per second of step time"),
    ("wall_s", "wall s", "wall time of the run, seconds"),
)

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# split "a.b=1,c.d=[2,8]" at the commas that start a new section.key= (not inside values)
_OVERRIDE_SPLIT = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\s*=)")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


# --------------------------------------------------------------------------- arms and plan


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "overrides": list(self.overrides)}


DEFAULT_ARMS = (Arm("baseline", ("jepa.run_baseline=true",)), Arm("jepa", ()))


def parse_arm(spec: str) -> Arm:
    """`NAME:section.key=value,section.key=value` (or just `NAME`: the profile as is)."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not _ARM_NAME.match(name):
        raise ConfigError(
            f"Arm `{spec}` needs a name of letters, digits, `_`, `.` or `-` before the colon.",
            hint="Example: --arm barrier:model.grad_barrier=true,jepa.tau=0.2",
        )
    overrides = tuple(s.strip() for s in _OVERRIDE_SPLIT.split(rest) if s.strip()) if rest.strip() else ()
    for item in overrides:
        parse_override(item)  # the form section.key=value, checked now
    return Arm(name, overrides)


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
    created: str = field(default_factory=_now)
    state: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> status record

    def runs(self) -> list[RunSpec]:
        # seed-major: after the first len(arms) runs there is already one comparable set
        return [RunSpec(a.name, i, s) for i, s in enumerate(self.seeds) for a in self.arms]

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def run_dir(self, spec: RunSpec) -> Path:
        return self.dir / spec.name

    def config_for(self, arm: str, seed_index: int) -> Config:
        raw = tomllib.loads(self.base_toml)
        over = [*self.arm(arm).overrides, f"train.seed={self.seeds[seed_index]}"]
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
            "reference": self.reference,
            "seeds": [{"index": i, "train_seed": s} for i, s in enumerate(self.seeds)],
            "settings": self.settings,
            "runs": runs,
            "created": self.created,
            "updated": _now(),
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

    out = {k: _get(cfg, k) for k in SAME_KEYS}
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
            hint="Every arm must see the same data order, steps, evaluation, device, precision and compile setting. "
            "Set these with the global --set, not in an --arm.",
        )
    return ref


def plan_ablation(
    profile: str,
    n_seeds: int,
    arms: list[str] | tuple[str, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
    out: Path | None = None,
) -> AblationPlan:
    """Resolve and check an ablation without touching the disk."""
    if n_seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {n_seeds}.")
    base = load_config(profile, list(overrides))
    arm_list = [parse_arm(a) for a in arms] if arms else list(DEFAULT_ARMS)
    seen: set[str] = set()
    for a in arm_list:
        if any(o.split("=", 1)[0].strip() == "train.seed" for o in a.overrides):
            raise ConfigError(f"Arm `{a.name}` sets train.seed; seeds come from --seeds.", hint="Set the base seed for every arm with --set train.seed=N.")
        if a.name in seen:
            raise ConfigError(f"Two arms are named `{a.name}`.", hint="Give every --arm its own name.")
        seen.add(a.name)
    reference = "baseline" if "baseline" in seen else arm_list[0].name
    folder = Path(out) if out is not None else Path(base.train.out_dir) / f"ablate-{base.name}-{_utc_stamp()}"
    if (folder / MANIFEST).exists():
        raise ConfigError(f"{folder} already holds an ablation.", hint=f"Continue it with --resume {folder}, or choose another --out.")
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not empty.", hint="Choose another --out.")
    seeds = [base.train.seed + i for i in range(n_seeds)]
    plan = AblationPlan(folder, profile, list(overrides), arm_list, seeds, reference, config_to_toml(base))
    plan.settings = check_arms_comparable({a.name: plan.config_for(a.name, 0) for a in arm_list})
    return plan


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
    if m.get("format") != FORMAT:
        raise CheckpointError(f"{folder / MANIFEST} has format {m.get('format')!r}, expected {FORMAT!r}.")
    plan = AblationPlan(
        dir=folder,
        profile=m["profile"],
        overrides=list(m.get("overrides", [])),
        arms=[Arm(a["name"], tuple(a.get("overrides", []))) for a in m["arms"]],
        seeds=[s["train_seed"] for s in sorted(m["seeds"], key=lambda s: s["index"])],
        reference=m["reference"],
        base_toml=base_toml,
        settings=m.get("settings", {}),
        created=m.get("created", _now()),
    )
    for r in m.get("runs", []):
        plan.state[r["name"]] = {k: v for k, v in r.items() if k in ("status", "step", "message", "action")}
    return plan


# --------------------------------------------------------------------------- reading runs (files only)


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as records; unparsable lines (a half-written last line) are skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def run_status(run_dir: Path) -> tuple[str, int, str]:
    """(status, step, message): the last run_end's status; "pending" without a metrics file,
    "incomplete" when the last segment has no run_end (killed)."""
    recs = read_records(run_dir)
    if not recs:
        return ("pending", 0, "")
    status, step, message = "incomplete", 0, ""
    for r in recs:
        if r.get("type") in ("train", "eval"):
            step = max(step, int(r.get("step", 0) or 0))
        elif r.get("type") == "event" and r.get("event") == "run_start":
            status, message = "incomplete", ""
        elif r.get("type") == "event" and r.get("event") == "run_end":
            status, message = str(r.get("status", "failed")), str(r.get("message", ""))
            step = int(r.get("step", step) or step)
    return status, step, message


def _retrieval_top1(ev: dict[str, Any]) -> float | None:
    vals = [v for k, v in ev.items() if re.fullmatch(r"retrieval_top1_h\d+", k) and isinstance(v, (int, float))]
    return sum(vals) / len(vals) if vals else None


def run_summary(run_dir: Path) -> dict[str, Any]:
    """Final metrics, throughput and the val BPB curve of one run, from its metrics.jsonl.

    A resumed run is several segments (run_start ... run_end); eval points past a
    resume step are dropped (they are replayed), throughput sums the segments.
    """
    recs = read_records(run_dir)
    curve: dict[int, float] = {}
    last_eval: dict[str, Any] = {}
    seg_start_tokens = 0
    tokens_trained, train_time, wall = 0, 0.0, 0.0
    segments = 0
    for r in recs:
        kind = r.get("type")
        if kind == "eval":
            last_eval = r
            if isinstance(r.get("val_bpb"), (int, float)):
                curve[int(r["step"])] = float(r["val_bpb"])
        elif kind == "event":
            ev = r.get("event")
            if ev == "run_start":
                segments += 1
                seg_start_tokens = int(r.get("start_step", 0) or 0) * int(r.get("tokens_per_step", 0) or 0)
            elif ev == "resume":
                s = int(r.get("from_step", 0) or 0)
                curve = {k: v for k, v in curve.items() if k <= s}
                if last_eval and int(last_eval.get("step", 0)) > s:
                    last_eval = {}
            elif ev == "run_end":
                tokens_trained += max(0, int(r.get("tokens", 0) or 0) - seg_start_tokens)
                train_time += float(r.get("train_time", 0.0) or 0.0)
                wall += float(r.get("wall_s", 0.0) or 0.0)
    status, step, message = run_status(run_dir)
    return {
        "status": status,
        "step": step,
        "message": message,
        "segments": segments,
        "val_loss": last_eval.get("val_loss"),
        "val_bpb": last_eval.get("val_bpb"),
        "retrieval_top1": _retrieval_top1(last_eval),
        "eff_rank": last_eval.get("eff_rank"),
        "tok_per_s": tokens_trained / train_time if train_time > 0 else None,
        "wall_s": wall if wall > 0 else None,
        "final_step": last_eval.get("step"),
        "curve": sorted(curve.items()),
    }


def read_batch_log(run_dir: Path) -> dict[int, str]:
    """Batch index -> digest; a batch replayed after a crash keeps its last digest."""
    out: dict[int, str] = {}
    try:
        text = (Path(run_dir) / BATCH_LOG).read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            out[int(parts[0])] = parts[1]
    return out


def verify_data_order(plan: AblationPlan) -> dict[str, Any]:
    """Compare the recorded batch digests of every arm with the reference arm, seed by seed."""
    per_seed = []
    mismatches = []
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
        per_seed.append({"seed_index": i, "batches": counts})
    # None: nothing to compare yet (one arm ran, or no batches were recorded)
    ok = False if mismatches else (True if compared else None)
    return {"ok": ok, "compared_pairs": compared, "per_seed": per_seed, "mismatches": mismatches}


# --------------------------------------------------------------------------- report


def build_report(folder: Path) -> dict[str, Any]:
    """The comparison of an ablation folder, from its manifest and the runs' metrics files."""
    plan = load_plan(folder)
    arms_out = []
    values: dict[str, dict[str, list]] = {}
    curves: dict[str, Any] = {}
    for arm in plan.arms:
        runs = []
        for i, seed in enumerate(plan.seeds):
            name = f"{arm.name}-s{i}"
            s = run_summary(plan.dir / name)
            runs.append({"name": name, "seed_index": i, "train_seed": seed, "dir": name, **s})
        finished = [r for r in runs if r["status"] == "finished"]
        values[arm.name] = {k: [r[k] for r in finished] for k, _, _ in METRICS}
        summary = {k: summarize(values[arm.name][k]).to_dict() for k, _, _ in METRICS}
        arms_out.append({"name": arm.name, "overrides": list(arm.overrides), "runs": runs, "summary": summary})
        # the arm's mean curve over the eval steps every finished seed has
        per_seed = {r["seed_index"]: r["curve"] for r in finished}
        steps = sorted(set.intersection(*(set(s for s, _ in c) for c in per_seed.values()))) if per_seed else []
        lookup = {i: dict(c) for i, c in per_seed.items()}
        mean = [sum(lookup[i][s] for i in lookup) / len(lookup) for s in steps]
        curves[arm.name] = {"steps": steps, "mean": mean, "per_seed": {str(r["seed_index"]): r["curve"] for r in runs}}
    comparisons = []
    for arm in plan.arms:
        if arm.name == plan.reference:
            continue
        for key, _, _ in METRICS:
            a, b = values[arm.name][key], values[plan.reference][key]
            sa, sb = summarize(a), summarize(b)
            res = welch_t_test(a, b)
            comparisons.append(
                {
                    "arm": arm.name,
                    "metric": key,
                    "diff": (sa.mean - sb.mean) if sa.mean is not None and sb.mean is not None else None,
                    "t": res.t if res else None,
                    "df": res.df if res else None,
                    "p": res.p if res else None,
                    "n_arm": sa.n,
                    "n_ref": sb.n,
                }
            )
    all_runs = [r for a in arms_out for r in a["runs"]]
    return {
        "format": "jepa-ablation-report/1",
        "ablation_dir": str(plan.dir),
        "profile": plan.profile,
        "overrides": plan.overrides,
        "reference": plan.reference,
        "seeds": plan.seeds,
        "settings": plan.settings,
        "metrics": [{"key": k, "label": l, "description": d} for k, l, d in METRICS],
        "arms": arms_out,
        "comparisons": comparisons,
        "curves": curves,
        "data_order": verify_data_order(plan),
        "complete": all(r["status"] in DONE for r in all_runs),
        "created": _now(),
    }


def _num(v: Any, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "NA" if v is None else str(v)
    return format(v, spec)


def fmt_metric(key: str, v: Any) -> str:
    if key == "tok_per_s":
        return _num(v, ",.0f")
    if key == "wall_s":
        return _num(v, ".1f")
    if key == "eff_rank":
        return _num(v, ".2f")
    return _num(v, ".4f")


def fmt_p(p: float | None) -> str:
    if p is None:
        return "NA"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def report_markdown(rep: dict[str, Any]) -> str:
    labels = {m["key"]: m["label"] for m in rep["metrics"]}
    keys = [m["key"] for m in rep["metrics"]]
    s = rep["settings"]
    lines = [
        f"# Ablation: profile `{rep['profile']}`",
        "",
        f"Folder `{rep['ablation_dir']}`; seeds {rep['seeds']} (train.seed); reference arm `{rep['reference']}`.",
        f"Shared settings: dataset `{s.get('data.dataset')}`, block {s.get('data.block_size')}, batch {s.get('train.batch_size')}"
        f" x {s.get('train.grad_accum_steps')}, {s.get('train.max_steps')} steps, {s.get('device')} {s.get('precision')}"
        f", compile {s.get('train.compile')}." if s else "",
        "",
        "## Per arm (mean ± std over finished seeds)",
        "",
        "| arm | overrides | n | " + " | ".join(labels[k] for k in keys) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    for a in rep["arms"]:
        cells = []
        for k in keys:
            sm = a["summary"][k]
            cells.append(fmt_metric(k, sm["mean"]) + (f" ± {fmt_metric(k, sm['std'])}" if sm["std"] is not None else ""))
        n = a["summary"]["val_loss"]["n"]
        lines.append(f"| {a['name']} | {', '.join(a['overrides']) or '(profile)'} | {n} | " + " | ".join(cells) + " |")
    lines += ["", f"## Difference to `{rep['reference']}` (Welch's t-test, two-sided)", "", "| arm | metric | diff | p | seeds (arm/ref) |", "|---|---|---|---|---|"]
    for c in rep["comparisons"]:
        if c["diff"] is None:
            continue  # a metric one side lacks (retrieval and rank of a baseline)
        lines.append(f"| {c['arm']} | {labels[c['metric']]} | {fmt_metric(c['metric'], c['diff']) if c['diff'] is not None else 'NA'} | {fmt_p(c['p'])} | {c['n_arm']}/{c['n_ref']} |")
    lines += ["", "## Runs", "", "| run | arm | seed | status | step | val loss | val BPB | top-1 | tok/s |", "|---|---|---|---|---|---|---|---|---|"]
    for a in rep["arms"]:
        for r in a["runs"]:
            lines.append(
                f"| {r['name']} | {a['name']} | {r['train_seed']} | {r['status']} | {r['step']} | {fmt_metric('val_loss', r['val_loss'])} | "
                f"{fmt_metric('val_bpb', r['val_bpb'])} | {fmt_metric('retrieval_top1', r['retrieval_top1'])} | {fmt_metric('tok_per_s', r['tok_per_s'])} |"
            )
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
    lines += ["", f"Data order: {verdict}."]
    if not rep["complete"]:
        lines.append(f"\nIncomplete: some runs have not finished; continue with `jepa ablate --resume {rep['ablation_dir']}`.")
    return "\n".join(lines) + "\n"


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


class _StopFlag:
    """Ctrl-C between runs stops the ablation before the next run (inside a run, the trainer's handler
    ends the run with a checkpoint and restores this one afterwards)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _prepare_run(plan: AblationPlan, spec: RunSpec):
    """(config, resume ref or None, action) for a run that is not done yet."""
    from .train.loop import resolve_resume
    from .train.rundir import read_latest

    cfg = plan.config_for(spec.arm, spec.seed_index)
    run_dir = plan.run_dir(spec)
    ref = read_latest(run_dir) if run_dir.is_dir() else None
    if ref is not None:
        cfg, ref = resolve_resume(str(run_dir), cfg, None)
        return cfg, ref, f"resume from step {ref.step}"
    if run_dir.exists():
        # it died before its first checkpoint: nothing to resume, start it over
        shutil.rmtree(run_dir)
        return cfg, None, "restart (no checkpoint)"
    return cfg, None, "start"


def run_ablation(plan: AblationPlan, callbacks: AblationCallbacks | None = None) -> AblationOutcome:
    """Run (or continue) every run of the plan in order, then write report.json and report.md."""
    from .train.loop import train

    cb = callbacks or AblationCallbacks()
    plan.save()
    todo = []
    for spec in plan.runs():
        status, step, message = run_status(plan.run_dir(spec))
        plan.state[spec.name] = {"status": status, "step": step, "message": message}
        if status not in DONE:
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
    stopped, failed = False, []
    with _StopFlag() as flag:
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
    report = write_report(plan.dir)
    return AblationOutcome(plan=plan, report=report, stopped=stopped, failed=failed)
