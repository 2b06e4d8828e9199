"""jepa_cli: the thin Typer front end. Commands parse, call one jepa_core function, render."""
