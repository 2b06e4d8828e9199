"""Rendering for `jepa data prepare` and `jepa data list`.

Progress and warnings go to stderr, the summary tables to stdout, so
`jepa data prepare ... > summary.txt` keeps a clean record.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from jepa_cli.console import console, err_console
from jepa_core.units import fmt_bytes

_STAGES = {
    "read": "reading text",
    "download": "downloading",
    "sample": "reading the tokenizer sample",
    "tokenizer": "training BPE tokenizer",
    "encode": "encoding tokens",
    "write": "writing cache",
}


_size = fmt_bytes


def _vocab(prepared, manifest: dict) -> str:
    """The vocabulary size, and the size asked for when the text had fewer merges to give."""
    vocab = f"{prepared.vocab_size:,}"
    if manifest.get("requested_vocab_size") not in (None, prepared.vocab_size):
        vocab += f" (asked for {manifest['requested_vocab_size']:,}; the text has no more merges)"
    return vocab


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


def _rate(n: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.1f} {prefix}{unit}"
    return f"{n:.0f} {unit}"


def _amount_column():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class AmountColumn(ProgressColumn):
        """Counts for the generic stages; bytes, bytes/s, tokens/s and ETA for the byte stages."""

        def render(self, task) -> Text:
            unit = task.fields.get("unit")
            if unit != "bytes":
                total = f"/{int(task.total):,}" if task.total else ""
                return Text(f"{int(task.completed):,}{total}", style="progress.download")
            parts = [f"{_size(int(task.completed))}" + (f" / {_size(int(task.total))}" if task.total else "")]
            elapsed = task.elapsed or 0.0
            if elapsed > 0:
                parts.append(f"{_rate(task.completed / elapsed, 'B/s')}")
                tokens = task.fields.get("tokens", 0)
                if tokens:
                    parts.append(f"{_rate(tokens / elapsed, 'tok/s')}")
            if task.total and task.completed and elapsed > 0 and task.completed < task.total:
                eta = (task.total - task.completed) * elapsed / task.completed
                parts.append(f"eta {int(eta) // 3600}:{int(eta) % 3600 // 60:02d}:{int(eta) % 60:02d}")
            return Text("  ".join(parts), style="progress.download")

    return AmountColumn()


class _StageProgress:
    """A Rich progress bar with one task per stage, created when the stage first reports.

    "encode" and "sample" count bytes of text; "tokens" is not a bar of its own but feeds the
    tokens/s figure of the "encode" bar; "resume" prints one line.
    """

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            _amount_column(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,
        )
        self.tasks: dict[str, int] = {}
        self.tokens = 0

    def __enter__(self) -> "_StageProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        from jepa_cli.streams import guard

        with guard(self.progress.console):  # clearing the bar on a terminal that hung up
            self.progress.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage == "resume":
            self.progress.console.print(
                f"[cyan]continuing an interrupted preparation:[/] {done} finished shard{'s' if done != 1 else ''}, {total:,} tokens kept"
            )
            return
        if stage == "tokens":
            self.tokens = done
            task = self.tasks.get("encode")
            if task is not None:
                self.progress.update(task, tokens=done)
            return
        task = self.tasks.get(stage)
        unit = "bytes" if stage in ("encode", "sample", "download") else "count"
        if task is None:
            task = self.progress.add_task(_STAGES.get(stage, stage), total=total or None, unit=unit, tokens=0)
            self.tasks[stage] = task
        self.progress.update(task, completed=done, total=total or None)

    def warn(self, message: str) -> None:
        # through the progress console so the live bar is redrawn below the message
        self.progress.console.print(f"[bold yellow]warning:[/] {escape(message)}")


def _data_config(dataset: str | None, overrides: dict, profile: str | None):
    from pydantic import ValidationError

    from jepa_core.config import DataConfig, load_config
    from jepa_core.data import check_vocab_size
    from jepa_core.errors import DataError

    if overrides.get("vocab_size") is not None and not overrides.get("tokenizer"):
        check_vocab_size(overrides["vocab_size"])
    base = load_config(profile).data if profile else DataConfig()
    raw = base.model_dump()
    if dataset is None:
        if not profile:
            raise DataError("Name a dataset, or a --profile whose data.dataset to prepare.", hint="e.g. `jepa data prepare tiny_shakespeare`.")
        dataset = raw["dataset"]
    raw["dataset"] = dataset
    raw.update(overrides)
    try:
        return DataConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise DataError(f"Invalid data.{key}: {err['msg']} (got {err.get('input')!r}).") from None


def interrupted_note(data_cfg) -> str:
    """What an interrupt once encoding began leaves, and what running the same command again does."""
    from jepa_core.data.prepare import kept_when_interrupted

    continues, kept = kept_when_interrupted(data_cfg)
    return f"{kept}; run the same command again to {'continue' if continues else 'start it over'}"


def run_prepare(
    dataset: str | None,
    *,
    overrides: dict | None = None,
    from_path: Path | None = None,
    force: bool = False,
    profile: str | None = None,
) -> None:
    from jepa_core.data import prepare_dataset
    from jepa_core.train.stops import SignalsRaise

    data_cfg = _data_config(dataset, overrides or {}, profile)
    with _StageProgress() as bar, SignalsRaise() as stop:
        try:
            prepared = prepare_dataset(data_cfg, from_path=from_path, force=force, progress=bar, warn=bar.warn)
        except KeyboardInterrupt:
            from jepa_cli.streams import safe_print

            how = f" ({stop.reason})" if stop.reason else ""
            if "encode" in bar.tasks:
                said = f"[yellow]interrupted{how}:[/] {interrupted_note(data_cfg)}."
            else:
                said = f"[yellow]interrupted{how}[/] before encoding began; run the same command again to start it."
            # after a hang-up the terminal is gone: the message is lost, the exit code still tells
            safe_print(bar.progress.console, said)
            raise typer.Exit(130) from None
    _summary(prepared, data_cfg, from_path)


def _summary(prepared, data_cfg, from_path: Path | None) -> None:
    m = prepared.manifest
    if m.get("format", "").endswith("/2"):
        return _summary_sharded(prepared, data_cfg)
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
            label = f"train (first {n:,} tokens)" if data_cfg.max_train_tokens and n == data_cfg.max_train_tokens else f"train (first {data_cfg.train_fraction:g})"
        table.add_row(label, f"{n:,}", f"{nbytes:,}", f"{nbytes / max(n, 1):.2f}")
    console.print(table)

    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    vocab = _vocab(prepared, m)
    info.add_row("vocab", f"{vocab}  ({m['dtype']} ids{', lowercased' if m['tokenizer'].get('lowercase') else ''})")
    source = m.get("source", {})
    origins = sorted({f.get("origin", "?") for f in source.get("files", [])})
    info.add_row("source", escape(", ".join(origins) or source.get("origin", "?")) + ("" if source.get("verified_sha256", True) else "  [yellow](sha256 mismatch accepted with --force)[/]"))
    info.add_row("cache", escape(_short(prepared.dir)))
    info.add_row("tokenizer", escape(_short(prepared.tokenizer_path)) + _tokenizer_note(m["tokenizer"]))
    built = m.get("prepare_seconds")
    took = f"{prepared.seconds:.3f} s"
    if prepared.reused:
        took += f" (built earlier in {built:.2f} s; --force rebuilds)" if isinstance(built, (int, float)) else ""
        if from_path is not None:
            took += "  [yellow]--from was not read: the cache comes first[/]"
    info.add_row("time", took)
    console.print(info)


def _tokenizer_note(tok: dict) -> str:
    source = tok.get("source")
    if source and source != "trained":
        return f"  [dim](reused {escape(_short(source))})[/]"
    sample, limit = tok.get("sample_bytes"), tok.get("sample_limit")
    if isinstance(sample, int) and sample:
        capped = ", the data.tokenizer_sample_bytes limit" if isinstance(limit, int) and sample >= limit else ""
        return f"  [dim](trained on {_size(sample)} of text{capped})[/]"
    return ""


def _summary_sharded(prepared, data_cfg) -> None:
    m = prepared.manifest
    src = m["source"]
    state = "[green]reused the prepared cache[/]" if prepared.reused else "[green]prepared[/]"
    console.print(f"[bold]{escape(prepared.dataset)}[/]: {state}")
    table = Table()
    for col, just in (("split", "left"), ("documents", "right"), ("tokens", "right"), ("text bytes", "right"), ("bytes/token", "right"), ("shards", "right")):
        table.add_column(col, justify=just)
    for split in ("train", "val"):
        e = m["splits"][split]
        n = len(prepared.train_tokens) if split == "train" else e["tokens"]
        nbytes = prepared.train_bytes if split == "train" else e["bytes"]
        label = split
        if split == "train" and n < e["tokens"]:
            label = f"train (first {data_cfg.train_fraction:g})"
        elif split == "train" and m.get("truncated"):
            label = f"train (data.max_train_tokens)"
        elif split == "val":
            vs = src.get("val_split")
            label = f"val (heldout {src.get('val_fraction'):g})" if vs == "heldout" else f"val ({vs})"
        table.add_row(escape(label), f"{e['docs']:,}", f"{n:,}", f"{nbytes:,}", f"{nbytes / max(n, 1):.2f}", str(len(e["shards"])))
    console.print(table)

    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    vocab = _vocab(prepared, m)
    sep = m.get("separator")
    info.add_row("vocab", f"{vocab}  ({m['dtype']} ids{', lowercased' if m['tokenizer'].get('lowercase') else ''}"
                 + (f"; documents end with {escape(sep['token'])}" if sep else "; no end-of-document token") + ")")
    where = f"{src.get('kind')}: field `{src.get('text_field')}`, split `{src.get('train_split')}`"
    if src.get("revision"):
        where += f", revision {src['revision'][:12]}"
    elif src.get("local_repo"):
        where += f", local copy {escape(_short(src['local_repo']))}"
    else:
        files = src.get("files", [])
        where += f", {len(files)} file{'s' if len(files) != 1 else ''} ({_size(sum(f.get('size', 0) for f in files))}, sha256 in the manifest)"
    info.add_row("source", escape(where))
    info.add_row("cache", escape(_short(prepared.dir)))
    info.add_row("tokenizer", escape(_short(prepared.tokenizer_path)) + _tokenizer_note(m["tokenizer"]))
    built = m.get("prepare_seconds")
    enc = m.get("encode_seconds")
    total_bytes = m["splits"]["train"]["bytes"] + m["splits"]["val"]["bytes"]
    if prepared.reused:
        took = f"{prepared.seconds:.3f} s" + (f" (built earlier in {built:.1f} s; --force rebuilds)" if isinstance(built, (int, float)) else "")
    else:
        took = f"{prepared.seconds:.1f} s"
        if isinstance(enc, (int, float)) and enc > 0:
            took += f"  (encoding {_size(total_bytes)} in {enc:.1f} s: {_rate(total_bytes / enc, 'B/s')})"
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
        kind, _, path = name.partition(":")
        size = _size(Path(path).stat().st_size) if kind == "text" and Path(path).is_file() else ""
        label = f"{kind}:{_short(path)}" if kind in ("text", "json", "parquet") else name
        add(escape(label), "hub" if kind == "hf" else "local", size, entries, "")
    table.add_row("text:PATH", "local", "", "", "[dim]a .txt file or a folder of them; val = the tail data.val_fraction[/]")
    table.add_row("json:PATH", "local", "", "", "[dim]JSON lines (a file, a folder or a glob); data.text_field names the text[/]")
    table.add_row("parquet:PATH", "local", "", "", "[dim]Parquet (a file, a folder or a glob); data.text_field names the text[/]")
    table.add_row("hf:OWNER/NAME[:CONFIG]", "HF hub", "", "", "[dim]streamed through `datasets`; --from DIR for a local copy[/]")
    console.print(table)
