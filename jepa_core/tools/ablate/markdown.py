"""The ablation report in words: number formats, verdict lines and report.md (from report.json alone)."""

from __future__ import annotations

import copy
import math
from typing import Any

from .plan import setting_text


def precision_if_shared(settings: dict[str, Any]) -> str:
    """", precision bf16" for the checked-equal line; nothing when each arm has its own (PER_ARM_SETTINGS)."""
    return "" if isinstance(settings.get("precision"), dict) else f", precision {settings.get('precision')}"


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
            f"{s.get('device')}{precision_if_shared(s)}, compile {s.get('train.compile')}."
        )
        if isinstance(s.get("precision"), dict):
            lines.append(f"Precision per arm (the treatment): {setting_text(s, 'precision')}.")
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
    lines += ["", *mde_lines(rep), *best_lines(rep)]
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
    lines += ["", f"Data order: {data_order_text(rep['data_order'])}.", f"Initial weights: {init_text(rep['init'])}.", "", "## What this does not show", ""]
    lines += [f"- {c}" for c in rep["caveats"]]
    if not rep["complete"]:
        lines.append(f"\nIncomplete: some runs have not finished; continue with `jepa ablate --resume {rep['ablation_dir']}`.")
    return "\n".join(lines) + "\n"


def data_order_text(d: dict[str, Any]) -> str:
    """The batch-digest check in words."""
    if d["ok"] is False:
        return "MISMATCH: " + "; ".join(d["mismatches"])
    text = {True: "identical batches across arms for every seed compared", None: "not compared yet"}[d["ok"]]
    designed = sorted({m.split("`")[1] for m in d.get("expected", [])})
    if designed:
        text += (f"; {', '.join(f'`{a}`' for a in designed)} start(s) from another source (train.init_from) and read the "
                 "data with that source's tokenizer, or one of its own: other batches by design, compared with Welch's test")
    return text


def init_text(init: dict[str, Any]) -> str:
    """The init-digest check in words."""
    if init["ok"] is False:
        return "MISMATCH: " + "; ".join(init["mismatches"])
    text = {True: "identical shared weights across arms for every seed compared", None: "not compared yet"}[init["ok"]]
    if init["missing"]:
        text += f" ({len(init['missing'])} run(s) recorded no init digest: {', '.join(init['missing'])})"
    designed = sorted({d["arm"] for d in init.get("by_design", [])})
    if designed:
        text += (f"; {', '.join(f'`{a}`' for a in designed)} start(s) from another source by design (train.init_from), "
                 "compared seed by seed where their batches match the reference's")
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


def best_lines(rep: dict[str, Any]) -> list[str]:
    """The comparison on each run's best val BPB over its evals, when that differs from the final
    one somewhere (runs that got worse before the end: overfitting, many passes over small data)."""
    runs = [r for a in rep["arms"] for r in a["runs"] if not r["excluded"]]
    if not any(r.get("best_val_bpb") is not None and r["best_val_bpb"] < r["val_bpb"] for r in runs):
        return []
    ref = rep["reference"]
    by_arm = {c["arm"]: c for c in rep.get("comparisons_best", [])}
    lines = [
        "",
        f"## Best val BPB (each run's best eval, what `train.keep_best` keeps; diff = arm - {ref}, paired where the pairing holds, Holm over the arms)",
        "",
        "| arm | n | best val BPB | test | diff (CI) | p | Holm p |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in rep["arms"]:
        c = by_arm.get(a["name"])
        lines.append(
            f"| {a['name']} | {a['n']} | {fmt_mean_sd('val_bpb', a.get('best_val_bpb') or {})} | {(c['test'] or 'none') if c else ''} | "
            f"{fmt_diff(c) if c else '(reference)'} | {fmt_p(c['p']) if c else ''} | {fmt_p(c['p_holm']) if c else ''} |"
        )
    return lines
