"""`jepa sample RUN_OR_CHECKPOINT [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from jepa_cli.commands import CheckpointArg

# the defaults of jepa_core.tools.sample, repeated here so that `--help` imports no torch
DEFAULT_TOKENS = 200
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 50
MAX_TOKENS = 1_000_000


def sample(
    run: CheckpointArg,
    prompt: Annotated[
        Optional[str],
        typer.Option("--prompt", "-p", help="Text to continue (default: the run's train.sample_prompt, a newline). `-` reads it from stdin."),
    ] = None,
    tokens: Annotated[int, typer.Option("--tokens", "-n", help=f"Tokens to generate: 1 to {MAX_TOKENS:,}.")] = DEFAULT_TOKENS,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Softmax temperature; 0 is greedy (always the likeliest token).")] = DEFAULT_TEMPERATURE,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Sample among the K likeliest tokens; 0: the whole vocabulary.")] = DEFAULT_TOP_K,
    seed: Annotated[
        Optional[int], typer.Option("--seed", "-s", help="Seed of the sampler: the same seed gives the same text (on the same device). Default: a fresh one, printed at the end.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda, cuda:N or mps.")] = "auto",
) -> None:
    """Generate text from a trained checkpoint, streamed to the terminal as it is sampled.

    The model is rebuilt from the config stored in the checkpoint, with the run's own
    tokenizer.json; no profile is needed. The text goes to stdout (pipe it anywhere);
    what was loaded and the seed go to stderr.

    Examples:

    * `jepa sample runs/tiny-20250101-120000`
    * `jepa sample runs/tiny-20250101-120000 --prompt "ROMEO:" --tokens 300 --seed 1`
    * `jepa sample runs/tiny-20250101-120000:best --temperature 0` (greedy, from the best checkpoint)
    * `echo "To be, or not" | jepa sample runs/tiny-20250101-120000 --prompt -`
    """
    from jepa_cli.render.sample import run_sample

    run_sample(run, prompt=prompt, tokens=tokens, temperature=temperature, top_k=top_k, seed=seed, device=device)


def register(app: typer.Typer) -> None:
    app.command("sample", rich_help_panel="Checks")(sample)
