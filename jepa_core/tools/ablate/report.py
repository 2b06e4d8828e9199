"""The ablation report's numbers: each run read from its files (through `rundir.summary`), the
pairing checked (batch and init digests), paired and Welch tests with Holm, report.json."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

from jepa_core.codeversion import code_label
from jepa_core.fsutil import atomic_write_text
from jepa_core.rundir import utc_now_iso
from jepa_core.rundir.status import COMPLETED, SETTLED
from jepa_core.rundir.summary import summarize_run
from jepa_core.stats import holm, min_detectable_effect, paired_t_test, summarize, welch_t_test

from .markdown import fmt_p, report_markdown
from .plan import BATCH_LOG, REPORT_FORMAT, REPORT_JSON, REPORT_MD, AblationPlan, load_plan

#: Family-wise error rate of the verdicts (Holm-adjusted p-values are compared with it).
ALPHA = 0.05
#: Confidence level of the intervals on the difference to the baseline.
CI_LEVEL = 0.95
#: Power at which the report states the minimum detectable effect of the paired design.
POWER = 0.8

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
    if status in COMPLETED:
        return None if val_bpb is not None else f"{status} without a finite final val BPB"
    if status == "incomplete":
        return "killed: no run_end in its metrics (continue with --resume)"
    if status == "pending":
        return "not run yet"
    return f"{status}: {message}" if message else status


def run_record(run_dir: Path) -> dict[str, Any]:
    """One run's final numbers and its val BPB curve, from its metrics.jsonl (via runlog)."""
    s = summarize_run(run_dir)
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
        # the best eval (what a run with keep_best delivers); the final one when it is the best
        "best_val_bpb": min((b for _, b in s.curve), default=None) if val_bpb is not None else None,
        "best_step": min(s.curve, key=lambda sb: sb[1])[0] if s.curve and val_bpb is not None else None,
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
    expected: list[str] = []  # an arm that starts from another source reads the data with its tokenizer
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
                what = f"seed {i}: arm `{name}` drew a different batch {bad} than `{plan.reference}`"
                by_design = plan.init_source(name, i) != plan.init_source(plan.reference, i)
                (expected if by_design else mismatches).append(what)
                broken.append({"seed_index": i, "arm": name})  # unpaired either way: Welch's test
        per_seed.append({"seed_index": i, "batches": counts})
    # None: nothing to compare yet (one arm ran, or no batches were recorded)
    ok = False if mismatches else (True if compared else None)
    return {"ok": ok, "compared_pairs": compared, "per_seed": per_seed, "mismatches": mismatches, "broken": broken, "expected": expected}


