"""`make gpu-wheels`: the wheels (and data) a bare GPU image needs to run `scripts/gpu-check`.

The lent GPU machine has no network and its own Python 3.12 with torch, typer,
rich, tokenizers and safetensors, but not pydantic, textual, tomli-w or
datasets. This script, run here where PyPI is reachable, fills `.whl/` with:

- the project's own wheel (`pip wheel --no-deps .`), the shipped profiles inside;
- for each of the project's requirements the image lacks, a cp312
  manylinux x86-64 wheel, and the same for everything those need that the
  image lacks too (walked through each wheel's Requires-Dist, markers and
  extras evaluated for CPython 3.12 on Linux x86-64);
- "fallback" wheels of small pure-Python packages the image has, where one of
  our wheels asks for a version range (`typing-extensions>=4.16`,
  `rich>=14.2`): pip uses them only when the image's version falls outside
  the range, so an old image package cannot break the install;
- `data/`: the tiny_shakespeare text from the data mirror, laid out like the
  mirror, because the device copies the working tree and not `../shared`.

Versions are those of this venv where it has the package (the combination the
test suite runs with), else the newest that satisfies every range seen.
`--check` re-reads the folder and says whether every requirement is met by a
wheel in it or by a package the image has; it exits 1 when one is not.

Never downloaded: torch and the packages built with it (triton, the CUDA
libraries), numpy and the big columnar stack (pyarrow, pandas). The image has
them, and replacing them would change what the GPU check measures.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections import deque
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")

# The image's Python packages, by name, as the device docs listed them on 2026-11-17
# (/work/.library/device/KINDS.md). Versions are not listed there, hence the fallbacks.
IMAGE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()
IMAGE = {canonicalize_name(n) for n in IMAGE_PACKAGES}

# Never downloaded, not even as a fallback (see the module docstring).
NEVER = re.compile(r"^(torch|torchvision|torchaudio|triton|numpy|pyarrow|pandas|jax.*|nvidia-.*|cuda-.*|cupy-.*)$")

MARKER_ENV = {
    "python_version": PYTHON_VERSION,
    "python_full_version": PYTHON_VERSION + ".3",
    "implementation_name": "cpython",
    "implementation_version": PYTHON_VERSION + ".3",
    "platform_python_implementation": "CPython",
    "platform_machine": "x86_64",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
    "platform_release": "",
    "platform_version": "",
}

# What gpu-check installs, and in which groups (one pip call each, so an optional
# group that cannot resolve on the image does not stop the required one).
REQUIRED_GROUP = ("pydantic", "tomli-w")
OPTIONAL_GROUPS = {"tui": ("textual",), "datasets": ("datasets",)}


ROLE_TEXT = {
    "needed": "not in the image",
    "fallback": "fallback: the image has it, used only if its version is out of range",
    "unused": "not asked for (left over from an earlier run?)",
}


def _set_python(version: str) -> None:
    """Retarget downloads and marker evaluation (tests build a set for the Python at hand)."""
    global PYTHON_VERSION
    PYTHON_VERSION = version
    MARKER_ENV.update(python_version=version, python_full_version=version + ".0", implementation_version=version + ".0")


def say(msg: str) -> None:
    print(f"gpu-wheels: {msg}", flush=True)


def wheel_requirements(path: Path) -> list[Requirement]:
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(name).decode("utf-8", "replace")
    reqs = []
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line
        if line.startswith("Requires-Dist:"):
            reqs.append(Requirement(line.split(":", 1)[1].strip()))
    return reqs


def wheels_in(dest: Path) -> dict[str, tuple[Version, Path]]:
    found: dict[str, tuple[Version, Path]] = {}
    for p in sorted(dest.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(p.name)
        found[canonicalize_name(name)] = (version, p)
    return found


def local_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def download(name: str, spec: SpecifierSet, dest: Path) -> Path:
    """One wheel, no dependencies, for CPython PYTHON_VERSION on manylinux x86-64."""
    mine = local_version(name)
    target = f"{name}=={mine}" if mine and spec.contains(mine, prereleases=True) else f"{name}{spec}"
    before = set(dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
           "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp" + PYTHON_VERSION.replace(".", ""),
           "--abi", "abi3", "--abi", "none"]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    cmd += ["-d", str(dest), target]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        err = "\n".join(l for l in r.stderr.splitlines() if not l.startswith("WARNING: Location"))
        raise SystemExit(f"gpu-wheels: pip download {target} failed:\n{err.strip()}")
    new = set(dest.glob("*.whl")) - before
    got = [p for p in new if canonicalize_name(parse_wheel_filename(p.name)[0]) == canonicalize_name(name)]
    if not got:  # already there under the same file name
        got = [p for p in dest.glob("*.whl") if canonicalize_name(parse_wheel_filename(p.name)[0]) == canonicalize_name(name)]
    return got[0]


def project_requirements() -> list[Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(r) for r in data["project"]["dependencies"]]


class Walk:
    """Collect the wheel set: a worklist over requirements, one wheel per name."""

    def __init__(self, dest: Path, offline: bool):
        self.dest, self.offline = dest, offline
        self.have = wheels_in(dest)
        self.extras_done: dict[str, set[str]] = {}
        self.from_image: dict[str, set[str]] = {}  # name -> ranges left to the image, unchecked
        self.problems: list[str] = []
        self.roles: dict[str, str] = {}  # name -> "needed" | "fallback"

    def run(self, roots: list[tuple[Requirement, str]]) -> None:
        queue = deque(roots)
        while queue:
            req, by = queue.popleft()
            name = canonicalize_name(req.name)
            if name == "jepa":
                continue
            in_image = name in IMAGE
            spec = f"{req.specifier}" if req.specifier else ""
            if NEVER.match(name) or (in_image and not req.specifier and not req.extras):
                ranges = self.from_image.setdefault(name, set())
                if spec:
                    ranges.add(f"{spec} (for {by})")
                if not in_image:
                    self.problems.append(f"{name}{spec} (for {by}) is neither in the image nor downloadable here")
                continue
            # in the image but asked for with a range or extras: a fallback wheel
            self.roles[name] = "needed" if (not in_image or self.roles.get(name) == "needed") else "fallback"
            if name not in self.have:
                if self.offline:
                    self.problems.append(f"{name}{spec} (for {by}) has no wheel in {self.dest}")
                    continue
                say(f"downloading {name}{spec} (for {by})")
                path = download(req.name, req.specifier, self.dest)
                self.have[name] = (parse_wheel_filename(path.name)[1], path)
            version, path = self.have[name]
            if not req.specifier.contains(version, prereleases=True):
                self.problems.append(f"{path.name} does not satisfy {name}{spec} (for {by})")
            # a package's own requirements the first time, its extras' when first asked for
            done = self.extras_done.get(name)
            extras = ({""} | set(req.extras)) if done is None else (set(req.extras) - done)
            self.extras_done[name] = (done or {""}) | set(req.extras)
            if extras:
                for sub in wheel_requirements(path):
                    if sub.marker is None:
                        applies = "" in extras
                    else:
                        applies = any(sub.marker.evaluate(dict(MARKER_ENV, extra=e)) for e in extras)
                    if applies:
                        queue.append((Requirement(str(sub).split(";")[0].strip()), name))


def build_project_wheel(dest: Path) -> Path:
    for old in dest.glob("jepa-*.whl"):
        old.unlink()
    say("building the project wheel (pip wheel --no-deps .)")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(dest), str(ROOT)],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"gpu-wheels: pip wheel failed:\n{r.stderr.strip()}")
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    return next(dest.glob("jepa-*.whl"))


def _carries_profiles(wheel: Path) -> bool:
    with zipfile.ZipFile(wheel) as z:
        return any(n.startswith("jepa_core/profiles_data/") and n.endswith(".toml") for n in z.namelist())


def copy_data(dest: Path) -> Path | None:
    src = Path(os.environ.get("JEPA_DATA_MIRROR") or ROOT.parent / "shared" / "data")
    text = src / "tiny_shakespeare" / "input.txt"
    if not text.is_file():
        say(f"no data mirror at {src}: data/ not made (set JEPA_DATA_MIRROR)")
        return None
    out = dest / "data" / "tiny_shakespeare"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(text, out / "input.txt")
    return out / "input.txt"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, default=ROOT / ".whl")
    ap.add_argument("--check", action="store_true", help="only check the folder's completeness (no network)")
    ap.add_argument("--python-version", default=PYTHON_VERSION, help="the target image's Python (default %(default)s)")
    args = ap.parse_args(argv)
    _set_python(args.python_version)
    dest: Path = args.dest
    dest.mkdir(parents=True, exist_ok=True)

    if not args.check:
        build_project_wheel(dest)
        copy_data(dest)
    roots = [(r, "jepa") for r in project_requirements()]
    walk = Walk(dest, offline=args.check)
    walk.run(roots)

    have = wheels_in(dest)
    total = sum(p.stat().st_size for _, p in have.values())
    say(f"{len(have)} wheels in {dest}, {total / 2**20:.1f} MiB:")
    for name, (version, path) in sorted(have.items()):
        role = "the project" if name == "jepa" else ROLE_TEXT[walk.roles.get(name, "unused")]
        print(f"  {path.name:<70} {role}")
    if walk.from_image:
        print("  left to the image (its versions are not known here):")
        for name, ranges in sorted(walk.from_image.items()):
            print(f"    {name}{(' ' + '; '.join(sorted(ranges))) if ranges else ''}")
    for group in (REQUIRED_GROUP, *OPTIONAL_GROUPS.values()):
        for top in group:
            if canonicalize_name(top) not in have:
                walk.problems.append(f"{top} (installed by gpu-check) has no wheel")
    if "jepa" not in have:
        walk.problems.append("the project's own wheel is missing")
    elif not _carries_profiles(have["jepa"][1]):
        # a wheel built before the profiles were package data: installed, it finds no profile
        walk.problems.append(f"{have['jepa'][1].name} carries no profiles (jepa_core/profiles_data/): build it again")
    if not (dest / "data" / "tiny_shakespeare" / "input.txt").is_file():
        walk.problems.append("data/tiny_shakespeare/input.txt is missing (set JEPA_DATA_MIRROR and re-run)")
    if walk.problems:
        say("INCOMPLETE:")
        for p in walk.problems:
            print(f"  - {p}")
        return 1
    say("complete: every requirement is met by a wheel here or by a package the image has")
    return 0


if __name__ == "__main__":
    sys.exit(main())
