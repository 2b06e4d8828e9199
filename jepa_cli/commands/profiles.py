"""`jepa profiles list | show NAME | new NAME --from PROFILE`."""

from __future__ import annotations

from typing import Annotated

import typer

from jepa_cli.completion import complete_profile

app = typer.Typer(help="List, show and copy named TOML profiles.", no_args_is_help=True)


@app.command("list")
def list_cmd() -> None:
    """List the profiles found on the search path: each one's purpose, where it comes from and its file.

    Search order: `$JEPA_PROFILES`, `./profiles`, the user's folder (`~/.config/jepa/profiles`,
    or `$XDG_CONFIG_HOME/jepa/profiles`), `$JEPA_HOME/profiles`, then the shipped profiles;
    the first profile of a name wins, and `from` says which folder that was.

    Example: `jepa profiles list`
    """
    from rich.markup import escape
    from rich.table import Table

    from jepa_cli.console import console
    from jepa_core.profiles import profile_entries, profile_purpose

    table = Table(title="profiles", title_justify="left")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("purpose")
    table.add_column("from", no_wrap=True)
    table.add_column("file", style="dim")
    for e in profile_entries():
        origin = e.source + (f" [dim](over {', '.join(e.shadows)})[/]" if e.shadows else "")
        table.add_row(escape(e.name), escape(profile_purpose(e.path)), origin, escape(str(e.path)))
    console.print(table)


@app.command("new")
def new_cmd(
    name: Annotated[str, typer.Argument(help="Name of the new profile (its file is NAME.toml in the user's folder).")],
    from_: Annotated[
        str,
        typer.Option("--from", "-f", help="Profile to copy: a name or a path to a .toml file.", autocompletion=complete_profile),
    ] = "tiny",
) -> None:
    """Write an editable copy of a profile into the user's folder (never overwrites).

    The folder is `$XDG_CONFIG_HOME/jepa/profiles` (default `~/.config/jepa/profiles`);
    profiles there are found from any directory. A copy named like the profile it
    copies takes its place: `jepa profiles new tiny --from tiny` makes `tiny` yours.

    Examples:

    * `jepa profiles new my-tiny --from tiny`, then edit the file and `jepa train --profile my-tiny`
    * `jepa profiles new big --from gpt2-small`
    """
    from rich.markup import escape

    from jepa_cli.console import console
    from jepa_core.profiles import find_profile, new_profile, source_of

    dest, src = new_profile(name, from_)
    console.print(f"wrote [bold]{escape(str(dest))}[/] (a copy of {escape(str(src))})", soft_wrap=True)
    winner = find_profile(name)
    if winner is not None and winner.resolve() != dest.resolve():
        # an earlier folder on the search path has this name: say so, or the edits seem to do nothing
        console.print(
            f"[yellow]note:[/] `--profile {escape(name)}` still loads {escape(str(winner))} "
            f"({source_of(winner) or 'elsewhere'} comes first on the search path); rename one of them.",
            soft_wrap=True,
        )
    else:
        console.print(f"Edit it, then: jepa train --profile {escape(name)}", soft_wrap=True)


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
