"""`jepa ARGS` run through the real entry point (`jepa_cli.main.main`) inside the test process.

Cheaper than a subprocess (torch is imported once) and it goes through the same
error handling: exit codes, `error:` paragraphs, usage errors. Use it as a fixture:
`from cli_helpers import cli  # noqa: F401`.
"""

from __future__ import annotations

import io
import subprocess
import sys

import pytest


@pytest.fixture
def cli(monkeypatch, capsys):
    from jepa_cli.main import main

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "argv", ["jepa", *args])
        monkeypatch.setenv("JEPA_DEBUG", "")
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        with pytest.raises(SystemExit) as e:
            main()
        out = capsys.readouterr()
        code = e.value.code
        return subprocess.CompletedProcess(args, code if isinstance(code, int) else (0 if code is None else 1), out.out, out.err)

    return run
