"""The `jepa` command: a Typer app composed of one module per command group.

Start-up matters: nothing here (or in the command modules' top level) imports
torch, datasets, textual or pydantic; each command imports what it needs when
it runs, so `jepa --help` answers at once.
"""

from __future__ import annotations

import os
import sys

import typer

from jepa_cli.commands import ablate, bench, data, export, inspect, preflight, profiles, runs, sample, train, watch

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
sample.register(app)
export.register(app)
runs.register(app)
bench.register(app)


def _click_error_classes() -> tuple[type, type]:
    # Typer vendors click; its UsageError and ClickException are reached through the
    # public BadParameter (a UsageError) rather than a private module path.
    by_name = {c.__name__: c for c in typer.BadParameter.__mro__}
    return by_name["UsageError"], by_name["ClickException"]


def main() -> None:
    from jepa_cli.streams import reopen_closed_std_fds
    from jepa_core.errors import JepaError

    reopen_closed_std_fds()  # `jepa train >&-`: no AttributeError, no file landing on descriptor 1

    usage_error, click_exception = _click_error_classes()
    try:
        # standalone_mode=False: usage errors come back here, to be printed in jepa's own
        # error style instead of Typer's boxed panel (one look for every mistake)
        rv = app(standalone_mode=False, prog_name="jepa")
    except usage_error as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `jepa` / `jepa data`: the help
            e.show()
            sys.exit(2)
        from jepa_cli.console import print_usage_error

        print_usage_error(e)
        sys.exit(e.exit_code)
    except click_exception as e:  # pragma: no cover - no command raises a bare one
        from jepa_cli.console import print_error

        print_error(e.format_message())
        sys.exit(e.exit_code)
    except typer.Abort:
        from jepa_cli.console import print_error

        print_error("Aborted.")
        sys.exit(130)
    except JepaError as e:
        from jepa_cli.console import debug_enabled, print_user_error

        if debug_enabled():
            raise
        from jepa_cli.console import err_console
        from jepa_cli.streams import guard, survive_broken_pipe

        survive_broken_pipe(err_console)  # a gone stderr must not turn exit 2 into Rich's exit 1
        with guard(err_console):
            print_user_error(e)
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