def verify_init(plan: AblationPlan, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Compare each run's init digest (run_start) with the reference arm's, seed by seed.

    `runs` maps run names to `run_record`s. A run without a digest predates it
    (or never started) and is listed as missing, not as a mismatch.
    """
    mismatches, broken, missing, by_design = [], [], [], []
    compared = 0
    for i in range(len(plan.seeds)):
        ref = runs[f"{plan.reference}-s{i}"]["init_digests"]
        ref_source = plan.init_source(plan.reference, i)
        for a in plan.arms:
            name = f"{a.name}-s{i}"
            digs = runs[name]["init_digests"]
            if runs[name]["status"] != "pending" and not digs:
                missing.append(name)
            if a.name == plan.reference or not digs or not ref:
                continue
            source = plan.init_source(a.name, i)
            if source != ref_source:
                # the starting point is this arm's treatment: other weights are expected, and
                # the seed still pairs the runs (same batches; sources of one seed)
                by_design.append({"seed_index": i, "arm": a.name, "init_from": source, "reference_init_from": ref_source})
                continue
            compared += 1
            if set(digs) != set(ref) or len(digs) > 1:
                mismatches.append(f"seed {i}: arm `{a.name}` started from other weights than `{plan.reference}`")
                broken.append({"seed_index": i, "arm": a.name})
    ok = False if mismatches else (True if compared else None)
    return {"ok": ok, "compared_pairs": compared, "mismatches": mismatches, "broken": broken, "missing": missing, "by_design": by_design}


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
        out = f"no detectable difference ({sample}): {diff:+.4f} BPB ({ci}), Holm p = {holm_p}{note}"
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


def _arm_runs(plan: AblationPlan, arm) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """One arm: its summary (runs, mean ± sd of each metric), its excluded runs, its mean val BPB curve."""
    runs, excluded = [], []
    for i, seed in enumerate(plan.seeds):
        name = f"{arm.name}-s{i}"
        r = run_record(plan.dir / name)
        runs.append({"name": name, "arm": arm.name, "seed_index": i, "train_seed": seed, "dir": name, **r})
        if r["excluded"]:
            excluded.append({"name": name, "arm": arm.name, "status": r["status"], "step": r["step"], "reason": r["excluded"]})
    finished = [r for r in runs if not r["excluded"]]
    out = {
        "name": arm.name,
        "origin": arm.origin,
        "overrides": list(arm.overrides),
        "n": len(finished),
        "runs": runs,
        **{key: summarize(r[key] for r in finished).to_dict() for key in ("val_bpb", "best_val_bpb", "val_loss", "eff_rank", "tok_per_s")},
        "steps": summarize(r["step"] for r in finished).to_dict(),
        "train_time": summarize(r["train_time"] for r in finished).to_dict(),
        "retrieval": _horizon_summaries(finished),
        "has_copy_control": any(r["retrieval_copy_top1"] for r in finished),
    }
    # the arm's mean curve over the eval steps every finished seed has
    per_seed = {r["seed_index"]: r["curve"] for r in finished}
    steps = sorted(set.intersection(*(set(s for s, _ in c) for c in per_seed.values()))) if per_seed else []
    lookup = {i: dict(c) for i, c in per_seed.items()}
    mean = [sum(lookup[i][s] for i in lookup) / len(lookup) for s in steps]
    curve = {"steps": steps, "mean": mean, "per_seed": {str(r["seed_index"]): r["curve"] for r in runs}}
    return out, excluded, curve


def _compare_arms(plan: AblationPlan, arms_out: list[dict[str, Any]], metric: str, data_order, init) -> list[dict[str, Any]]:
    """Every arm's `metric` against the reference: paired where the pairing holds, Welch alongside,
    Holm across the arms (each family adjusted on its own)."""
    by_seed = {a["name"]: {r["seed_index"]: r[metric] for r in a["runs"] if not r["excluded"] and r[metric] is not None} for a in arms_out}
    records = {r["name"]: r for a in arms_out for r in a["runs"]}
    comparisons = []
    for arm in plan.arms:
        if arm.name == plan.reference:
            continue
        why = _unpaired_reason(arm.name, plan.reference, by_seed, records, data_order, init)
        comparisons.append(_comparison(arm.name, by_seed[arm.name], by_seed[plan.reference], why, metric))
    for c, adj in zip(comparisons, holm([c["p"] for c in comparisons])):
        c["p_holm"] = adj
    welch = [c["welch"] for c in comparisons if c["welch"] is not None]
    for w, adj in zip(welch, holm([w["p"] for w in welch])):
        w["p_holm"] = adj
    return comparisons


def _comparison_mode(plan: AblationPlan, arms_out: list[dict[str, Any]], family: int) -> dict[str, Any]:
    budget = plan.budget_s
    max_steps = plan.settings.get("train.max_steps")
    comparison = {"mode": "time" if budget > 0 else "steps", "budget_s": budget if budget > 0 else None, "max_steps": max_steps, "family": family}
    if budget > 0:
        comparison["reached_max_steps"] = [
            r["name"] for a in arms_out for r in a["runs"] if not r["excluded"] and max_steps and r["step"] >= max_steps and (r["train_time"] or 0) < 0.98 * budget
        ]
    return comparison


def build_report(folder: Path, reference: str | None = None) -> dict[str, Any]:
    """The comparison of an ablation folder, from its manifest and the runs' metrics files.

    The verdicts compare the final val BPB; `comparisons_best` compares each run's best val BPB
    over its evals the same way (what a run keeping its best checkpoint delivers: the small-data
    question, where later evals overfit). `reference` compares every arm with that arm instead of
    the folder's own (an annealed arm with the constant one); the pairing is checked against it."""
    plan = load_plan(folder).against(reference)
    arms_out, excluded, curves = [], [], {}
    for arm in plan.arms:
        out, ex, curves[arm.name] = _arm_runs(plan, arm)
        arms_out.append(out)
        excluded += ex
    records = {r["name"]: r for a in arms_out for r in a["runs"]}
    data_order, init = verify_data_order(plan), verify_init(plan, records)
    comparisons = _compare_arms(plan, arms_out, "val_bpb", data_order, init)
    family = sum(c["p"] is not None for c in comparisons)
    by_arm = {c["arm"]: c for c in comparisons}
    for a in arms_out:
        a["comparison"] = by_arm.get(a["name"])
        a["verdict"] = "reference" if a["name"] == plan.reference else _verdict(a["name"], plan.reference, by_arm[a["name"]], family)
        out_runs = [r["status"] for r in a["runs"] if r["excluded"]]
        if out_runs:
            counts = ", ".join(f"{out_runs.count(st)} {st}" for st in dict.fromkeys(out_runs))
            a["verdict"] += f"; {len(out_runs)} of {len(a['runs'])} runs excluded ({counts})"
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
        "comparison": _comparison_mode(plan, arms_out, family),
        "alpha": ALPHA,
        "ci_level": CI_LEVEL,
        "arms": arms_out,
        "comparisons": comparisons,
        "comparisons_best": _compare_arms(plan, arms_out, "best_val_bpb", data_order, init),
        "excluded": excluded,
        "curves": curves,
        "power": POWER,
        "data_order": data_order,
        "init": init,
        "code": _code_versions(all_runs),
        "complete": all(r["status"] in SETTLED for r in all_runs),
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


def _comparison(arm: str, vals: dict[int, float], ref_vals: dict[int, float], why: str | None, metric: str = "val_bpb") -> dict[str, Any]:
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
        "metric": metric,
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


def report_paths(folder: Path, reference: str | None = None) -> tuple[Path, Path]:
    """report.json and report.md; against another arm than the folder's own, report-vs-ARM.json and .md."""
    if reference is None:
        return Path(folder) / REPORT_JSON, Path(folder) / REPORT_MD
    return Path(folder) / f"report-vs-{reference}.json", Path(folder) / f"report-vs-{reference}.md"


def write_report(folder: Path, reference: str | None = None) -> dict[str, Any]:
    """Build the report from the folder's files and write it (`report_paths`); the folder's own
    report is left as it is when `reference` names another arm."""
    if reference == load_plan(folder).reference:
        reference = None
    rep = build_report(folder, reference)
    json_path, md_path = report_paths(folder, reference)
    atomic_write_text(json_path, json.dumps(rep, indent=2, allow_nan=True) + "\n")
    atomic_write_text(md_path, report_markdown(rep))
    return rep
