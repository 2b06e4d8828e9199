"""The CLI surface: commands exist, errors are one paragraph with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from jepa_cli.main import app

runner = CliRunner()

COMMANDS = ["data", "train", "watch", "preflight", "ablate", "inspect", "profiles", "bench"]


def jepa(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "jepa_cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in result.output


@pytest.mark.parametrize("sub", [["data", "--help"], ["data", "prepare", "--help"], ["data", "list", "--help"], ["profiles", "show", "--help"], ["train", "--help"], ["ablate", "--help"]])
def test_subcommand_help(sub):
    result = runner.invoke(app, sub, env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from jepa_cli.main import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0\n"
        "heavy = [m for m in ('torch', 'datasets', 'textual', 'pydantic', 'tokenizers') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_typo_in_set_is_a_clean_error():
    r = jepa("profiles", "show", "tiny", "--set", "model.d_modle=64")
    assert r.returncode == 2
    assert "model.d_modle" in r.stderr and "model.d_model" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_missing_profile_is_a_clean_error():
    r = jepa("profiles", "show", "nope")
    assert r.returncode == 2
    assert "No profile named `nope`" in r.stderr
    assert "Traceback" not in r.stderr


def test_wrong_type_file_and_bad_extends(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("[train]\nmax_steps = \"many\"\n")
    r = jepa("profiles", "show", str(f))
    assert r.returncode == 2 and "train.max_steps" in r.stderr and "Traceback" not in r.stderr
    g = tmp_path / "q.toml"
    g.write_text('extends = "nonexistent"\n')
    r = jepa("profiles", "show", str(g))
    assert r.returncode == 2 and "nonexistent" in r.stderr and "Traceback" not in r.stderr


def test_debug_shows_traceback():
    r = jepa("--debug", "profiles", "show", "nope")
    assert r.returncode != 0
    assert "Traceback" in r.stderr


def test_profiles_show_marks_changed_values():
    r = jepa("profiles", "show", "tiny", "--set", "optim.lr=0.5")
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("lr ="))
    assert "0.5" in line and "*" in line
    plain = jepa("profiles", "show", "tiny", "--plain")
    assert "*" not in plain.stdout and "[model]" in plain.stdout


def test_profiles_list():
    r = jepa("profiles", "list")
    assert r.returncode == 0
    for name in ("tiny", "tiny-baseline", "shakespeare", "wikitext2"):
        assert name in r.stdout


def test_profile_completion():
    from jepa_cli.completion import complete_profile

    assert "tiny" in complete_profile("ti") and "tiny-baseline" in complete_profile("ti")
    assert "shakespeare" not in complete_profile("ti")


def test_train_without_profile_explains():
    r = jepa("train", "--no-tui")
    assert r.returncode == 2
    assert "--profile" in r.stderr and "tiny" in r.stderr and "Traceback" not in r.stderr


def test_train_with_bad_override_is_clean():
    r = jepa("train", "--profile", "tiny", "--set", "jepa.horizons=[2, 500]", "--no-tui")
    assert r.returncode == 2 and "jepa.horizons" in r.stderr and "Traceback" not in r.stderr


def test_resume_of_missing_run_is_clean(tmp_path):
    r = jepa("train", "--resume", str(tmp_path / "nope"), "--no-tui")
    assert r.returncode == 2 and "Cannot resume" in r.stderr and "Traceback" not in r.stderr
