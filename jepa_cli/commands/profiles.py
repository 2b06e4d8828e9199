"""`jepa profiles list | show NAME`."""

from __future__ import annotations

from typing import Annotated

import typer

from jepa_cli.completion import complete_profile

app = typer.Typer(help="List and show named TOML profiles.", no_args_is_help=True)


@app.command("list")
def list_cmd() -> None:
    """List the profiles found on the search path, with each one's purpose.

    Example: `jepa profiles list`
    """
    from rich.table import Table

    from jepa_cli.console import console
    from jepa_core.profiles import list_profiles, profile_purpose

    table = Table(title="profiles", title_justify="left")
    table.add_column("name", style="bold cyan")
    table.add_column("purpose")
    table.add_column("file", style="dim")
    for name, path in list_profiles().items():
        table.add_row(name, profile_purpose(path), str(path))
    console.print(table)


@app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="Profile name or path to a .toml file.", autocompletion=complete_profile)],
    set_: Annotated[
        list[str],
        typer.Option("--set", "-s", help="Override a key: section.key=value (value read as TOML). Repeatable."),
    ] = [],
    plain: Annotated[bool, typer.Option("--plain", help="Print bare TOML (no colours, no markers).")] = False,
) -> None:
    """Print the resolved profile as TOML; values that differ from the defaults are marked.

    Examples:

    * `jepa profiles show tiny`
    * `jepa profiles show tiny --set optim.lr=1e-3 --set 'jepa.horizons=[2,8]' --set 'jepa.horizon_probs=[0.5,0.5]'`
    * `jepa profiles show tiny --plain > my.toml` (a starting point for your own profile)
    """
    from jepa_cli.console import console
    from jepa_core.config import config_to_toml, load_config, non_default_keys

    cfg = load_config(name, set_)
    text = config_to_toml(cfg)
    if plain:
        typer.echo(text, nl=False)
        return
    from rich.markup import escape

    changed = non_default_keys(cfg)
    section = ""
    console.print(f"[dim]# profile {escape(cfg.name)}; [bold yellow]*[/] marks a value that differs from the default[/]")
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            section = s.strip("[]")
            console.print(f"[bold magenta]{escape(line)}[/]")
            continue
        key = s.split("=", 1)[0].strip() if "=" in s else ""
        dotted = f"{section}.{key}" if section else key
        if key and dotted in changed:
            console.print(f"[yellow]{escape(line)}[/]  [bold yellow]*[/]")
        else:
            console.print(escape(line))
