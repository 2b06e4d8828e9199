"""`jepa export RUN_OR_CHECKPOINT OUT [--format hf] [--dtype float32] [--force]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jepa_cli.commands import CheckpointArg


def export(
    run: CheckpointArg,
    out: Annotated[Path, typer.Argument(metavar="OUT", help="The folder to write (created when missing).", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="hf: the Hugging Face layout (LlamaForCausalLM, or JepaForCausalLM with its modeling file), for transformers and lm-evaluation-harness.")] = "hf",
    dtype: Annotated[str, typer.Option("--dtype", help="Weights dtype: float32 (exactly the trained weights), bfloat16 or float16.")] = "float32",
    force: Annotated[bool, typer.Option("--force", help="Overwrite the files of an earlier export in OUT.")] = False,
) -> None:
    """Write a checkpoint's language model in the Hugging Face format.

    OUT gets config.json, model.safetensors, generation_config.json, tokenizer.json and
    tokenizer_config.json. A Llama-compatible LM is written as LlamaForCausalLM:
    `AutoModelForCausalLM.from_pretrained(OUT)` loads it with no remote code (vLLM too). An LM
    with parts Llama has no place for (a JEPA arm's lm_bridge, a learned logit bias: the
    defaults) is written as JepaForCausalLM with its modeling file, modeling_jepa.py: load it
    with `trust_remote_code=True`. The output says which and why. Only the LM is exported; the
    JEPA heads and the EMA teacher are training-time parts and are left out.

    Examples:

    * `jepa export runs/tiny-20250101-120000 exports/tiny --format hf`
    * `jepa export runs/tiny-20250101-120000:best exports/tiny-best --dtype bfloat16`
    * `lm_eval --model hf --model_args pretrained=exports/tiny,trust_remote_code=True --tasks lambada_openai` (evaluate it)
    """
    from jepa_cli.render.export import run_export

    run_export(run, out, fmt=fmt, dtype=dtype, force=force)


def register(app: typer.Typer) -> None:
    app.command("export", rich_help_panel="Checks")(export)
