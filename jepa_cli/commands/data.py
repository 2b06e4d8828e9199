"""`jepa data prepare DATASET` and `jepa data list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jepa_cli.completion import complete_dataset, complete_profile

app = typer.Typer(help="Prepare and list datasets (tokenizer + token cache).", no_args_is_help=True)


@app.command("prepare")
def prepare_cmd(
    dataset: Annotated[
        str,
        typer.Argument(
            help="Dataset alias (`tiny_shakespeare`, `wikitext2`) or `text:PATH` for a local file or folder of .txt files.",
            autocompletion=complete_dataset,
        ),
    ],
    vocab_size: Annotated[
        Optional[int], typer.Option("--vocab-size", "-v", help="BPE vocabulary size, at least 260 (default: the profile's, else 1024).", rich_help_panel="Tokenizer")
    ] = None,
    lowercase: Annotated[
        Optional[bool], typer.Option("--lowercase/--no-lowercase", help="Lowercase text before tokenizing.", rich_help_panel="Tokenizer")
    ] = None,
    from_path: Annotated[
        Optional[Path], typer.Option("--from", help="Read the raw text from this file or folder instead of the mirror or network.", rich_help_panel="Source")
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Rebuild even when cached; accept a mirror file whose sha256 differs.", rich_help_panel="Source")] = False,
    profile: Annotated[
        Optional[str], typer.Option("--profile", "-p", help="Take vocab size, lowercasing, split settings and the block size (for the length check; default 128) from this profile.", autocompletion=complete_profile, rich_help_panel="Tokenizer")
    ] = None,
) -> None:
    """Train the BPE tokenizer and write the token cache for DATASET.

    Sources are tried in order: the cache under $JEPA_HOME, `--from PATH`, the mirror
    directory in $JEPA_DATA_MIRROR, then the network.
    """
    from jepa_cli.render.data import run_prepare

    run_prepare(dataset, vocab_size=vocab_size, lowercase=lowercase, from_path=from_path, force=force, profile=profile)


@app.command("list")
def list_cmd() -> None:
    """List dataset aliases: source, size, and whether (and where) they are prepared."""
    from jepa_cli.render.data import run_list

    run_list()
