"""Docs that cannot rot silently.

Every `jepa ...` command line shown in README.md, CONTRIBUTING.md, docs/ and benchmarks/ (in a fenced
code block, or as an inline code span) is parsed by the CLI's own parser, without running
it: a renamed option, a removed subcommand or a missing argument fails here. Every relative
link in those pages must resolve to a file (and a `#fragment` to a heading of it).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import typer.main

from jepa_cli.main import app

# Typer vendors click: its UsageError is reached through the public BadParameter's bases
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
# options whose callbacks act on the machine (they write to the shell's rc files): checked
# for existence only, never parsed
_ACTING = ("--install-completion", "--show-completion")

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "benchmarks").glob("*.md")])
PAGES = [p for p in PAGES if p.exists()]

_FENCE = re.compile(r"^```(\w*)\s*$")
_INLINE = re.compile(r"(?<!`)`(jepa [^`\n]+)`(?!`)")
_LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
# shell operators that end one command and start the next
_SEPARATORS = {"|", "||", "&&", ";", "&"}


def _commands_in_line(line: str) -> list[list[str]]:
    """The argv of each `jepa` command on one shell line (after `torchrun ... -m jepa_cli` too)."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote: not a command line
        return []
    out, cur = [], []
    for t in [*tokens, ";"]:
        if t in _SEPARATORS:
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(t)
    argvs = []
    for words in out:
        while words and re.match(r"^\w+=", words[0]):  # FOO=bar jepa ...: environment first
            words = words[1:]
        if words and (words[0] == "jepa" or words[0].endswith("/jepa")):
            argvs.append(words[1:])
        elif "jepa_cli" in words and words[words.index("jepa_cli") - 1] == "-m":  # torchrun/python -m
            argvs.append(words[words.index("jepa_cli") + 1 :])
    return argvs


def shown_commands(page: Path) -> list[tuple[int, bool, list[str]]]:
    """(line number, whole, argv) of every jepa command the page shows.

    `whole` is False for an inline code span: prose names a command (`jepa inspect`) without
    the arguments a run needs, so only its options and subcommands are checked.
    """
    found = []
    fence: str | None = None
    lines = page.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        m = _FENCE.match(line.strip())
        if m:
            fence = None if fence is not None else m.group(1)
            continue
        if fence is not None:
            if fence in ("", "bash", "sh", "shell", "console"):
                text = line.strip().removeprefix("$ ")
                found += [(n, True, argv) for argv in _commands_in_line(text)]
            continue
        for span in _INLINE.findall(line):
            found += [(n, False, argv) for argv in _commands_in_line(span)]
    return found


def parse(argv: list[str], whole: bool = True) -> str:
    """Parse argv as `jepa` would, down to the leaf command, without invoking it.

    Returns the command path. Raises UsageError for anything the CLI would refuse before
    running (unknown option or command, a bad choice, and, when `whole`, a missing argument).
    A `...` in argv elides the rest of the line: what comes before it is checked.
    """
    if "..." in argv:
        argv, whole = argv[: argv.index("...")], False
    cmd = typer.main.get_command(app)
    if argv and argv[0] in _ACTING:
        assert any(argv[0] in p.opts for p in cmd.params), argv[0]
        return "jepa"
    args, path = list(argv), ["jepa"]
    parent = None
    while True:
        try:
            ctx = cmd.make_context(path[-1], args, parent=parent)
        except typer.Exit:  # --help / --version: eager options that stop parsing
            return " ".join(path)
        except UsageError as e:
            # prose may name a command without its arguments (`jepa inspect`, `jepa ...`)
            if whole or type(e).__name__ not in ("MissingParameter", "NoArgsIsHelpError"):
                raise
            return " ".join(path)
        if not hasattr(cmd, "resolve_command"):  # a leaf command, not a group
            return " ".join(path)
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return " ".join(path)
        _name, sub, rest = cmd.resolve_command(ctx, rest)
        if sub is None:  # pragma: no cover - resolve_command raises on unknown names
            raise UsageError(f"no such command {rest!r}")
        cmd, args, parent = sub, rest, ctx
        path.append(_name)


CASES = [
    pytest.param(argv, whole, id=f"{page.relative_to(ROOT)}:{n}")
    for page in PAGES
    for n, whole, argv in shown_commands(page)
]


def test_the_pages_show_commands():
    # the extractor finds the README's set-up session; a regex that matches nothing passes vacuously
    readme = [argv for _n, whole, argv in shown_commands(ROOT / "README.md") if whole]
    assert ["train", "--profile", "tiny"] in readme
    assert len(CASES) >= 30


@pytest.mark.parametrize(("argv", "whole"), CASES)
def test_every_shown_command_parses(argv, whole):
    parse(argv, whole)


def test_parse_refuses_what_the_cli_refuses():
    # the checker itself: a renamed option, an unknown subcommand, a missing argument
    parse(["train", "--profile", "tiny", "--set", "optim.lr=1e-3"])
    parse(["data", "prepare", "tiny_shakespeare"])
    with pytest.raises(UsageError):
        parse(["train", "--profil", "tiny"])
    with pytest.raises(UsageError):
        parse(["data", "prepair", "tiny_shakespeare"])
    with pytest.raises(UsageError):
        parse(["inspect"])
    parse(["inspect"], whole=False)  # prose naming the command
    parse(["--debug", "..."])
    with pytest.raises(UsageError):
        parse(["inspect", "--stat"], whole=False)


def test_command_extraction_reads_shell_lines():
    assert _commands_in_line("jepa train --profile tiny   # a comment") == [["train", "--profile", "tiny"]]
    assert _commands_in_line("JEPA_HOME=/tmp/x jepa runs | head") == [["runs"]]
    assert _commands_in_line("torchrun --nproc_per_node 2 -m jepa_cli train --no-tui") == [["train", "--no-tui"]]
    assert _commands_in_line("make test && .venv/bin/jepa preflight") == [["preflight"]]
    assert _commands_in_line("pip install jepa") == []


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in page.read_text().splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    bad = []
    in_fence = False
    for n, line in enumerate(page.read_text().splitlines(), 1):
        if _FENCE.match(line.strip()):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, frag = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                bad.append(f"{page.relative_to(root)}:{n}: {target} (no such file)")
            elif frag and dest.suffix == ".md" and frag not in _anchors(dest):
                bad.append(f"{page.relative_to(root)}:{n}: {target} (no such heading)")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_link_checker_finds_a_broken_link(tmp_path):
    page = tmp_path / "p.md"
    (tmp_path / "there.md").write_text("# A heading\n")
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading) [web](https://example.org)\n"
        "[gone](missing.md) [bad](there.md#nope)\n```\n[in code](nowhere.md)\n```\n"
    )
    assert broken_links(page, root=tmp_path) == ["p.md:2: missing.md (no such file)", "p.md:2: there.md#nope (no such heading)"]
