"""The `jepa` command: a Typer app composed of one module per command group.

Start-up matters: nothing here (or in the command modules' top level) imports
torch, datasets, textual or pydantic; each command imports what it needs when
it runs, so `jepa --help` answers at once.
"""

from __future__ import annotations

import os
import sys

import typer

from jepa_cli.commands import ablate, bench, data, inspect, preflight, profiles, train, watch

app = typer.Typer(
    name="jepa",
    help=(
        "Train small decoder-only language models with an auxiliary JEPA objective.\n\n"
        "Typical session: `jepa data prepare tiny_shakespeare`, `jepa train --profile tiny`, "
        "`jepa watch runs/<run>` from another terminal, `jepa inspect runs/<run>`."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from jepa_core import __version__

        typer.echo(f"jepa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.", envvar="JEPA_DEBUG"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    if debug:
        os.environ["JEPA_DEBUG"] = "1"


app.add_typer(data.app, name="data", rich_help_panel="Data")
app.add_typer(profiles.app, name="profiles", rich_help_panel="Profiles")
train.register(app)
watch.register(app)
preflight.register(app)
ablate.register(app)
inspect.register(app)
bench.register(app)


def main() -> None:
    from jepa_core.errors import JepaError

    try:
        app()
    except JepaError as e:
        from jepa_cli.console import debug_enabled, print_user_error

        if debug_enabled():
            raise
        print_user_error(e)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
