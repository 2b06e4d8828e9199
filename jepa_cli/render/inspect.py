"""Rendering for `jepa inspect`: a summary, the parameter split and a tensor table (or JSON)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from jepa_core.errors import CheckpointError
from jepa_core.units import fmt_bytes

_CATEGORY_LABELS = {
    "backbone": ("backbone", "transformer.* without the LM head"),
    "lm_head": ("LM head", "lm_head, logit_scale, out_bias"),
    "jepa_heads": ("JEPA heads", "jepa.*: online projector, predictor, horizon embedding"),
    "other": ("other", "tensors outside transformer/jepa/teacher"),
}


_ALGORITHM_NAMES = {"adamw": "AdamW", "muon+adamw": "Muon + AdamW", None: "AdamW"}

def run_inspect(path: Path, json_out: bool, show_config: bool, stats: bool, expand: bool = False, verify: bool = False) -> None:
    from jepa_core.tools.inspect import inspect_checkpoint, verification_problem

    report = inspect_checkpoint(path, stats=stats, verify=verify)
    if json_out:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        sys.stdout.flush()
    else:
        _render(report, show_config=show_config, expand=expand)
    if (error := verification_problem(report)) is not None:
        raise error
    if not report.is_jepa:
        # the tensors are shown; the exit code still tells a script this is not a jepa checkpoint
        raise CheckpointError(
            f"{report.path} is a safetensors file but not a jepa checkpoint (no jepa `format` metadata); "
            "only its tensors are shown.",
            hint="jepa checkpoints are the step-*.safetensors files under runs/<run>/checkpoints/.",
        )


# --------------------------------------------------------------------------- formatting


_size = fmt_bytes


def _num(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.4g}" if abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-3) else f"{x:.4f}".rstrip("0").rstrip(".") or "0"
    return str(x)


def _norm(x: float | None, nonfinite: int | None = None) -> str:
    if nonfinite:
        return f"[red]{nonfinite:,} non-finite[/]"
    return "" if x is None else f"{x:.4g}"


def _config_line(s: dict[str, Any]) -> str:
    parts = [
        f"d_model {s.get('d_model')}",
        f"{s.get('n_layers')} layers",
        f"{s.get('n_heads')} heads",
        f"vocab {_num(s.get('vocab_size'))}",
        f"block {s.get('block_size')}",
    ]
    if s.get("run_baseline"):
        parts.append("baseline (LM only)")
    else:
        parts += [
            f"teacher {s.get('teacher')}",
            f"tap {s.get('tap_layer')}",
            f"latent {s.get('latent_dim')}",
            f"horizons {s.get('horizons')}",
        ]
    parts.append("tied" if s.get("weight_tying") else "untied")
    if s.get("dataset"):
        parts.append(f"data {s['dataset']}")
    if s.get("parallel"):
        parts.append(f"trained {s['parallel']}")
    return " · ".join(str(p) for p in parts)


# --------------------------------------------------------------------------- sections


def _render(report, show_config: bool, expand: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    from jepa_cli.console import console

    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")

    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold cyan", no_wrap=True)
    info.add_column()
    kind = f" ({report.kind})" if report.kind else ""
    info.add_row("checkpoint", escape(report.path))
    if report.source:
        info.add_row("", f"[dim]{escape(report.source)}[/]")
    info.add_row(
        "file",
        f"{_size(report.file_size)} · header {_size(report.header_size)} · "
        f"format {escape(report.format or 'none')}{kind}",
    )
    if report.profile is not None:
        info.add_row("profile", escape(report.profile))
    if report.step is not None or report.tokens_seen is not None:
        info.add_row("step", f"[bold]{_num(report.step)}[/] · {_num(report.tokens_seen)} tokens seen")
    if report.created:
        info.add_row("created", escape(report.created))
    if report.init_from:
        from jepa_core.rundir.listing import init_from_label

        label = init_from_label(report.init_from) or "?"
        digest = report.init_from.get("digest")
        info.add_row("started", escape(label) + (f" [dim]· weights {escape(str(digest)[:25])}…[/]" if digest else ""))
    if report.jepa_version or report.torch_version:
        info.add_row("versions", f"jepa {escape(str(report.jepa_version))} · torch {escape(str(report.torch_version))}")
    if report.tokenizer_sha256:
        info.add_row("tokenizer", f"sha256 {escape(report.tokenizer_sha256)}")
    if report.state_file:
        info.add_row("state file", escape(Path(report.state_file).name))
    if len(report.available_steps) > 1:
        info.add_row("checkpoints", "steps " + ", ".join(str(s) for s in report.available_steps) + " in this folder")
    if report.kind == "weights" or report.metrics is not None:
        info.add_row("eval", _metrics_text(report.metrics))
    if report.config_summary:
        hint = "" if show_config else "  [dim](--config shows the full profile)[/]"
        info.add_row("config", escape(_config_line(report.config_summary)) + hint)
    if report.payload_digest:
        info.add_row("digest", escape(report.payload_digest) + ("" if report.verified is not None else "  [dim](--verify checks it)[/]"))
    for v in report.verified or []:
        colour = {"verified": "green", "unverified": "yellow", "failed": "bold red"}[v["status"]]
        label = {"verified": "verified", "unverified": "not verified", "failed": "FAILED"}[v["status"]]
        info.add_row("payload", f"[{colour}]{label}[/] {escape(Path(v['file']).name)}: {escape(v['detail'])}")
    for key, value in report.extra_metadata.items():
        info.add_row(escape(key), escape(value if len(value) <= 200 else value[:200] + "…"))
    console.print(info)

    if show_config and report.config_toml:
        console.print()
        console.print("[bold]resolved config[/]")
        console.print(escape(report.config_toml.rstrip("\n")))

    if report.params is not None:
        console.print()
        console.print(_params_table(report))
    if report.kind == "state":
        console.print()
        _render_state(report)
    console.print()
    console.print(_tensor_table(report, expand=expand))


def _metrics_text(metrics: dict[str, Any] | None) -> str:
    from rich.markup import escape

    from jepa_core.tools.inspect import metric_items

    items = metric_items(metrics)
    if not items:
        return "[dim]no eval yet[/]"
    # one line for the LM metrics, one for retrieval, one for the rest
    lines: dict[int, list[str]] = {}
    for key, value in items:
        if key.startswith("retrieval_copy_top1_h"):
            continue  # shown beside its horizon's top-1
        line = 0 if key.startswith("val_") else 1 if key.startswith("retrieval_") else 2
        text = f"{escape(key)} [bold]{escape(_num(value))}[/]"
        copy = metrics.get("retrieval_copy_top1_h" + key[len("retrieval_top1_h"):]) if key.startswith("retrieval_top1_h") else None
        if isinstance(copy, (int, float)) and isinstance(value, (int, float)):
            # the copy control: the same retrieval with the anchor's own latent as the query
            text += f" (copy {_num(copy)}, lift [bold]{value - copy:+.3f}[/])"
        lines.setdefault(line, []).append(text)
    return "\n".join(" · ".join(parts) for _, parts in sorted(lines.items()))


def _params_table(report):
    from rich.table import Table

    p = report.params
    t = Table(title="parameters", title_justify="left", box=None, padding=(0, 2))
    t.add_column("part", style="cyan")
    t.add_column("params", justify="right")
    t.add_column("share", justify="right")
    t.add_column("what", style="dim")
    total = p["total"] or 1
    for cat in ("backbone", "lm_head", "jepa_heads", "other"):
        if cat == "other" and not p["other"]:
            continue
        if cat == "jepa_heads" and not p["jepa_heads"] and not p["teacher"]:
            continue
        label, what = _CATEGORY_LABELS[cat]
        if cat == "lm_head" and report.tied_embedding:
            what += f"; tied: the embedding {report.tied_embedding} is its weight (counted here)"
        elif cat == "lm_head" and report.weight_tying is False:
            what += "; untied"
        t.add_row(label, f"{p[cat]:,}", f"{100 * p[cat] / total:.1f}%", what)
    t.add_row("[bold]trainable[/]", f"[bold]{p['trainable']:,}[/]", f"{100 * p['trainable'] / total:.1f}%", "")
    if p["teacher"]:
        t.add_row("EMA teacher", f"{p['teacher']:,}", f"{100 * p['teacher'] / total:.1f}%", "teacher.*: EMA copy, not trained")
        t.add_row("[bold]total[/]", f"[bold]{p['total']:,}[/]", "100.0%", "")
    if p["buffers"]:
        t.add_row("buffers", f"{p['buffers']:,}", "", "non-parameter tensors (RoPE tables, masks, integer state)")
    return t


def _render_state(report) -> None:
    from rich.markup import escape
    from rich.table import Table

    from jepa_cli.console import console

    opt = report.optimizer
    if opt is None:
        console.print("[yellow]no optimizer metadata[/]")
    else:
        step = "unknown" if opt["step"] is None else f"{opt['step']:,}"
        console.print(
            f"[bold]optimizer[/]  {_ALGORITHM_NAMES.get(opt.get('algorithm'), escape(str(opt.get('algorithm'))))} step {step} · {len(opt['groups'])} groups · "
            f"{opt['moment_tensors']:,} moment tensors ({_size(opt['moment_bytes'])}) "
            f"for {opt['params_with_moments']:,} parameter tensors"
        )
        for kind, m in opt["moments"].items():
            console.print(f"  [dim]{escape(kind)}: {m['tensors']:,} tensors, {m['elements']:,} elements, {_size(m['bytes'])}[/]")
        if opt["groups"]:
            t = Table(box=None, padding=(0, 2))
            keys = []
            for g in opt["groups"]:
                keys += [k for k in g if k not in ("name", "n_params") and k not in keys]
            t.add_column("group", style="cyan")
            t.add_column("params", justify="right")
            for k in keys:
                t.add_column(k, justify="right")
            for g in opt["groups"]:
                t.add_row(
                    escape(g["name"] or "-"),
                    _num(g["n_params"]),
                    *(escape(_num(g[k]) if not isinstance(g.get(k), list) else str(g[k])) if k in g else "" for k in keys),
                )
            console.print(t)
    if report.rng:
        console.print("[bold]rng[/]  " + " · ".join(f"{escape(k)}: {escape(str(v))}" for k, v in report.rng.items()))
    if report.data is not None:
        console.print("[bold]data position[/]  " + escape(_flat(report.data)))


def _flat(value: Any) -> str:
    """Top-level scalars in full; nested state (e.g. a generator's) as a size only; --json has all of it."""
    if not isinstance(value, dict):
        return _short(value)
    return " · ".join(f"{k}={_short(v)}" for k, v in value.items()) or "{}"


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return f"{{{len(v)} fields}}"
    if isinstance(v, list):
        return f"[{len(v)} items]" if len(v) > 8 else json.dumps(v)
    return str(v)


def _tensor_table(report, expand: bool):
    from rich.markup import escape
    from rich.table import Table

    by_name = {t.name: t for t in report.tensors}
    table = Table(title="tensors", title_justify="left", show_footer=True, header_style="bold")
    n_tensors = report.totals["tensors"]
    table.add_column("name", footer=f"total: {n_tensors:,} tensor{'s' if n_tensors != 1 else ''}")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("params", justify="right", footer=f"{report.totals['params']:,}")
    table.add_column("size", justify="right", footer=_size(report.totals["bytes"]))
    if report.stats:
        table.add_column("norm", justify="right")

    def row(name, shape, dtype, params, nbytes, norm=""):
        table.add_row(name, shape, dtype, params, nbytes, *([norm] if report.stats else []))

    sections: dict[str, list] = {}
    for m in report.modules:
        sections.setdefault(m.section, []).append(m)
    expanded_repeats: set[str] = set()
    for section, modules in sections.items():
        n = sum(len(m.tensors) for m in modules)
        indent = "  " if n > 1 else ""
        if n > 1:
            note = "  [dim](EMA teacher, not trained)[/]" if section == "teacher" else ""
            params = sum(m.params for m in modules)
            row(f"[bold]{escape(section)}[/]{note}", f"[dim]{n} tensors[/]", "", f"[bold]{params:,}[/]", _size(sum(m.nbytes for m in modules)))
        for m in modules:
            tensors = [by_name[t] for t in m.tensors]
            if len(tensors) == 1:
                t = tensors[0]
                row(indent + escape(t.name), _shape(t.shape), t.dtype, f"{t.params:,}", _size(t.nbytes), _norm(t.norm, t.nonfinite))
                continue
            # the first of a repeated block in full, the others one subtotal row each (--all expands them)
            collapse = not expand and (m.repeat in expanded_repeats or m.section == "optim")
            if m.repeat:
                expanded_repeats.add(m.repeat)
            row(
                indent + f"[bold]{escape(m.name)}[/]",
                f"[dim]{len(tensors)} tensors[/]",
                "/".join(sorted({t.dtype for t in tensors})) if collapse else "",
                f"{m.params:,}",
                _size(m.nbytes),
                _norm(m.norm, sum(t.nonfinite or 0 for t in tensors)),
            )
            if collapse:
                continue
            for t in tensors:
                rel = t.name[len(m.name) + 1 :] if t.name.startswith(m.name + ".") else t.name
                row(indent + "  " + escape(rel), _shape(t.shape), t.dtype, f"{t.params:,}", _size(t.nbytes), _norm(t.norm, t.nonfinite))
    return table


def _shape(shape: list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]" if shape else "[] (scalar)"
