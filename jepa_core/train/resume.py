"""`--resume auto|PATH`: which checkpoint to continue from, and with which config."""

from __future__ import annotations

import shlex
from pathlib import Path

from jepa_core import rundir as rd
from jepa_core.config import RESUME_SAFE_KEYS, Config, apply_overrides, config_from_toml, diff_configs, validate
from jepa_core.errors import CheckpointError, ConfigError, JepaError


def find_checkpoint(target: str, out_dir: str, profile: str | None) -> rd.CheckpointRef:
    """`auto`: the newest run (of `profile` if given) under out_dir with a checkpoint; else a path.

    Only a checkpoint that verifies is returned (`rundir.resume_checkpoint`): for a
    run directory whose latest.json names a damaged or inconsistent checkpoint,
    the newest one that verifies, with `ref.note` saying so.
    """
    if target != "auto":
        return rd.resume_checkpoint(target)
    run = rd.newest_run(out_dir, profile)
    if run is None:
        which = f"of profile `{profile}` " if profile else ""
        raise CheckpointError(
            f"--resume auto found no run {which}with a checkpoint under {out_dir}/.",
            hint="Start a new run without --resume, or pass a run directory: --resume runs/<run>.",
        )
    return rd.resume_checkpoint(run)


def resolve_resume(
    resume: str, cfg: Config | None, profile: str | None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Config, rd.CheckpointRef]:
    """The config to resume with and the checkpoint to resume from.

    Without a profile the checkpoint's own config is used (plus overrides);
    with one, it must match the checkpoint except for RESUME_SAFE_KEYS.
    """
    out_dir = cfg.train.out_dir if cfg is not None else "runs"
    ref = None
    try:
        ref = find_checkpoint(resume, out_dir, cfg.name if cfg is not None else profile)
        return _resume_config(ref, cfg, overrides)
    except JepaError:
        # a refused resume still sweeps what a killed write left there (a run killed during its first
        # checkpoint has nothing to resume: no later resume would ever sweep it)
        run = ref.run_dir if ref is not None else _run_dir_of(resume if resume != "auto" else rd.newest_run(out_dir, profile))
        if run is not None:
            rd.sweep_if_idle(run)
        raise


def _run_dir_of(target: str | Path | None) -> Path | None:
    """The run directory a --resume target names (a run, its checkpoints/ folder, a file in it), if any."""
    if target is None:
        return None
    p = Path(str(target)[: -len(":best")] if str(target).endswith(":best") else target)
    if p.is_file():
        p = p.parent
    return p.parent if p.name == rd.CKPT_DIR else p


def _resume_config(ref: rd.CheckpointRef, cfg: Config | None, overrides: list[str] | tuple[str, ...]) -> tuple[Config, rd.CheckpointRef]:
    import tomllib

    from jepa_core.train.checkpoint import read_metadata

    # refuse a run that is training now before building anything (the trainer's lock is the real claim)
    from jepa_core.train.session import claim_run_dir

    claim_run_dir(ref.run_dir, ref)
    meta = read_metadata(ref.weights)
    if "config" not in meta:
        raise CheckpointError(
            f"{ref.weights} has no `config` in its metadata: it was not written by `jepa train`, so there is nothing to resume.",
            hint="Pass a run directory or a checkpoint written by `jepa train`; `jepa inspect FILE` shows what a file holds.",
        )
    saved = config_from_toml(meta["config"], source=str(ref.weights))
    if cfg is None:
        cfg = validate(apply_overrides(tomllib.loads(meta["config"]), overrides), source=str(ref.weights))
    unsafe = {k: v for k, v in diff_configs(saved, cfg).items() if k not in RESUME_SAFE_KEYS}
    if unsafe:
        lines = ", ".join(f"{k} ({a!r} in the checkpoint, {b!r} now)" for k, (a, b) in sorted(unsafe.items()))
        safe_sets = " ".join(f"--set {o}" for o in overrides if o.split("=", 1)[0].strip() in RESUME_SAFE_KEYS)
        command = " ".join(["jepa train --resume", shlex.quote(str(ref.run_dir)), safe_sets]).strip()
        raise ConfigError(
            f"Cannot resume {ref.run_dir}: the config differs from the checkpoint's in {lines}.",
            hint="Only max_steps, eval/log/checkpoint cadence and sinks may change on resume. "
            f"To continue with the checkpoint's own config: {command}",
        )
    return cfg, ref
