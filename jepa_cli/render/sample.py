"""`jepa sample`: stream a checkpoint's text to stdout, what was loaded to stderr."""

from __future__ import annotations

import sys

import typer

from jepa_cli.console import err_console, quiet_library_warnings
from jepa_core.errors import ConfigError


def _fmt(v, spec: str = ".4f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def run_sample(run: str, *, prompt: str | None, tokens: int, temperature: float, top_k: int, seed: int | None, device: str) -> None:
    quiet_library_warnings()
    from jepa_core.tools.sample import check_sampling_args, encode_prompt, load_for_sampling, prompt_text, stream_sample

    check_sampling_args(tokens, temperature, top_k, seed)  # before the (slower) load
    if prompt == "-":
        if sys.stdin.isatty():
            raise ConfigError("--prompt - reads the prompt from stdin, but stdin is a terminal.", hint='Pipe text in (echo "ROMEO:" | jepa sample RUN --prompt -) or give --prompt TEXT.')
        # the bytes, not the text: the locale's decoder would either fail or smuggle surrogates through
        binary = getattr(sys.stdin, "buffer", None)
        prompt = binary.read() if binary is not None else sys.stdin.read()
    text_note = None
    if prompt is not None:
        prompt, text_note = prompt_text(prompt)
    sm = load_for_sampling(run, device)
    if prompt is None or prompt == "":
        prompt = sm.cfg.train.sample_prompt or "\n"
    ids = encode_prompt(sm, prompt)
    if seed is None:
        import secrets

        seed = secrets.randbelow(2**31)
    from rich.markup import escape

    bpb = sm.metrics.get("val_bpb")
    where = f"{sm.ref.weights}" + (f" ({sm.note})" if sm.note else "")
    err_console.print(
        f"[dim]{escape(where)}\nstep {sm.step} · val BPB {_fmt(bpb)} · {sm.device} · {len(ids)} prompt tokens · "
        f"temperature {temperature:g} · top-k {top_k or 'off'} · seed {seed}[/]"
    )
    for n in sm.integrity:
        err_console.print(f"[yellow]note:[/] {escape(n)}")
    if text_note:
        err_console.print(f"[yellow]note:[/] {escape(text_note)}")
    if len(ids) > sm.block_size:
        err_console.print(f"[yellow]note:[/] the prompt is {len(ids)} tokens; the model sees only its last {sm.block_size} (data.block_size).")
    out = sys.stdout
    tty = out.isatty()
    try:
        out.write(f"\x1b[1m{prompt}\x1b[0m" if tty else prompt)
        out.flush()
        text = ""
        for piece in stream_sample(sm, ids, tokens, temperature=temperature, top_k=top_k, seed=seed):
            out.write(piece)
            out.flush()
            text += piece
        if not text.endswith("\n"):
            out.write("\n")
        out.flush()
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
        err_console.print(f"[yellow]stopped[/] (seed {seed})")
        raise typer.Exit(130) from None
    except BrokenPipeError:  # `jepa sample RUN | head`: the reader has what it wanted
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        raise typer.Exit(0) from None
    err_console.print(f"[dim]repeat with --seed {seed}[/]")
