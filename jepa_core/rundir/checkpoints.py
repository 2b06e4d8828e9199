"""Checkpoints in a run directory: listing, the latest/best pointers, resolving what the user named,
verifying before a resume, and sweeping what a killed writer left behind (stdlib only)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jepa_core.errors import CheckpointError
from jepa_core.fsutil import atomic_write_text

from . import digest
from .digest import DIGEST_KEY
from .header import HeaderError, read_header
from .lock import RunBusy, RunLock
from .layout import BEST, CKPT_DIR, LATEST, STATE_RE, TOKENIZER, WEIGHTS_RE, state_name, weights_name, weights_step


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
    # set by `verified_checkpoint`: names of its files used without checking their tensor bytes (no digest)
    unverified: tuple[str, ...] = field(default=(), compare=False)


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
    steps = sorted(int(m.group(1)) for n in names if (m := WEIGHTS_RE.match(n)))
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


def pointer_text(step: int, **extra: Any) -> str:
    """The body of latest.json or best.json naming the checkpoint of `step`."""
    return json.dumps({"step": step, "weights": weights_name(step), "state": state_name(step), **extra}) + "\n"


def write_pointer(ckpt_dir: Path, name: str, step: int, **extra: Any) -> None:
    """Replace latest.json or best.json atomically, after the files it names are complete (the trainer
    writes through its RunFolder instead)."""
    atomic_write_text(Path(ckpt_dir) / name, pointer_text(step, **extra))


def resolve_checkpoint(path: str | Path) -> tuple[CheckpointRef, str | None]:
    """A run directory, a checkpoints/ folder, a weights file or a state file -> a checkpoint.

    The second value says how a directory was resolved (None for a file). A
    directory resolves through latest.json, or to its newest weights file when
    latest.json is missing or names a file that does not exist (said in the note).
    `RUN:best` names the run's best checkpoint (checkpoints/best.json), `RUN:step-N` the
    checkpoint of step N.
    """
    text = str(path)
    if (named := _step_suffix(text)) is not None:
        return named
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
        if (m := STATE_RE.match(p.name)) is not None:
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


_STEP_SUFFIX = re.compile(r"^(.+):step-0*(\d+)$")


def _step_suffix(text: str) -> tuple[CheckpointRef, str] | None:
    """`RUN:step-N` -> (the checkpoint of step N, how it was chosen); None for any other text."""
    m = _STEP_SUFFIX.match(text)
    if m is None or Path(text).exists():
        return None
    run, step = Path(m.group(1)), int(m.group(2))
    run = run.parent if run.name == CKPT_DIR else run
    if not run.is_dir():
        raise CheckpointError(f"{run} does not exist.", hint="Pass RUN:step-N with RUN a run directory written by `jepa train`, e.g. runs/<run>:step-200.")
    steps = [ref.step for ref in list_checkpoints(run / CKPT_DIR)]
    if step not in steps:
        have = f"its checkpoints are of steps {', '.join(map(str, steps))}" if steps else "it has no checkpoints"
        raise CheckpointError(
            f"{run} has no checkpoint of step {step}: {have}.",
            hint=f"Name one of those steps ({run}:step-N), the run itself ({run}: its latest checkpoint) or {run}:best.",
        )
    return _ref(run / CKPT_DIR, step), f"{text} names {weights_name(step)}"


def checkpoint_tokenizer(ref: CheckpointRef, want_sha256: str | None) -> Path:
    """The tokenizer.json a checkpoint was trained with: its run directory's, or one beside the file;
    checked against the sha256 the checkpoint recorded (`tokenizer_sha256`) when it has one."""
    found = next((p for p in (ref.run_dir / TOKENIZER, ref.weights.parent / TOKENIZER) if p.is_file()), None)
    if found is None:
        raise CheckpointError(
            f"No {TOKENIZER} for {ref.weights}: looked in {ref.run_dir} and {ref.weights.parent}.",
            hint=f"Pass the run directory written by `jepa train` (it holds {TOKENIZER}), or copy the run's {TOKENIZER} next to the checkpoint.",
        )
    if want_sha256:
        try:
            got = hashlib.sha256(found.read_bytes()).hexdigest()
        except OSError as e:
            raise CheckpointError(f"Cannot read {found}: {e.strerror or e}.") from None
        if got != want_sha256:
            raise CheckpointError(
                f"{found} is not the tokenizer {ref.weights.name} was trained with (its sha256 differs from the checkpoint's tokenizer_sha256).",
                hint="Use the tokenizer.json of the run that wrote the checkpoint.",
            )
    return found


def newest_run(out_dir: str | Path, profile: str | None = None) -> Path | None:
    """The run under out_dir (of `profile`, or of any profile) whose latest.json changed last."""
    pattern = f"{profile}-*" if profile else "*"
    runs = [p for p in Path(out_dir).glob(pattern) if (p / CKPT_DIR / LATEST).is_file()]
    return max(runs, key=lambda p: (p / CKPT_DIR / LATEST).stat().st_mtime, default=None)


# --------------------------------------------------------------------------- verifying checkpoints before use


@dataclass(frozen=True)
class FileCheck:
    """What `check_file` found: a `problem` (one phrase naming the file) or none; the metadata;
    and whether the tensor bytes were verified (`unverified` says why not, when they were not)."""

    problem: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    unverified: str | None = None


def check_file(path: Path, kind: str = "weights") -> FileCheck:
    """The one check of a checkpoint file before its tensors are used: the header is whole
    (`read_header(whole=True)`) and the tensor bytes hash to the `payload_digest` recorded when it
    was written (`digest.py`). Every reader that loads tensors reaches it through
    `verified_checkpoint` (`check_checkpoint` for both files of a checkpoint).

    A file without a digest (written before digests existed) or with one this installation cannot
    compute is not a problem: `unverified` says so, for a note.
    """
    path = Path(path)
    try:
        header = read_header(path, whole=True)
    except FileNotFoundError:
        return FileCheck(f"its {kind} file {path.name} is missing")
    except OSError as e:
        return FileCheck(f"its {kind} file {path.name} cannot be read ({e.strerror or e})")
    except HeaderError as e:
        return FileCheck(f"its {kind} file {path.name} is damaged ({e.reason})")
    meta = header.metadata
    stored = meta.get(DIGEST_KEY)
    if stored is None:
        return FileCheck(metadata=meta, unverified="written before checkpoints carried a payload digest")
    parsed = digest.parse(stored)
    if parsed is None:
        return FileCheck(f"its {kind} file {path.name} is damaged (its {DIGEST_KEY} {stored[:80]!r} is not ALGORITHM:HEX)", meta)
    algorithm, want = parsed
    try:
        got = digest.file_digest(header, algorithm)
    except OSError as e:
        return FileCheck(f"its {kind} file {path.name} cannot be read ({e.strerror or e})", meta)
    if got is None:
        return FileCheck(metadata=meta, unverified=f"its digest is {algorithm}, which this installation cannot compute")
    if got != f"{algorithm}:{want}":
        return FileCheck(
            f"its {kind} file {path.name} is corrupt: its tensor bytes do not match the {algorithm} digest "
            "recorded when it was written", meta,
        )
    return FileCheck(metadata=meta)


@dataclass(frozen=True)
class Verdict:
    problem: str | None  # what is wrong with the checkpoint (one phrase), None when it may be used
    unverified: tuple[str, ...] = ()  # names of its files whose tensor bytes could not be checked, for a note


def check_checkpoint(ref: CheckpointRef, *, state: bool = True) -> Verdict:
    """Both files of `ref` (the weights only when `state` is False) pass `check_file` and agree on its step.

    Agreeing means the `step` in each file's metadata equals the step in its name (a file
    renamed or copied over another fails). Without `state` (sampling, exporting: a weights file
    copied on its own), a file that carries no step or no step in its name is not asked to.
    """
    named = weights_step(ref.weights)
    if named is not None and named != ref.step:
        return Verdict(f"it is step {ref.step} but names {ref.weights.name}")
    files = (("weights", ref.weights), ("state", ref.state)) if state else (("weights", ref.weights),)
    unverified = []
    for kind, path in files:
        check = check_file(path, kind)
        if check.problem is not None:
            return Verdict(check.problem)
        meta_step = check.metadata.get("step")
        if meta_step is None and state:
            return Verdict(f"its {kind} file {path.name} has no `step` in its metadata: it was not written by `jepa train`")
        if meta_step is not None and ref.step >= 0 and meta_step != str(ref.step):
            return Verdict(f"its {kind} file {path.name} holds step {meta_step}, not {ref.step}")
        if check.unverified is not None:
            unverified.append(path.name)
    return Verdict(None, tuple(unverified))


def verify_checkpoint(ref: CheckpointRef, *, state: bool = True) -> str | None:
    """None when `ref` may be used (`check_checkpoint`); else what is wrong, in one phrase."""
    return check_checkpoint(ref, state=state).problem


def unverified_note(ref: CheckpointRef) -> str | None:
    """The note for a checkpoint used without checking its tensor bytes (no digest), or None."""
    if not ref.unverified:
        return None
    names = " and ".join(ref.unverified)
    return (f"{names} {'was' if len(ref.unverified) == 1 else 'were'} written before checkpoints carried a payload "
            "digest (or with one this installation cannot compute): its tensors are used without checking their bytes")


def verified_checkpoint(path: str | Path, *, state: bool = True) -> tuple[CheckpointRef, str | None]:
    """The checkpoint `path` names, as `resolve_checkpoint` does, but only one that passes `check_checkpoint`.

    Every command that loads a checkpoint's tensors asks here: resume (`state=True`: both files),
    sampling and exporting (`state=False`: the weights). For a run directory (or its checkpoints/
    folder): the one latest.json names when it verifies, else the newest that does, with `note`
    saying why and `rejected` listing the newer ones that failed (the trainer sets them aside as
    `*.corrupt` once it holds the run's lock; readers leave them). A file named explicitly, or
    `RUN:best`, must verify itself: no other is substituted for it. `unverified` names the files
    used without a digest check (`unverified_note`). Returns the checkpoint and how a directory
    was resolved (None for a file).
    """
    ref, how = resolve_checkpoint(path)
    p = Path(path)
    verb, doing = ("resume from", "resuming from") if state else ("use", "using")
    if p.is_file() or str(path).endswith(":best") or (not p.exists() and _STEP_SUFFIX.match(str(path))):
        verdict = check_checkpoint(ref, state=state)
        if verdict.problem is None:
            return _with(ref, unverified=verdict.unverified), how
        ckpt_dir = ref.weights.parent
        good = next((c for c in reversed(list_checkpoints(ckpt_dir)) if verify_checkpoint(c, state=state) is None), None)
        command = f"`jepa train --resume {ref.run_dir}` resumes from it" if state else "pass the run directory to use it"
        raise CheckpointError(
            f"Cannot {verb} {ref.weights}: {verdict.problem}.",
            hint=(f"The newest checkpoint there that verifies is {good.weights.name}; {command}."
                  if good else "No checkpoint in that folder verifies; start a new run.")
            + " `jepa inspect FILE` shows what a file holds.",
        )
    ckpt_dir = p / CKPT_DIR if (p / CKPT_DIR).is_dir() else p
    pointer = ckpt_dir / LATEST
    from_pointer = how == f"{pointer} names step {ref.step}"  # not "names FILE, which does not exist"
    verdict = check_checkpoint(ref, state=state)
    if verdict.problem is None:
        if from_pointer:
            return _with(ref, unverified=verdict.unverified), how
        # latest.json missing or unreadable (a kill before its first write, a stray edit): the
        # newest file is a guess that happened to verify, and a guess is said, like any fallback
        note = f"{how}, which verifies; {doing} step {ref.step}"
        return _with(ref, note=note, unverified=verdict.unverified), how
    why = f"{pointer} names step {ref.step}, but {verdict.problem}" if from_pointer else f"{how}; but {verdict.problem}"
    skipped = [ref]
    for cand in reversed(list_checkpoints(ckpt_dir)):
        if cand.weights == ref.weights:
            continue
        cand_verdict = check_checkpoint(cand, state=state)
        if cand_verdict.problem is None:
            # by the step in the file name: a pointer may name an older file than its step says
            rejected = tuple(c for c in skipped if (weights_step(c.weights) or -1) > cand.step and c.weights.exists())
            note = f"{why}; {doing} step {cand.step} ({cand.weights.name}), the newest checkpoint that verifies"
            return _with(cand, note=note, rejected=rejected, unverified=cand_verdict.unverified), how
        skipped.append(cand)
        why += f"; {cand.weights.name}: {cand_verdict.problem}"
    raise CheckpointError(
        f"Cannot {verb} {ckpt_dir.parent}: no checkpoint verifies ({why}).",
        hint=("Start a new run without --resume; " if state else "")
        + "`jepa inspect FILE --verify` shows what each file holds and whether its tensors are intact.",
    )


def resume_checkpoint(path: str | Path) -> CheckpointRef:
    """The checkpoint to resume from: `verified_checkpoint` of both files."""
    return verified_checkpoint(path, state=True)[0]


def _with(ref: CheckpointRef, **changes: Any) -> CheckpointRef:
    return dataclasses.replace(ref, **changes)


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


def sweep_if_idle(run_dir: Path) -> list[str]:
    """`sweep_temp_files` for a command that does not claim the run (a refused resume): only when the
    run's lock exists and no trainer holds it (taken for the sweep, then let go). Returns the removed names.

    A run killed while writing its first checkpoint has nothing to resume, so no resume ever
    claims it and sweeps; without this its temp files (megabytes each) would stay for good.
    """
    lock = RunLock(Path(run_dir))
    if not lock.path.is_file():  # never a run's folder: nothing of ours to sweep (and no lock file to create)
        return []
    try:
        lock.acquire()
    except (OSError, RunBusy):
        return []  # a trainer holds it: those temp files may be its writes in flight
    try:
        return sweep_temp_files(run_dir)
    finally:
        lock.release()


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
        if (m := WEIGHTS_RE.match(name)) is not None:
            half = state_name(int(m.group(1))) not in names
        elif (m := STATE_RE.match(name)) is not None:
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
