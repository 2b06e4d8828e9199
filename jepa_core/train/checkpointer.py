"""Saving checkpoints during a run: when (its own cadence) and what happens when a write fails.

Only the main rank writes. A failed write (full disk, a file-size limit, a
read-only or vanished directory; safetensors raises its own error type for
some of these) leaves the previous checkpoint and latest.json intact, since
every file is written atomically, and is reported to all ranks together so
that none waits forever for the writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jepa_core.config import Config
from jepa_core.rundir import RunFolder
from jepa_core.train.checkpoint import CheckpointMeta, save_checkpoint


def write_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return (OSError, SafetensorError)


@dataclass
class Checkpointer:
    cfg: Config
    run_dir: Path | RunFolder  # the trainer's RunFolder on the writing rank: writes go through its identity check
    config_toml: str
    tokenizer_sha256: str
    is_main: bool
    last: Path | None = None  # the newest complete checkpoint's weights file
    init_from: dict[str, Any] | None = None  # recorded in every weights file (a resume reads it back)

    def due(self, step: int) -> bool:
        tc = self.cfg.train
        return step % tc.checkpoint_every == 0 or step == tc.max_steps

    def save(
        self, step: int, trainee: Any, data_state: dict, tokens_seen: int, last_eval: dict[str, Any],
        watch: dict[str, Any] | None = None, best: bool = False,
    ) -> str | None:
        """Write a checkpoint on the main rank (named in best.json too when `best`); returns an
        error message (None when it worked)."""
        model, optimizer = trainee.model, trainee.optimizer
        if getattr(trainee, "fsdp", False):  # every rank joins the gather; rank 0 writes whole tensors
            from jepa_core.train.fsdp import gathered

            model, optimizer = gathered(model, optimizer, self.is_main)
        if not self.is_main:
            return None
        meta = CheckpointMeta(
            config_toml=self.config_toml,
            profile=self.cfg.name,
            step=step,
            tokens_seen=tokens_seen,
            tokenizer_sha256=self.tokenizer_sha256,
            metrics=last_eval,
            weight_tying=self.cfg.model.weight_tying,
            watch=watch,
            init_from=self.init_from,
        )
        try:
            ref = save_checkpoint(
                self.run_dir, model, optimizer, meta, data_state, self.cfg.train.keep_last, best=best
            )
        except write_errors() as e:
            where = self.run_dir.path if isinstance(self.run_dir, RunFolder) else Path(self.run_dir)
            return describe_write_error(e, f"the checkpoint for step {step}", where / "checkpoints")
        self.last = ref.weights
        return None


def describe_write_error(e: BaseException, what: str, where: Path) -> str:
    """"writing WHAT failed: PATH: REASON (errno N)", with the file when the error names one."""
    path = getattr(e, "filename", None) or where
    errno = getattr(e, "errno", None)
    reason = getattr(e, "strerror", None) or str(e)
    return f"writing {what} failed: {path}: {reason}" + (f" (errno {errno})" if errno else "")
