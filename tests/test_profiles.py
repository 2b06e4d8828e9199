"""Where profiles are found: shipped from the top-level profiles/ (package data in a wheel), the search order, `extends`
across folders, `jepa profiles new`, and a wheel installed outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import jepa_core
from cli_helpers import cli  # noqa: F401
from jepa_core.config import load_config
from jepa_core.errors import ConfigError
from jepa_core.profiles import find_profile, new_profile, profile_entries, shipped_dir, sources, user_dir

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("tiny", "tiny-baseline", "shakespeare", "wikitext2", "gpt2-small", "fineweb-edu")


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def places(tmp_path, monkeypatch):
    """An empty working directory, a JEPA_PROFILES folder and a user folder, all under tmp_path."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env_dir = tmp_path / "env-profiles"
    monkeypatch.setenv("JEPA_PROFILES", str(env_dir))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return {"cwd": work / "profiles", "env": env_dir, "user": tmp_path / "xdg" / "jepa" / "profiles"}


def test_shipped_profiles_live_in_top_level_profiles_only():
    # one home: the repository's profiles/ (the design card's layout); the wheel carries it
    # as package data through a build mapping, not through a second copy in the tree
    assert shipped_dir().resolve() == ROOT / "profiles"
    tracked = subprocess.run(["git", "ls-files", "*.toml"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if tracked:  # a git checkout (an sdist has no git)
        assert sorted(t for t in tracked if t.endswith("tiny.toml")) == ["profiles/tiny.toml"]
    assert not (Path(jepa_core.__file__).parent / "profiles_data").exists()
    assert {e.name for e in profile_entries() if e.source == "shipped"} >= set(SHIPPED)
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"jepa_core.profiles_data": "profiles"}
    assert setuptools["package-data"]["jepa_core.profiles_data"] == ["*.toml"]


def test_pyproject_lists_every_package_on_disk():
    # the packages are listed by hand (find cannot see the profiles mapping): a new
    # subpackage missing from the list would be left out of the wheel
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(d.relative_to(ROOT).parts)
        for top in ("jepa_core", "jepa_cli")
        for d in [ROOT / top, *(ROOT / top).rglob("*")]
        if (d / "__init__.py").is_file()
    }
    assert listed == on_disk | {"jepa_core.profiles_data"}


def test_repository_root_lists_shipped_profiles_as_shipped(monkeypatch):
    # in a checkout's root ./profiles is the shipped folder: one source, named "shipped"
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("JEPA_PROFILES", raising=False)
    kinds = [s.kind for s in sources() if s.dir.resolve() == ROOT / "profiles"]
    assert kinds == ["shipped"]


def test_user_folder_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert user_dir() == tmp_path / "cfg" / "jepa" / "profiles"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/cfg")  # invalid under the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_dir() == tmp_path / "home" / ".config" / "jepa" / "profiles"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert user_dir() == tmp_path / "home" / ".config" / "jepa" / "profiles"


def test_search_order_and_where_each_comes_from(places):
    body = 'description = "{}"\nextends = "tiny"\n'
    _write(places["user"], "tiny", body.format("user tiny"))
    _write(places["user"], "mine", body.format("user mine"))
    _write(places["cwd"], "mine", body.format("cwd mine"))
    _write(places["env"], "mine", body.format("env mine"))
    _write(places["cwd"], "local", body.format("cwd local"))
    entries = {e.name: e for e in profile_entries()}
    assert entries["mine"].source == "JEPA_PROFILES" and entries["mine"].shadows == ("./profiles", "user")
    assert entries["local"].source == "./profiles" and entries["local"].shadows == ()
    assert entries["tiny"].source == "user" and entries["tiny"].shadows == ("shipped",)
    assert entries["shakespeare"].source == "shipped"
    assert find_profile("mine") == places["env"] / "mine.toml"
    # a path bypasses the search
    assert find_profile(str(places["user"] / "mine.toml")) == places["user"] / "mine.toml"


def test_extends_reaches_across_folders_and_past_its_own_name(places):
    # the user's tiny changes one key of the shipped tiny: extending its own name means the next one down
    _write(places["user"], "tiny", 'extends = "tiny"\n[optim]\nlr = 0.0123\n')
    _write(places["cwd"], "mine", 'extends = "tiny-baseline"\n[train]\nmax_steps = 7\n')
    shipped = load_config(str(shipped_dir() / "tiny.toml"))
    tiny = load_config("tiny")
    assert tiny.optim.lr == 0.0123 and tiny.model.d_model == shipped.model.d_model
    # ./profiles/mine -> shipped tiny-baseline -> `tiny`, which is the user's (first on the path)
    mine = load_config("mine")
    assert mine.name == "mine" and mine.train.max_steps == 7 and mine.jepa.run_baseline and mine.optim.lr == 0.0123
    # with nothing further down, self-extension is a clear error, not a cycle
    _write(places["user"], "lonely", 'extends = "lonely"\n')
    with pytest.raises(ConfigError, match="extends its own name"):
        load_config("lonely")


