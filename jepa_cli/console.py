"""Shared Rich consoles and error rendering."""

from __future__ import annotations

import os
import sys

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def debug_enabled() -> bool:
    return os.environ.get("JEPA_DEBUG", "") not in ("", "0")


def print_user_error(exc: BaseException) -> None:
    from rich.markup import escape

    message = getattr(exc, "message", str(exc))
    hint = getattr(exc, "hint", None)
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    if hint:
        err_console.print(f"[dim]{escape(hint)}[/]")
    sys.stderr.flush()
