"""Shared Rich consoles, error rendering and the library-warnings filter."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from rich.console import Console


def _console(stream: TextIO, stderr: bool) -> Console:
    # Piped output (`| tee`, train.log) is read in editors and greps, not on an
    # 80-column screen: Rich's default of 80 columns would split commands and paths
    # mid-word. Without a terminal, lines are never wrapped and tables get room,
    # unless COLUMNS says otherwise.
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty or os.environ.get("COLUMNS", "").isdigit():
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=200)


console = _console(sys.stdout, stderr=False)
err_console = _console(sys.stderr, stderr=True)


def debug_enabled() -> bool:
    return os.environ.get("JEPA_DEBUG", "") not in ("", "0")


def print_error(message: str, hint: str | None = None) -> None:
    """`error: message` and a dim hint: the one style of every user error (jepa's and Typer's usage errors)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}")
    if hint:
        err_console.print(f"[dim]{escape(hint)}[/]")
    sys.stderr.flush()


def print_user_error(exc: BaseException) -> None:
    print_error(getattr(exc, "message", str(exc)), getattr(exc, "hint", None))


def print_usage_error(exc) -> None:
    """A click UsageError (missing argument, unknown option...) in the same style as a JepaError."""
    import re

    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        # Typer writes arguments as {NAME} in usage lines; the help and the README say NAME
        usage = re.sub(r"\{([^{}]+)\}", r"\1", ctx.get_usage()).replace("Usage: ", "usage: ", 1)
        hint = f"{usage}\nSee `{ctx.command_path} --help` for the options and examples."
    else:  # some parser errors (an option missing its value) carry no context
        hint = f"See `{_command_path_from_argv()} --help` for the options and examples."
    print_error(exc.format_message(), hint)


def _command_path_from_argv(argv: list[str] | None = None) -> str:
    """`jepa train` for `jepa train --profile`: the leading words that are not options."""
    words = []
    for a in (sys.argv[1:] if argv is None else argv)[:2]:
        if a.startswith("-"):
            break
        words.append(a)
    return " ".join(["jepa", *words])


def quiet_library_warnings() -> None:
    """Hide torch's (and other libraries') FutureWarning/UserWarning chatter unless --debug.

    They are about APIs jepa calls, not about anything the user can change, and in
    train.log or a pipe they read like errors. `--debug` shows them again.
    """
    if debug_enabled():
        return
    import warnings

    # by category, not module: torch attributes many of its warnings to the caller's line
    # (a jepa_core file), so a module filter would miss them. jepa's own warnings are a
    # UserWarning subclass (DataWarning) and are let through by the last, more specific rule.
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    try:
        from jepa_core.data.sources import DataWarning
    except ImportError:  # pragma: no cover
        return
    warnings.filterwarnings("default", category=DataWarning)
