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


def _imports(path: Path) -> list[str]:
    """Absolute module names a source file imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = path.relative_to(CORE.parent).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(pkg[: len(pkg) - node.level + 1]) if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out += [mod] + [f"{mod}.{a.name}" for a in node.names]
    return out


def test_the_core_never_imports_a_tool():
    """train, model, data, rundir, config and the shared modules sit below the tools (docs/architecture.md)."""
    offenders = [
        f"{p.relative_to(CORE)}: {m}"
        for p in CORE.rglob("*.py")
        if "tools" not in p.relative_to(CORE).parts
        for m in _imports(p)
        if m.startswith("jepa_core.tools")
    ]
    assert offenders == []


def test_run_directory_readers_load_no_torch_or_numpy():
    """Every reader of a run directory (inspect, runs, watch, the ablate report) works without torch."""
    mods = ["jepa_core.rundir", "jepa_core.rundir.live", "jepa_core.rundir.summary", "jepa_core.rundir.listing"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods) + (
        "print(','.join(sorted(m for m in ('torch', 'numpy', 'pydantic') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_modules_and_functions_stay_small():
    """At most 8 top-level modules in jepa_core besides its packages, no module over 600 lines and
    no function over 100 in jepa_core or jepa_cli: a reader finds each fact in a small place."""
    top = sorted(p.name for p in CORE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 8, top
    too_long = []
    for root in (CORE, CORE.parent / "jepa_cli"):
        for p in root.rglob("*.py"):
            text = p.read_text(encoding="utf-8")
            if text.count("\n") > 600:
                too_long.append(f"{p.name}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 100:
                    too_long.append(f"{p.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []
