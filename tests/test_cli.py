"""The CLI surface: commands exist, errors are one paragraph with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from jepa_cli.main import app

runner = CliRunner()

COMMANDS = ["data", "train", "watch", "preflight", "ablate", "inspect", "profiles", "bench", "sample", "runs"]


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
        "heavy = [m for m in ('torch', 'datasets', 'textual', 'pydantic', 'tokenizers', 'safetensors', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_profile_completion_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from jepa_cli.completion import complete_profile\n"
        "assert 'tiny' in complete_profile('ti')\n"
        "print(','.join(m for m in ('torch', 'datasets', 'textual', 'safetensors', 'numpy', 'pydantic') if m in sys.modules))\n"
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


# ---------------------------------------------------------------- one error style, no wrapping in pipes


from cli_helpers import cli  # noqa: E402,F401  (fixture)


@pytest.mark.parametrize(
    "args, fragment, usage",
    [
        (["train", "--profile"], "Option '--profile' requires an argument", "jepa train --help"),
        (["bogus"], "No such command 'bogus'", "jepa --help"),
        (["sample"], "Missing argument 'RUN_OR_CHECKPOINT'", "usage: jepa sample [OPTIONS] RUN_OR_CHECKPOINT"),
        (["runs", "--bogus"], "No such option", "jepa runs --help"),
    ],
)
def test_usage_errors_share_jepas_error_style(cli, args, fragment, usage):
    r = cli(*args)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and fragment in r.stderr and usage in r.stderr
    assert "╭" not in r.stderr and "Traceback" not in r.stderr  # not Typer's boxed panel


def test_piped_output_does_not_wrap(tmp_path):
    """Errors and messages in a pipe keep long paths and commands on one line (no 80-column wrap)."""
    long = tmp_path / ("a-rather-long-folder-name-" * 4) / "run"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run([sys.executable, "-m", "jepa_cli", "train", "--resume", str(long), "--no-tui"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    first = r.stderr.splitlines()[0]
    assert str(long) in first and len(first) > 120


# ---------------------------------------------------------------- resume: every refusal says what works


def _small_profile(tmp_path) -> str:
    from train_helpers import small_overrides, small_text

    text = small_text(tmp_path)
    lines = ['extends = "tiny"']
    sections: dict[str, list[str]] = {}
    for o in small_overrides(text, "train.max_steps=4", "train.checkpoint_every=4", "train.eval_every=4", "log.every=2"):
        key, _, value = o.partition("=")
        sec, name = key.split(".")
        sections.setdefault(sec, [])
        sections[sec] = [ln for ln in sections[sec] if not ln.startswith(name + " =")] + [f"{name} = {value}"]
    for sec, body in sections.items():
        lines += [f"[{sec}]", *body]
    path = tmp_path / "small.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _hint_command(stderr: str) -> list[str]:
    """The `jepa train ...` command a refusal's hint gives, as argv after `jepa`."""
    import shlex

    hint = " ".join(stderr.splitlines()[1:])
    cmd = hint[hint.index("jepa train") :]
    return shlex.split(cmd)[1:]


def test_resume_without_dead_ends(tmp_path, monkeypatch, cli, one_thread):
    """A run started with a non-cadence --set; `--profile P --resume auto` is refused with a command that
    works; `--resume auto` without --profile continues the newest run."""
    monkeypatch.chdir(tmp_path)
    profile = _small_profile(tmp_path)
    r = cli("train", "--profile", profile, "--set", "jepa.tau=0.2", "--no-tui")
    assert r.returncode == 0, r.stderr
    run = next((tmp_path / "runs").iterdir())
    # the profile without the --set is not the run's config: refused, with the command that works
    r = cli("train", "--profile", profile, "--resume", "auto", "--no-tui")
    assert r.returncode == 2 and "jepa.tau" in r.stderr
    argv = _hint_command(r.stderr)
    assert argv[:3] == ["train", "--resume", str(run.relative_to(tmp_path))]
    r = cli(*argv, "--set", "train.max_steps=6", "--no-tui")
    assert r.returncode == 0 and "finished at step 6" in r.stdout, r.stderr
    # --resume auto with no --profile: the newest run under runs/, with its own config (tau 0.2 kept)
    r = cli("train", "--resume", "auto", "--set", "train.max_steps=8", "--no-tui")
    assert r.returncode == 0 and "finished at step 8" in r.stdout, r.stderr
    assert f"resuming {run.relative_to(tmp_path)} from step 6" in r.stderr
    import tomllib

    assert tomllib.loads((run / "config.toml").read_text())["jepa"]["tau"] == 0.2
    # every segment recorded the --set values it was given; `jepa runs` shows them merged, the last max_steps winning
    from jepa_core.rundir.summary import read_records
    from jepa_core.rundir.listing import run_info

    starts = [x for x in read_records(run) if x.get("event") == "run_start"]
    assert len(starts) == 3 and starts[0]["overrides"] == ["jepa.tau=0.2"] and starts[-1]["overrides"] == ["train.max_steps=8"]
    shown = run_info(run).overrides
    assert "jepa.tau=0.2" in shown and "train.max_steps=8" in shown and "train.max_steps=6" not in shown
    # the next steps are printed once: no second "resume with" after the run's own message
    assert r.stdout.count("jepa train --resume") == 1


def test_every_refused_resume_prints_a_command(tmp_path, monkeypatch, cli):
    from jepa_cli.tui.fakerun import write_fake_run

    monkeypatch.chdir(tmp_path)
    # nothing to resume at all
    r = cli("train", "--resume", "auto", "--no-tui")
    assert r.returncode == 2 and "Cannot resume" in r.stderr and "jepa train --profile tiny" in r.stderr
    r = cli("train", "--profile", "tiny", "--resume", "auto", "--no-tui")
    assert r.returncode == 2 and "jepa train --profile tiny" in r.stderr
    # a path that does not exist
    r = cli("train", "--resume", "runs/nope", "--no-tui")
    assert r.returncode == 2 and "jepa train --profile tiny" in r.stderr
    # a run that stopped before its first checkpoint: start it again, with its --set values
    write_fake_run(tmp_path / "runs" / "tiny-early", steps=50, finished=False, overrides=("optim.lr=0.002",))
    r = cli("train", "--resume", "runs/tiny-early", "--no-tui")
    assert r.returncode == 2
    argv = _hint_command(r.stderr)
    assert argv[:3] == ["train", "--profile", "tiny"] and "optim.lr=0.002" in argv and "train.max_steps=50" in argv
    # the same run under another train.out_dir: the restart lands beside it, not under ./runs
    from jepa_core.config import load_config

    write_fake_run(tmp_path / "elsewhere" / "tiny-early", steps=50, finished=False, overrides=('train.out_dir="elsewhere"',))
    r = cli("train", "--resume", "elsewhere/tiny-early", "--no-tui")
    assert r.returncode == 2
    argv = _hint_command(r.stderr)
    assert argv[:3] == ["train", "--profile", "tiny"] and "train.max_steps=50" in argv
    sets = [argv[i + 1] for i, w in enumerate(argv) if w == "--set"]
    assert load_config("tiny", sets).train.out_dir == "elsewhere"


@pytest.mark.parametrize(
    "sub",
    [["train"], ["watch"], ["preflight"], ["ablate"], ["inspect"], ["bench"], ["sample"], ["runs"], ["profiles", "list"], ["profiles", "show"],
     ["profiles", "new"]],
)
def test_every_command_help_has_an_example(sub):
    result = runner.invoke(app, [*sub, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and f"jepa {' '.join(sub)}" in result.output