def test_profiles_list_says_where_each_comes_from(cli, places):
    _write(places["user"], "tiny", 'description = "mytiny"\nextends = "tiny"\n')
    r = cli("profiles", "list")
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") >= 4}
    assert "shipped" in rows["shakespeare"] and "user" in rows["tiny"] and "shipped" in rows["tiny"]
    assert "mytiny" in r.stdout


def test_profiles_new_writes_an_editable_copy(cli, places):
    r = cli("profiles", "new", "my-tiny", "--from", "tiny")
    assert r.returncode == 0, r.stderr
    dest = places["user"] / "my-tiny.toml"
    text = dest.read_text()
    assert (shipped_dir() / "tiny.toml").read_text() in text  # the comments come along
    assert str(dest) in r.stdout.replace("\n", "")
    # it is a profile now, found from any folder, equal to what it copies but for its name
    copy, orig = load_config("my-tiny"), load_config("tiny")
    assert copy.name == "my-tiny" and copy.model_dump(exclude={"name"}) == orig.model_dump(exclude={"name"})
    dest.write_text(text.replace("d_model = 128", "d_model = 64"))
    assert load_config("my-tiny").model.d_model == 64
    # never overwritten
    r = cli("profiles", "new", "my-tiny", "--from", "shakespeare")
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    assert "d_model = 64" in dest.read_text()


def test_profiles_new_copies_a_profile_that_extends(cli, places):
    r = cli("profiles", "new", "base2", "--from", "tiny-baseline")
    assert r.returncode == 0, r.stderr
    assert load_config("base2").jepa.run_baseline  # its `extends = "tiny"` still resolves


def test_profiles_new_names_a_shadowing_profile(cli, places):
    _write(places["cwd"], "dup", 'extends = "tiny"\n')
    r = cli("profiles", "new", "dup", "--from", "tiny")
    assert r.returncode == 0, r.stderr
    assert "still loads" in r.stdout and "./profiles" in r.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["profiles", "new", "a/b"], "not a profile name"),
        (["profiles", "new", "x.toml"], "not a profile name"),
        (["profiles", "new", "-x"], ""),  # an option typo: a usage error
        (["profiles", "new", "ok", "--from", "tyni"], "Did you mean `tiny`"),
        (["profiles", "new"], "Missing argument"),
    ],
)
def test_profiles_new_bad_input_is_a_clean_error(cli, places, args, words):
    r = cli(*args)
    assert r.returncode == 2
    assert words in r.stderr and "Traceback" not in r.stderr
    assert not places["user"].exists() or not any(places["user"].iterdir())


def test_new_profile_reports_an_unwritable_folder(places, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(blocker))  # a file where the folder would go
    with pytest.raises(ConfigError, match="Cannot write"):
        new_profile("x", "tiny")


# --------------------------------------------------------------------------- the installed wheel


def _symlink_deps(dest: Path) -> Path:
    """This interpreter's site-packages as a folder of links, minus the project itself (so the
    new environment gets torch and friends without a download, and jepa only from the wheel)."""
    import site

    dest.mkdir()
    for sp in site.getsitepackages():
        for item in Path(sp).iterdir():
            n = item.name
            if n.startswith(("jepa", "__editable__", "_distutils_hack")) or n.endswith(".pth") or (dest / n).exists():
                continue
            (dest / n).symlink_to(item)
    return dest


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_lists_and_trains_from_anywhere(tmp_path, mirror):
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    for pkg in ("jepa_core", "jepa_cli", "profiles"):  # a copy: building in place leaves build/ and *.egg-info
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    r = subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("jepa-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert {f"jepa_core/profiles_data/{n}.toml" for n in SHIPPED} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "deps.pth").write_text(str(_symlink_deps(tmp_path / "deps")) + "\n")
    r = subprocess.run([*pip, "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JEPA_PROFILES", "VIRTUAL_ENV")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg"), JEPA_HOME=str(tmp_path / "jepa_home"),
               JEPA_DATA_MIRROR=str(mirror), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", COLUMNS="400")

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), cwd=away, env=env, capture_output=True, text=True, timeout=600)

    where = run(str(py), "-c", "import jepa_core, jepa_cli; print(jepa_core.__file__); print(jepa_cli.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(Path(p).is_relative_to(venv) for p in where.stdout.split()), where.stdout  # not the checkout

    jepa = str(venv / "bin" / "jepa")
    r = run(jepa, "profiles", "list")
    assert r.returncode == 0, r.stderr
    for name in SHIPPED:
        assert name in r.stdout
    assert "shipped" in r.stdout and str(venv) in r.stdout

    r = run(jepa, "train", "--profile", "tiny", "--no-tui", "--set", "train.max_steps=3", "--set", "train.compile=false",
            "--set", "train.eval_every=3", "--set", "train.eval_batches=1", "--set", "train.checkpoint_every=3",
            "--set", "train.sample_tokens=8")
    assert r.returncode == 0, r.stdout + r.stderr
    (run_dir,) = (away / "runs").iterdir()
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    start = next(x for x in recs if x.get("event") == "run_start")
    end = next(x for x in recs if x.get("event") == "run_end")
    assert start["profile"] == "tiny" and end["status"] == "finished" and end["step"] == 3
    assert "train.max_steps=3" in start["overrides"]
