"""`jepa export RUN_OR_CHECKPOINT OUT [--format hf] [--dtype float32] [--force]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jepa_cli.commands import CheckpointArg


def export(
    run: CheckpointArg,
    out: Annotated[Path, typer.Argument(metavar="OUT", help="The folder to write (created when missing).", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="hf: the Hugging Face layout (LlamaForCausalLM), for transformers, lm-evaluation-harness, vLLM.")] = "hf",
    dtype: Annotated[str, typer.Option("--dtype", help="Weights dtype: float32 (exactly the trained weights), bfloat16 or float16.")] = "float32",
    force: Annotated[bool, typer.Option("--force", help="Overwrite the files of an earlier export in OUT.")] = False,
) -> None:
    """Write a checkpoint's language model in the Hugging Face format, as LlamaForCausalLM.

    OUT gets config.json, model.safetensors, generation_config.json, tokenizer.json and
    tokenizer_config.json: `AutoModelForCausalLM.from_pretrained(OUT)` and
    `AutoTokenizer.from_pretrained(OUT)` load it with no remote code. Only the LM is exported;
    the JEPA heads and the EMA teacher are training-time parts and are left out. A setting
    Llama has no place for (a JEPA arm's lm_bridge, a non-zero logit bias) is refused,
    naming it; train with `--set model.lm_bridge=false --set model.logit_bias=false` to
    export.

    Examples:

    * `jepa export runs/tiny-20250101-120000 exports/tiny --format hf`
    * `jepa export runs/tiny-20250101-120000:best exports/tiny-best --dtype bfloat16`
    * `lm_eval --model hf --model_args pretrained=exports/tiny --tasks lambada_openai` (evaluate it)
    """
    from jepa_cli.render.export import run_export

    run_export(run, out, fmt=fmt, dtype=dtype, force=force)


def register(app: typer.Typer) -> None:
    app.command("export", rich_help_panel="Checks")(export)
