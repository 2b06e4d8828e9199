"""`jepa export`: write the export, then say what was written, what was left out and how to use it."""

from __future__ import annotations

from pathlib import Path

from jepa_cli.console import console, err_console, quiet_library_warnings


def run_export(run: str, out: Path, *, fmt: str, dtype: str, force: bool) -> None:
    quiet_library_warnings()
    from rich.markup import escape

    from jepa_core.tools.export import check_export_args, export_hf

    check_export_args(fmt, dtype)  # before the (slower) load
    r = export_hf(run, out, dtype=dtype, force=force)
    where = f"{r.source}" + (f" ({r.note})" if r.note else "")
    console.print(f"[dim]{escape(where)} · step {r.step}[/]")
    for n in r.integrity:
        err_console.print(f"[yellow]note:[/] {escape(n)}")
    console.print(f"[bold green]exported[/] {escape(str(r.out))} as {r.architecture} ({r.lm_params:,} parameters, {r.dtype})")
    console.print(f"  files: {', '.join(r.files)}")
    if r.left_out:
        console.print(
            f"  LM only: the JEPA heads, the tap norm and the EMA teacher ({r.left_out:,} parameters) are "
            "training-time parts and are not exported"
        )
    else:
        console.print("  LM only (an LM-only run: nothing left out)")
    for n in r.notes:
        console.print(f"  {escape(n)}")
    q = escape(str(r.out))
    if r.architecture == "LlamaForCausalLM":
        console.print(f"[dim]load:     AutoModelForCausalLM.from_pretrained({str(r.out)!r}), AutoTokenizer.from_pretrained(...)[/]")
        console.print(f"[dim]evaluate: lm_eval --model hf --model_args pretrained={q} --tasks lambada_openai[/]")
    else:
        console.print(f"[dim]load:     AutoModelForCausalLM.from_pretrained({str(r.out)!r}, trust_remote_code=True), AutoTokenizer.from_pretrained(...)[/]")
        console.print(f"[dim]evaluate: lm_eval --model hf --model_args pretrained={q},trust_remote_code=True --tasks lambada_openai[/]")
