"""Where runs and caches may go (issue 26): a JEPA_HOME that is a file, and new runs nested in old ones.

Both are refused before anything is written, as one `error:` paragraph with exit code 2
and the command that was probably meant.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jepa_core import rundir as rd
from jepa_core.rundir import layout
from jepa_core.errors import ConfigError, JepaError
from jepa_core.profiles import jepa_home
from cli_helpers import cli  # noqa: F401  (fixture)
from train_helpers import _use_home, finished_run, home, small_overrides, text  # noqa: F401 (fixtures)


def _flat(s: str) -> str:
    return " ".join(s.split())


def _one_clean_error(r) -> None:
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.count("error:") == 1 and "Traceback" not in r.stderr + r.stdout


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --------------------------------------------------------------------------- JEPA_HOME is a file


def test_jepa_home_that_is_a_file_is_a_config_error(tmp_path, monkeypatch):
    f = tmp_path / "home.txt"
    f.write_text("not a folder")
    for home_value in (f, f / "inner"):  # the file itself, or a path through it
        monkeypatch.setenv("JEPA_HOME", str(home_value))
        with pytest.raises(ConfigError) as e:
            jepa_home()
        assert f"JEPA_HOME={home_value}" in e.value.message and "not a directory" in e.value.message
    monkeypatch.setenv("JEPA_HOME", str(tmp_path / "not-yet" / "made"))
    assert jepa_home() == tmp_path / "not-yet" / "made"  # missing is fine: it is created when needed


def test_jepa_home_file_refuses_data_prepare_and_train(tmp_path, monkeypatch, cli, text):
    """The report: both commands exited 1 with a NotADirectoryError from data/cache.py."""
    f = tmp_path / "home.txt"
    f.write_text("not a folder")
    monkeypatch.setenv("JEPA_HOME", str(f))
    r = cli("data", "prepare", "tiny_shakespeare")
    _one_clean_error(r)
    assert f"JEPA_HOME={f}" in _flat(r.stderr)
    sets = [w for s in small_overrides(text, f'train.out_dir="{tmp_path / "runs"}"') for w in ("--set", s)]
    r = cli("train", "--no-tui", "--profile", "tiny", *sets)
    _one_clean_error(r)
    assert f"JEPA_HOME={f}" in _flat(r.stderr)
    assert not (tmp_path / "runs").exists() and f.read_text() == "not a folder"


def test_jepa_home_file_through_the_real_entry_point(tmp_path):
    f = tmp_path / "home.txt"
    f.write_text("")
    env = dict(os.environ, JEPA_HOME=str(f), JEPA_DEBUG="")
    r = subprocess.run([sys.executable, "-m", "jepa_cli", "data", "prepare", "tiny_shakespeare"], capture_output=True, text=True, timeout=120, env=env)
    _one_clean_error(r)
    assert "JEPA_HOME" in r.stderr and "NotADirectoryError" not in r.stderr


def test_profiles_still_list_with_a_jepa_home_file(tmp_path, monkeypatch, cli):
    """Shell completion and `jepa profiles list` read $JEPA_HOME/profiles; a bad JEPA_HOME has none, it is not an error."""
    f = tmp_path / "home.txt"
    f.write_text("")
    monkeypatch.setenv("JEPA_HOME", str(f))
    r = cli("profiles", "list")
    assert r.returncode == 0 and "tiny" in r.stdout


# --------------------------------------------------------------------------- nested runs


@pytest.fixture(scope="module")
def finished(tmp_path_factory, text) -> Path:
    """A finished small run (8 steps, checkpoints at 4 and 8), under <tmp>/runs/old."""
    return finished_run(tmp_path_factory.mktemp("nest"), "old", text=text)


def _train_sets(text: Path, *extra: str) -> list[str]:
    return [w for s in small_overrides(text, *extra) for w in ("--set", s)]


def test_run_dir_inside_a_finished_runs_checkpoints_is_refused(finished, cli, text):
    before = _listing(finished)
    r = cli("train", "--no-tui", "--profile", "tiny", *_train_sets(text), "--run-dir", str(finished / "checkpoints"))
    _one_clean_error(r)
    err = _flat(r.stderr)
    assert f"is inside the run {finished}" in err
    assert f"jepa train --resume {finished}" in err  # what was probably meant
    assert _listing(finished) == before  # not even a lock file in the old run


def test_out_dir_that_is_a_run_is_refused_with_a_sibling_out_dir(finished, cli, text):
    before = _listing(finished)
    r = cli("train", "--no-tui", "--profile", "tiny", *_train_sets(text, f'train.out_dir="{finished}"'))
    _one_clean_error(r)
    err = _flat(r.stderr)
    assert "train.out_dir" in err and f"inside the run {finished}" in err
    assert f"--set 'train.out_dir=\"{finished.parent}\"'" in err and f"jepa train --resume {finished}" in err
    assert _listing(finished) == before


def test_the_dashboard_path_refuses_before_making_a_folder(finished, cli, text, monkeypatch):
    """With --tui the directory is made before the dashboard starts the trainer: the refusal must come first."""
    import jepa_cli.tui.launch as launch

    monkeypatch.setattr(launch, "train_with_dashboard", lambda argv, run_dir: 0)
    before = _listing(finished)
    r = cli("train", "--tui", "--profile", "tiny", *_train_sets(text, f'train.out_dir="{finished / rd.CKPT_DIR}"'))
    _one_clean_error(r)
    assert _listing(finished) == before


def test_what_counts_as_inside_a_run(finished, tmp_path):
    assert rd.enclosing_run(finished / "checkpoints" / "new") == finished
    assert rd.enclosing_run(finished) is None  # the run itself: claim_run_dir's "already holds a run" covers it
    assert rd.enclosing_run(finished.parent / "beside") is None
    rd.refuse_nested_run(rd.new_run_dir(finished.parent, "tiny"))  # the suggested sibling out_dir is accepted
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.toml").write_text("[tool]\n")  # a folder with a config of its own is not a run
    assert rd.enclosing_run(project / "runs" / "tiny-1") is None
    with pytest.raises(JepaError, match="inside the run"):
        rd.refuse_nested_run(finished / "checkpoints" / "deeper" / "still")


# --------------------------------------------------------------------------- folders that are not runs


_NOT_A_RUN_YET = [n for n in rd.RUN_NAMES if n not in (rd.METRICS, rd.CONFIG, rd.PIDFILE, rd.CKPT_DIR, rd.LOG_FILE)]


@pytest.mark.parametrize("name", _NOT_A_RUN_YET)
def test_run_dir_on_a_folder_holding_a_file_a_run_writes_is_refused(tmp_path, cli, text, name):
    """An HF export folder (its tokenizer.json), a project with a `stop` script or a wandb/ folder: `--run-dir`
    there is refused, naming the file, and the folder is left byte for byte as it was."""
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x00weights")
    theirs = folder / name
    if name in (layout.TENSORBOARD_DIR, layout.WANDB_DIR):
        theirs.mkdir()
        (theirs / "events").write_bytes(b"their logs")
    else:
        theirs.write_bytes(b'{"model": {"type": "BPE"}, "theirs": true}\n')
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    r = cli("train", "--no-tui", "--profile", "tiny", *_train_sets(text), "--run-dir", str(folder))
    _one_clean_error(r)
    err = _flat(r.stderr)
    assert f"holds {name}," in err and "is not a run" in err and "nothing was written" in err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # and nothing added


def test_the_dashboard_path_refuses_a_folder_holding_a_train_log(tmp_path, cli, text, monkeypatch):
    """The dashboard writes the trainer's output to train.log: refused before it does (its trainer child, started
    with --run-dir on the folder, allows the train.log its parent has just made there)."""
    import jepa_cli.tui.launch as launch
    from jepa_core.train.session import claim_run_dir

    monkeypatch.setattr(launch, "train_with_dashboard", lambda argv, run_dir: pytest.fail("started"))
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / rd.LOG_FILE).write_text("their log\n")
    r = cli("train", "--tui", "--profile", "tiny", *_train_sets(text), "--run-dir", str(folder))
    _one_clean_error(r)
    assert f"holds {rd.LOG_FILE}," in _flat(r.stderr)
    assert (folder / rd.LOG_FILE).read_text() == "their log\n" and _listing(folder) == [rd.LOG_FILE]
    claim_run_dir(folder, None)  # the child's own check: train.log is its parent's


def test_every_top_level_name_in_the_layout_is_a_run_name():
    """RUN_NAMES is made of layout's names: a new top-level file added there without it would be overwritten
    in a folder that is not a run. LATEST and BEST live in checkpoints/, covered by CKPT_DIR."""
    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}
    # latest.json and best.json live in checkpoints/; batches.txt is the ablation's, written beside a run it starts
    assert names - {layout.LATEST, layout.BEST, layout.BATCH_LOG} == set(rd.RUN_NAMES)
    assert {rd.METRICS, rd.TOKENIZER, rd.HEARTBEAT, rd.LOG_FILE} <= set(rd.RUN_NAMES)


def test_a_new_run_in_a_folder_with_other_files_leaves_them_alone(tmp_path, text):
    """No file a run writes is there: the run goes ahead, and what was there (a `.x.tmp` too, which only a
    resume's sweep of its own temp files could remove) is untouched."""
    from jepa_core.train.loop import train
    from train_helpers import small_config

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.md").write_text("mine\n")
    (folder / ".draft.tmp").write_text("an editor's\n")
    cfg = small_config(text, tmp_path / "runs", "train.max_steps=2", "train.eval_every=2", "train.checkpoint_every=2", "train.sample_tokens=0")
    assert train(cfg, run_dir=folder, handle_signals=False).status == "finished"
    assert (folder / "README.md").read_text() == "mine\n" and (folder / ".draft.tmp").read_text() == "an editor's\n"
    assert rd.read_latest(folder).step == 2


def test_run_dir_on_a_run_without_a_checkpoint_suggests_a_command_that_works(tmp_path, text, cli, monkeypatch):
    """A run that died before its first checkpoint (killed: no checkpoints, no run_end). `--run-dir` on it suggested
    `jepa train --resume RUN`, which is then refused; now it gives the command that starts it again, and that works."""
    import shlex

    from jepa_core.config import load_config
    from jepa_core.train.loop import train
    from train_helpers import read_metrics

    sets = small_overrides(text, "train.max_steps=2", "train.eval_every=2", "train.checkpoint_every=2", "train.sample_tokens=0",
                           f'train.out_dir="{tmp_path / "runs"}"')
    run = tmp_path / "runs" / "early"
    assert train(load_config("tiny", sets), run_dir=run, handle_signals=False, overrides=sets).status == "finished"
    shutil.rmtree(run / rd.CKPT_DIR)  # as if killed before its first checkpoint
    (run / rd.METRICS).write_text("".join(line for line in (run / rd.METRICS).read_text().splitlines(True) if '"run_end"' not in line))
    before = _listing(run)

    from jepa_cli.render.train import run_train

    with pytest.raises(JepaError) as e:
        run_train("tiny", sets, None, str(run), tui=False)
    assert "stopped before its first checkpoint: there is nothing in it to resume" in e.value.message
    assert "--resume" not in e.value.hint
    cmd = e.value.hint.split("with: ", 1)[1]
    assert _listing(run) == before
    monkeypatch.chdir(tmp_path)
    r = cli(*shlex.split(cmd)[1:], "--no-tui")
    assert r.returncode == 0, r.stderr[-3000:]
    new = [d for d in (tmp_path / "runs").iterdir() if d.name != "early"]
    assert len(new) == 1 and read_metrics(new[0])[-1]["status"] == "finished" and rd.read_latest(new[0]).step == 2
    assert _listing(run) == before  # the early run left as it was
