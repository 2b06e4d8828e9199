"""Architecture rules: jepa_core never imports the UI libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "jepa_core"
FORBIDDEN = {"typer", "rich", "textual", "click"}


def test_core_sources_do_not_import_ui_libraries():
    offenders = []
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(CORE)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_core_modules_loads_no_ui_library():
    mods = ["jepa_core.config", "jepa_core.model", "jepa_core.data", "jepa_core.train.loop", "jepa_core.train.checkpoint"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods) + (
        "print(','.join(sorted(m for m in ('typer','rich','textual') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
