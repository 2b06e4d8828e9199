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
        Optional[str],
        typer.Argument(
            help="Dataset alias (`tiny_shakespeare`, `wikitext2`), `text:PATH` for a local file or folder of .txt files, "
            "`hf:OWNER/NAME[:CONFIG]` for a Hugging Face dataset, or `json:PATH` / `parquet:PATH` (a file, a folder or a glob). "
            "Default: the --profile's dataset.",
            autocompletion=complete_dataset,
            show_default=False,
        ),
    ] = None,
    vocab_size: Annotated[
        Optional[int], typer.Option("--vocab-size", "-v", help="BPE vocabulary size, at least 260 (default: the profile's, else 1024).", rich_help_panel="Tokenizer")
    ] = None,
    lowercase: Annotated[
        Optional[bool], typer.Option("--lowercase/--no-lowercase", help="Lowercase text before tokenizing.", rich_help_panel="Tokenizer")
    ] = None,
    tokenizer: Annotated[
        Optional[str],
        typer.Option("--tokenizer", help="Reuse this tokenizer.json (or a run directory's) instead of training one (data.tokenizer).", rich_help_panel="Tokenizer"),
    ] = None,
    sample_bytes: Annotated[
        Optional[int],
        typer.Option(
            "--tokenizer-sample-bytes",
            help="Train the tokenizer on at most this many bytes of the first train documents (data.tokenizer_sample_bytes; default 100 MB).",
            rich_help_panel="Tokenizer",
        ),
    ] = None,
    text_field: Annotated[
        Optional[str], typer.Option("--text-field", help="hf:/json:/parquet: the column holding the text (data.text_field; default `text`).", rich_help_panel="Documents")
    ] = None,
    train_split: Annotated[
        Optional[str], typer.Option("--train-split", help="hf:/json:/parquet: the split to train on (data.train_split; default `train`).", rich_help_panel="Documents")
    ] = None,
    val_split: Annotated[
        Optional[str],
        typer.Option(
            "--val-split",
            help="hf:/json:/parquet: the validation split; `auto` (default) takes `validation` when there is one, else holds out "
            "data.val_fraction of the train documents; `heldout` always holds out (data.val_split).",
            rich_help_panel="Documents",
        ),
    ] = None,
    max_train_tokens: Annotated[
        Optional[int], typer.Option("--max-train-tokens", help="Stop after this many train tokens; 0 = all (data.max_train_tokens).", rich_help_panel="Documents")
    ] = None,
    from_path: Annotated[
        Optional[Path],
        typer.Option(
            "--from",
            help="Read the raw text from this file or folder instead of the mirror or network (for hf:, a local copy of the repository).",
            rich_help_panel="Source",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Rebuild even when cached; accept a mirror file whose sha256 differs.", rich_help_panel="Source")] = False,
    profile: Annotated[
        Optional[str],
        typer.Option(
            "--profile",
            "-p",
            help="Take the dataset and every data setting (vocab size, splits, text field, ...) and the block size (for the length check; default 128) from this profile.",
            autocompletion=complete_profile,
            rich_help_panel="Tokenizer",
        ),
    ] = None,
) -> None:
    """Train the BPE tokenizer and write the token cache for DATASET.

    Sources are tried in order: the cache under $JEPA_HOME, `--from PATH`, the mirror
    directory in $JEPA_DATA_MIRROR, then the network. Document datasets (hf:, json:,
    parquet:) are streamed and tokenized on every core into shards; Ctrl-C keeps the
    finished work, and the same command continues from it.
    """
    from jepa_cli.render.data import run_prepare

    overrides = {
        "vocab_size": vocab_size,
        "lowercase": lowercase,
        "tokenizer": tokenizer,
        "tokenizer_sample_bytes": sample_bytes,
        "text_field": text_field,
        "train_split": train_split,
        "val_split": val_split,
        "max_train_tokens": max_train_tokens,
    }
    run_prepare(dataset, overrides={k: v for k, v in overrides.items() if v is not None}, from_path=from_path, force=force, profile=profile)


@app.command("list")
def list_cmd() -> None:
    """List dataset aliases and prepared caches: source, size, and whether (and where) they are prepared."""
    from jepa_cli.render.data import run_list

    run_list()
