"""The run-directory contract (DESIGN section 5): every name and small file format in one place.

Stdlib only, so readers (`inspect`, `runlog`, the dashboard, `ablate`) use it
without importing torch. The writer (the trainer and its checkpointer) uses the
same names, so a reader and the writer cannot disagree on where a file lives.

    runs/<profile>-<UTC stamp>/
      config.toml  metrics.jsonl  tokenizer.json
      train.pid        {"pid", "host", "started"} of the trainer (informative)
      train.lock       held with flock() while a trainer runs (authoritative)
      heartbeat.json   {"step", "max_steps", "phase", "time"}: cheap liveness, written often
      stop             created to ask the trainer to stop
      checkpoints/step-XXXXXXXX.safetensors / .state.safetensors, latest.json, best.json
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jepa_core.errors import CheckpointError, JepaError
from jepa_core.fsutil import atomic_write_text

METRICS = "metrics.jsonl"
CONFIG = "config.toml"
TOKENIZER = "tokenizer.json"
PIDFILE = "train.pid"
LOCKFILE = "train.lock"
HEARTBEAT = "heartbeat.json"
STOPFILE = "stop"
CKPT_DIR = "checkpoints"
LATEST = "latest.json"
BEST = "best.json"

_WEIGHTS_RE = re.compile(r"^step-(\d{8})\.safetensors$")
_STATE_RE = re.compile(r"^step-(\d{8})\.state\.safetensors$")


# --------------------------------------------------------------------------- time


def utc_now_iso() -> str:
    """ISO 8601 UTC time to the second: the `created` stamps of checkpoints, manifests and reports."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def utc_stamp() -> str:
    """UTC time as used in run and sweep directory names (sorts by time)."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def new_run_dir(out_dir: str | Path, profile: str) -> Path:
    """runs/<profile>-<UTC timestamp>, with a numeric suffix when that exists already."""
    base = Path(out_dir) / f"{profile}-{utc_stamp()}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def holds_run(path: Path) -> bool:
    """True when `path` is a directory some trainer has written a run into."""
    p = Path(path)
    return p.is_dir() and any((p / n).exists() for n in (METRICS, CONFIG, PIDFILE, CKPT_DIR))


def enclosing_run(path: str | Path) -> Path | None:
    """The run directory `path` lies inside (its nearest ancestor holding a run), else None.

    Stricter than `holds_run` on purpose: an ancestor counts only when it has what a
    trainer writes (metrics.jsonl, or config.toml with tokenizer.json), so a project folder
    that merely keeps a config.toml of its own does not refuse every run beneath it.
    """
    # abspath, not resolve: the error names the run as the user reaches it, not via symlink targets
    for parent in Path(os.path.abspath(path)).parents:
        if (parent / METRICS).is_file() or ((parent / CONFIG).is_file() and (parent / TOKENIZER).is_file()):
            return parent
    return None


def _shown(p: Path) -> str:
    """`p` relative to the working directory when below it (as the user likely typed it), else absolute."""
    try:
        return str(p.relative_to(Path.cwd().absolute())) or "."
    except ValueError:
        return str(p)


def refuse_nested_run(run_dir: str | Path, *, out_dir: str | None = None) -> None:
    """Refuse a new run inside an existing one (`--run-dir RUN/checkpoints`, `train.out_dir = RUN`).

    Nothing would be overwritten, but the new run's files would mix with the old run's
    (in its checkpoints folder, or among its files) where `jepa runs` does not look.
    `out_dir` is the train.out_dir the directory came from; None for an explicit --run-dir.
    """
    import shlex

    outer = enclosing_run(run_dir)
    if outer is None:
        return
    resume = f"jepa train --resume {shlex.quote(_shown(outer))}"
    further = "(with --set train.max_steps=N to train it past its last step)"
    if out_dir is not None:
        beside = _shown(outer.parent).replace("\\", "\\\\").replace('"', '\\"')
        fix = shlex.quote(f'train.out_dir="{beside}"')
        raise JepaError(
            f"train.out_dir = {out_dir!r} is inside the run {_shown(outer)}; a new run there would be nested in it.",
            hint=f"Start new runs beside it with --set {fix}, or continue that run with `{resume}` {further}.",
        )
    raise JepaError(
        f"The run directory {run_dir} is inside the run {_shown(outer)}; a new run there would be nested in it.",
        hint=f"Continue that run with `{resume}` {further}, or give --run-dir a directory outside it, e.g. {_shown(outer.parent / 'NEW-RUN')}.",
    )


# --------------------------------------------------------------------------- checkpoints


def weights_name(step: int) -> str:
    return f"step-{step:08d}.safetensors"


def state_name(step: int) -> str:
    return f"step-{step:08d}.state.safetensors"


def weights_step(path: Path) -> int | None:
    """The step in a `step-XXXXXXXX.safetensors` name, else None."""
    m = _WEIGHTS_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class CheckpointRef:
    run_dir: Path
    step: int
    weights: Path
    state: Path
    # set by `resume_checkpoint` when it did not take latest.json at its word: why, and
    # the newer checkpoints that failed verification (to be set aside once the run is claimed)
    note: str | None = field(default=None, compare=False)
    rejected: tuple["CheckpointRef", ...] = field(default=(), compare=False)


def _ref(ckpt_dir: Path, step: int) -> CheckpointRef:
    return CheckpointRef(run_dir=ckpt_dir.parent, step=step, weights=ckpt_dir / weights_name(step), state=ckpt_dir / state_name(step))


def list_checkpoints(ckpt_dir: Path) -> list[CheckpointRef]:
    """Checkpoints in `ckpt_dir` whose weights file exists, oldest first."""
    try:
        names = os.listdir(ckpt_dir)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CheckpointError(f"Cannot list {ckpt_dir}: {e.strerror or e}.") from None
    steps = sorted(int(m.group(1)) for n in names if (m := _WEIGHTS_RE.match(n)))
    return [_ref(Path(ckpt_dir), s) for s in steps]


def _read_pointer(path: Path, run_dir: Path) -> CheckpointRef | None:
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        step, weights = d["step"], d["weights"]
        state = d.get("state") or (state_name(step) if isinstance(step, int) else None)
        if not (isinstance(step, int) and not isinstance(step, bool) and isinstance(weights, str) and isinstance(state, str)):
            raise TypeError("expected an integer step and file names")
        if "/" in weights + state or not weights:
            raise TypeError("file names must name files in the checkpoints folder")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}).") from None
    return CheckpointRef(run_dir=Path(run_dir), step=step, weights=path.parent / weights, state=path.parent / state)


def read_latest(run_dir: Path) -> CheckpointRef | None:
    """The checkpoint named by checkpoints/latest.json, or None when there is none."""
    return _read_pointer(Path(run_dir) / CKPT_DIR / LATEST, Path(run_dir))


def read_best(run_dir: Path) -> CheckpointRef | None:
    """The checkpoint named by checkpoints/best.json (best val loss so far), or None."""
    return _read_pointer(Path(run_dir) / CKPT_DIR / BEST, Path(run_dir))


def write_pointer(ckpt_dir: Path, name: str, step: int, **extra: Any) -> None:
    """Replace latest.json or best.json atomically, after the files it names are complete."""
    body = {"step": step, "weights": weights_name(step), "state": state_name(step), **extra}
    atomic_write_text(Path(ckpt_dir) / name, json.dumps(body) + "\n")


def resolve_checkpoint(path: str | Path) -> tuple[CheckpointRef, str | None]:
    """A run directory, a checkpoints/ folder, a weights file or a state file -> a checkpoint.

    The second value says how a directory was resolved (None for a file). A
    directory resolves through latest.json, or to its newest weights file when
    latest.json is missing or names a file that does not exist (said in the note).
    `RUN:best` names the run's best checkpoint (checkpoints/best.json).
    """
    text = str(path)
    if text.endswith(":best") and not Path(text).exists():
        run = Path(text[: -len(":best")])
        run = run.parent if run.name == CKPT_DIR else run
        ref = read_best(run)
        if ref is None:
            raise CheckpointError(f"{run} has no checkpoints/{BEST}: no best checkpoint was kept.", hint="Runs keep one with train.keep_best = true once they have evaluated.")
        return ref, f"{run / CKPT_DIR / BEST} names step {ref.step}"
    p = Path(path)
    if not p.exists():
        raise CheckpointError(
            f"{p} does not exist.",
            hint="Pass a run directory (runs/<run>), its checkpoints/ folder, or a step-*.safetensors file.",
        )
    if p.is_file():
        if (m := _STATE_RE.match(p.name)) is not None:
            step = int(m.group(1))
            return CheckpointRef(run_dir=p.parent.parent, step=step, weights=p.with_name(weights_name(step)), state=p), None
        step = weights_step(p)
        state = p.with_name(state_name(step)) if step is not None else p.with_name(p.stem + ".state.safetensors")
        return CheckpointRef(run_dir=p.parent.parent, step=-1 if step is None else step, weights=p, state=state), None
    ckpt_dir = p / CKPT_DIR if (p / CKPT_DIR).is_dir() else p
    ckpts = list_checkpoints(ckpt_dir)
    if not ckpts and ckpt_dir == p and not (p / LATEST).exists():
        raise CheckpointError(
            f"{p} is a directory without checkpoints (no checkpoints/ folder, {LATEST} or step-*.safetensors).",
            hint="Pass a run directory written by `jepa train` (runs/<run>), its checkpoints/ folder, or a .safetensors file. "
            "A run writes its first checkpoint after train.checkpoint_every steps or when it ends.",
        )
    try:
        ref = _read_pointer(ckpt_dir / LATEST, ckpt_dir.parent)
        problem = f"{ckpt_dir / LATEST} is missing" if ref is None else (None if ref.weights.is_file() else f"{ckpt_dir / LATEST} names {ref.weights.name}, which does not exist")
    except CheckpointError as e:
        ref, problem = None, e.message.rstrip(".")
    if ref is not None and problem is None:
        return ref, f"{ckpt_dir / LATEST} names step {ref.step}"
    if not ckpts:
        raise CheckpointError(f"{ckpt_dir} holds no weights checkpoints (step-*.safetensors); {problem}.")
    return ckpts[-1], f"{problem}; using the newest weights file, {ckpts[-1].weights.name}"


def newest_run(out_dir: str | Path, profile: str | None = None) -> Path | None:
    """The run under out_dir (of `profile`, or of any profile) whose latest.json changed last."""
    pattern = f"{profile}-*" if profile else "*"
    runs = [p for p in Path(out_dir).glob(pattern) if (p / CKPT_DIR / LATEST).is_file()]
    return max(runs, key=lambda p: (p / CKPT_DIR / LATEST).stat().st_mtime, default=None)


# --------------------------------------------------------------------------- verifying checkpoints before a resume

# bytes per element of the safetensors dtypes (the names in the file header)
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
                "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file after checking that the file is whole.

    Checks, without reading tensor data: the header parses, every tensor's byte
    range matches its dtype and shape, the ranges tile the data area, and the
    file ends where the last range does (a file cut short by a crash or a full
    disk fails here). Raises ValueError saying what is wrong, OSError if unreadable.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes, shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER, size - 8):
            raise ValueError(f"the header claims {n} bytes but the file has {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            shape = [int(d) for d in info["shape"]]
            dtype = str(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"tensor {name!r} has a malformed header entry") from None
        numel = 1
        for d in shape:
            numel *= d
        width = _DTYPE_BYTES.get(dtype)
        if width is not None and end - begin != numel * width:
            raise ValueError(f"tensor {name!r} spans {end - begin} bytes, its dtype and shape need {numel * width}")
        spans.append((begin, end))
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos or end < begin:
            raise ValueError("the tensors' byte ranges overlap or leave gaps")
        pos = end
    if size != 8 + n + pos:
        raise ValueError(f"the file has {size} bytes, its header describes {8 + n + pos}")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("the metadata is not a JSON object")
    return header


def verify_checkpoint(ref: CheckpointRef) -> str | None:
    """None when both files of `ref` are whole and agree on its step; else what is wrong (one phrase).

    Whole means `read_safetensors_header` accepts the file; agreeing means the
    `step` in each file's metadata equals the step in its name (a file renamed or
    copied over another fails). Tensor values are not checked: no checksum is kept.
    """
    named = weights_step(ref.weights)
    if named is not None and named != ref.step:
        return f"it is step {ref.step} but names {ref.weights.name}"
    for kind, path in (("weights", ref.weights), ("state", ref.state)):
        try:
            header = read_safetensors_header(path)
        except FileNotFoundError:
            return f"its {kind} file {path.name} is missing"
        except OSError as e:
            return f"its {kind} file {path.name} cannot be read ({e.strerror or e})"
        except ValueError as e:
            return f"its {kind} file {path.name} is damaged ({e})"
        meta_step = (header.get("__metadata__") or {}).get("step")
        if meta_step is None:
            return f"its {kind} file {path.name} has no `step` in its metadata: it was not written by `jepa train`"
        if meta_step != str(ref.step):
            return f"its {kind} file {path.name} holds step {meta_step}, not {ref.step}"
    return None


def resume_checkpoint(path: str | Path) -> CheckpointRef:
    """The checkpoint to resume from: as `resolve_checkpoint`, but only one that verifies.

    For a run directory (or its checkpoints/ folder): the one latest.json names
    when it verifies, else the newest that does, with `note` saying why and
    `rejected` listing the newer ones that failed. A file named explicitly must
    verify itself; no other is substituted for it.
    """
    ref, how = resolve_checkpoint(path)
    p = Path(path)
    if p.is_file() or str(path).endswith(":best"):
        problem = verify_checkpoint(ref)
        if problem is None:
            return ref
        ckpt_dir = ref.weights.parent
        good = next((c for c in reversed(list_checkpoints(ckpt_dir)) if verify_checkpoint(c) is None), None)
        raise CheckpointError(
            f"Cannot resume from {ref.weights}: {problem}.",
            hint=(f"The newest checkpoint there that verifies is {good.weights.name}; `jepa train --resume {ref.run_dir}` "
                  "resumes from it." if good else "No checkpoint in that folder verifies; start a new run.")
            + " `jepa inspect FILE` shows what a file holds.",
        )
    ckpt_dir = p / CKPT_DIR if (p / CKPT_DIR).is_dir() else p
    pointer = ckpt_dir / LATEST
    from_pointer = how == f"{pointer} names step {ref.step}"  # not "names FILE, which does not exist"
    problem = verify_checkpoint(ref)
    if problem is None:
        if from_pointer:
            return ref
        # latest.json missing or unreadable (a kill before its first write, a stray edit): the
        # newest file is a guess that happened to verify, and a guess is said, like any fallback
        note = f"{how}, which verifies; resuming from step {ref.step}"
        return CheckpointRef(ref.run_dir, ref.step, ref.weights, ref.state, note=note)
    why = f"{pointer} names step {ref.step}, but {problem}" if from_pointer else f"{how}; but {problem}"
    skipped = [ref]
    for cand in reversed(list_checkpoints(ckpt_dir)):
        if cand.weights == ref.weights:
            continue
        cand_problem = verify_checkpoint(cand)
        if cand_problem is None:
            # by the step in the file name: a pointer may name an older file than its step says
            rejected = tuple(c for c in skipped if (weights_step(c.weights) or -1) > cand.step and c.weights.exists())
            note = f"{why}; resuming from step {cand.step} ({cand.weights.name}), the newest checkpoint that verifies"
            return CheckpointRef(cand.run_dir, cand.step, cand.weights, cand.state, note=note, rejected=rejected)
        skipped.append(cand)
        why += f"; {cand.weights.name}: {cand_problem}"
    raise CheckpointError(
        f"Cannot resume {ckpt_dir.parent}: no checkpoint verifies ({why}).",
        hint="Start a new run without --resume; `jepa inspect FILE` shows what each file holds.",
    )


CORRUPT_SUFFIX = ".corrupt"


def set_aside(refs: tuple[CheckpointRef, ...] | list[CheckpointRef]) -> list[str]:
    """Rename the files of checkpoints that failed verification to `NAME.corrupt`: kept for a look,
    but no longer a checkpoint to rotation, resolution or a later resume. Returns the new names."""
    moved = []
    for ref in refs:
        for path in (ref.weights, ref.state):
            try:
                os.replace(path, path.with_name(path.name + CORRUPT_SUFFIX))
            except FileNotFoundError:
                continue
            moved.append(path.name + CORRUPT_SUFFIX)
    return moved


def sweep_temp_files(run_dir: Path) -> list[str]:
    """Remove the `.NAME.*.tmp` files that atomic writes leave behind when a process is killed mid-write.

    Only the trainer holding the run's lock may call this: another live writer's
    temp files would look the same. Returns the removed names (relative to run_dir).
    """
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CKPT_DIR):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    os.unlink(folder / name)
                except OSError:
                    continue  # a read-only folder: the write that needs the space will say so
                removed.append(str((folder / name).relative_to(run_dir)))
    return sorted(removed)


def sweep_half_checkpoints(run_dir: Path) -> list[str]:
    """Remove half checkpoints: a weights file without its state file (the state write failed, as on
    a full disk) or a state file without its weights (rotation killed between its two deletions).

    latest.json is replaced only after both files are whole, so it never names one of these and no
    resume can use them; a file latest.json or best.json does name is left for verification to judge
    (and set aside, with a reason). Only the trainer holding the run's lock may call this: another
    writer's checkpoint looks like a half one between its two files. Returns the removed names
    (relative to run_dir).
    """
    ckpt_dir = Path(run_dir) / CKPT_DIR
    try:
        names = set(os.listdir(ckpt_dir))
    except OSError:
        return []
    named: set[str] = set()
    for read in (read_latest, read_best):
        try:
            ref = read(Path(run_dir))
        except CheckpointError:
            continue
        if ref is not None:
            named |= {ref.weights.name, ref.state.name}
    removed = []
    for name in sorted(names - named):
        if (m := _WEIGHTS_RE.match(name)) is not None:
            half = state_name(int(m.group(1))) not in names
        elif (m := _STATE_RE.match(name)) is not None:
            half = weights_name(int(m.group(1))) not in names
        else:
            continue
        if not half:
            continue
        try:
            os.unlink(ckpt_dir / name)
        except OSError:
            continue  # a read-only folder: harmless, as the file was
        removed.append(f"{CKPT_DIR}/{name}")
    return removed


# --------------------------------------------------------------------------- the trainer's presence


def write_pidfile(run_dir: Path) -> None:
    (Path(run_dir) / PIDFILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))


def remove_pidfile(run_dir: Path) -> None:
    try:
        (Path(run_dir) / PIDFILE).unlink()
    except FileNotFoundError:
        pass


def read_pidfile(run_dir: Path) -> dict[str, Any] | None:
    """`train.pid` as a dict ({"pid", "host", "started"}), or None if absent or unreadable."""
    try:
        info = json.loads((Path(run_dir) / PIDFILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int) or isinstance(info.get("pid"), bool):
        return None
    return info


def pid_is_local_and_alive(info: Mapping[str, Any] | None) -> bool | None:
    """True/False for a pid file written on this host; None when it names another host."""
    if not info:
        return None
    host = info.get("host")
    if host and host != socket.gethostname():
        return None
    pid = int(info["pid"])
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunBusy(JepaError):
    """Another trainer holds this run directory."""


class RunLock:
    """One trainer per run directory: an exclusive flock on `train.lock`, held for the run's life.

    The OS drops the lock when the process dies however it dies, so a stale pid
    file never blocks a resume. Where flock is unavailable (not POSIX) the lock
    is advisory only and always succeeds.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCKFILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            info = read_pidfile(self.path.parent)
            who = f"process {info['pid']} on {info.get('host', '?')}" if info else "another process"
            raise RunBusy(
                f"{self.path.parent} is being trained by {who}: one trainer per run directory.",
                hint=f"Watch it with `jepa watch {self.path.parent}`, stop it with `touch {self.path.parent / STOPFILE}`, "
                "or start a separate run without --run-dir/--resume.",
            ) from None
        self._fd = fd
        return self

    def probe(self) -> None:
        """Raise RunBusy if a trainer holds the lock now (an early, cheap check; `acquire` is the real one)."""
        if self.path.exists():
            try:
                self.acquire()
            except OSError:
                return  # cannot even open the lock file: `acquire` will say so when it matters
            self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def write_heartbeat(run_dir: Path, **fields: Any) -> None:
    """Replace heartbeat.json (no fsync: it is a liveness hint, rewritten many times a second at most)."""
    path = Path(run_dir) / HEARTBEAT
    tmp = path.with_name(f".{HEARTBEAT}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({**fields, "time": time.time()}))
        os.replace(tmp, path)
    except OSError:  # a missing heartbeat only makes the dashboard less lively; the run goes on
        try:
            tmp.unlink()
        except OSError:
            pass


def read_heartbeat(run_dir: Path) -> dict[str, Any] | None:
    try:
        d = json.loads((Path(run_dir) / HEARTBEAT).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None
