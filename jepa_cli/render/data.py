"""Rendering for `jepa data prepare` and `jepa data list`.

Progress and warnings go to stderr, the summary tables to stdout, so
`jepa data prepare ... > summary.txt` keeps a clean record.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from jepa_cli.console import console, err_console

_STAGES = {
    "read": "reading text",
    "download": "downloading",
    "tokenizer": "training BPE tokenizer",
    "encode": "encoding tokens",
    "write": "writing cache",
}


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _short(path: str | Path) -> str:
    """A path relative to the cwd or with ~ for the home directory, when that is shorter."""
    p = Path(path)
    options = [str(p)]
    if p.is_absolute():
        with contextlib.suppress(ValueError):
            options.append(os.path.relpath(p))
        with contextlib.suppress(ValueError):
            options.append("~/" + str(p.relative_to(Path.home())))
    return min(options, key=len)


class _StageProgress:
    """A Rich progress bar with one task per stage, created when the stage first reports."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "_StageProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        task = self.tasks.get(stage)
        if task is None:
            task = self.progress.add_task(_STAGES.get(stage, stage), total=total or None)
            self.tasks[stage] = task
        self.progress.update(task, completed=done, total=total or None)

    def warn(self, message: str) -> None:
        # through the progress console so the live bar is redrawn below the message
        self.progress.console.print(f"[bold yellow]warning:[/] {escape(message)}")


def _data_config(dataset: str, vocab_size: int | None, lowercase: bool | None, profile: str | None):
    from pydantic import ValidationError

    from jepa_core.config import DataConfig, load_config
    from jepa_core.data import check_vocab_size
    from jepa_core.errors import DataError

    if vocab_size is not None:
        check_vocab_size(vocab_size)
    base = load_config(profile).data if profile else DataConfig()
    raw = base.model_dump()
    raw["dataset"] = dataset
    if vocab_size is not None:
        raw["vocab_size"] = vocab_size
    if lowercase is not None:
        raw["lowercase"] = lowercase
    try:
        return DataConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise DataError(f"Invalid {key}: {err['msg']} (got {err.get('input')!r}).") from None


def run_prepare(
    dataset: str,
    *,
    vocab_size: int | None = None,
    lowercase: bool | None = None,
    from_path: Path | None = None,
    force: bool = False,
    profile: str | None = None,
) -> None:
    from jepa_core.data import prepare_dataset

    data_cfg = _data_config(dataset, vocab_size, lowercase, profile)
    with _StageProgress() as bar:
        prepared = prepare_dataset(data_cfg, from_path=from_path, force=force, progress=bar, warn=bar.warn)
    _summary(prepared, data_cfg, from_path)


def _summary(prepared, data_cfg, from_path: Path | None) -> None:
    m = prepared.manifest
    splits = m["splits"]
    state = "[green]reused the prepared cache[/]" if prepared.reused else "[green]prepared[/]"
    console.print(f"[bold]{escape(prepared.dataset)}[/]: {state}")
    table = Table()
    table.add_column("split")
    table.add_column("tokens", justify="right")
    table.add_column("text bytes", justify="right")
    table.add_column("bytes/token", justify="right")
    rows = (("train", len(prepared.train_tokens), prepared.train_bytes), ("val", len(prepared.val_tokens), prepared.val_bytes))
    for split, n, nbytes in rows:
        label = split
        if split == "train" and n < splits["train"]["tokens"]:
            label = f"train (first {data_cfg.train_fraction:g})"
        table.add_row(label, f"{n:,}", f"{nbytes:,}", f"{nbytes / max(n, 1):.2f}")
    console.print(table)

    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    vocab = f"{prepared.vocab_size:,}"
    if m.get("requested_vocab_size") not in (None, prepared.vocab_size):
        vocab += f" (asked for {m['requested_vocab_size']:,}; the text has no more merges)"
    info.add_row("vocab", f"{vocab}  ({m['dtype']} ids{', lowercased' if m['tokenizer'].get('lowercase') else ''})")
    source = m.get("source", {})
    origins = sorted({f.get("origin", "?") for f in source.get("files", [])})
    info.add_row("source", escape(", ".join(origins) or source.get("origin", "?")) + ("" if source.get("verified_sha256", True) else "  [yellow](sha256 mismatch accepted with --force)[/]"))
    info.add_row("cache", escape(_short(prepared.dir)))
    info.add_row("tokenizer", escape(_short(prepared.tokenizer_path)))
    built = m.get("prepare_seconds")
    took = f"{prepared.seconds:.3f} s"
    if prepared.reused:
        took += f" (built earlier in {built:.2f} s; --force rebuilds)" if isinstance(built, (int, float)) else ""
        if from_path is not None:
            took += "  [yellow]--from was not read: the cache comes first[/]"
    info.add_row("time", took)
    console.print(info)


def run_list() -> None:
    from jepa_core.data import list_datasets, list_prepared
    from jepa_core.data.sources import locate

    prepared: dict[str, list[dict]] = {}
    for entry in list_prepared():
        prepared.setdefault(entry["settings"]["dataset"], []).append(entry)

    table = Table(title="datasets", title_justify="left")
    table.add_column("name", style="bold cyan", overflow="fold")
    table.add_column("source")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("prepared")
    table.add_column("where", overflow="fold")

    def add(name: str, source: str, size: str, entries: list[dict], where_if_none: str) -> None:
        # one line per prepared cache, so each "where" sits beside its own vocab and token count
        if not entries:
            table.add_row(name, source, size, "[dim]no[/]", where_if_none)
        for i, e in enumerate(entries):
            n = e["splits"]["train"]["tokens"] + e["splits"]["val"]["tokens"]
            lc = ", lowercase" if e["tokenizer"].get("lowercase") else ""
            flag = "" if e.get("source", {}).get("verified_sha256", True) else " [yellow](sha256 mismatch, forced)[/]"
            what = f"[green]yes[/]: vocab {e['vocab_size']:,}{lc}, {n:,} tokens{flag}"
            first = i == 0
            table.add_row(name if first else "", source if first else "", size if first else "", what, escape(_short(e["dir"])))
        table.add_section()

    labels = {"mirror": "mirror", "raw-cache": "downloaded", "from": "--from", "download": "URL", "hub": "HF hub", "missing": "missing"}
    for spec in list_datasets():
        located = locate(spec)
        source_lines, where_lines = [], []
        for split, (origin, where) in located.items():
            label = f"{split}: {labels.get(origin, origin)}" if len(located) > 1 else labels.get(origin, origin)
            source_lines.append(f"[red]{escape(label)}[/]" if origin == "missing" else escape(label))
            local = origin in ("mirror", "raw-cache", "from")
            where_lines.append(f"[dim]{escape(_short(where) if local else where)}[/]")
        size = spec.size_hint or _size(spec.train.size)
        add(spec.name, "\n".join(source_lines), size, prepared.pop(spec.name, []), "\n".join(where_lines))

    for name, entries in sorted(prepared.items()):
        path = name.removeprefix("text:")
        size = _size(Path(path).stat().st_size) if Path(path).is_file() else ""
        add(escape(f"text:{_short(path)}"), "local", size, entries, "")
    table.add_row("text:PATH", "local", "", "", "[dim]a .txt file or a folder of them; val = the tail data.val_fraction[/]")
    console.print(table)
