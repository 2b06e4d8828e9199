"""The run directory, one package: its layout and names (`layout`), statuses and exit codes
(`status`), the safetensors header reader (`header`), checkpoints and their pointers
(`checkpoints`), the trainer's lock, pid file and heartbeat (`lock`), the tail of metrics.jsonl (`tail`), the live reader (`live`),
whole-run summaries (`summary`) and the run listing (`listing`). docs/architecture.md has the contract.

Standard library only (`listing.overrides_vs_profile` loads a profile lazily), so every reader
uses it without torch. The names of `layout`, `checkpoints`, `lock`, `header` and `status` are
re-exported here: the trainer and the tools write `rundir.read_latest(run)`.
"""

from .checkpoints import (
    CORRUPT_SUFFIX,
    CheckpointRef,
    list_checkpoints,
    newest_run,
    read_best,
    read_latest,
    resolve_checkpoint,
    resume_checkpoint,
    set_aside,
    sweep_half_checkpoints,
    sweep_temp_files,
    verify_checkpoint,
    write_pointer,
)
from .header import HeaderError, read_header
from .layout import (
    BEST,
    CKPT_DIR,
    CONFIG,
    HEARTBEAT,
    LATEST,
    LOCKFILE,
    METRICS,
    PIDFILE,
    RUN_NAMES,
    STOPFILE,
    TOKENIZER,
    TRAIN_LOG,
    enclosing_run,
    holds_run,
    new_run_dir,
    refuse_foreign_folder,
    refuse_nested_run,
    state_name,
    utc_now_iso,
    utc_stamp,
    weights_name,
    weights_step,
)
from .lock import RunBusy, RunLock, lock_held, pid_is_local_and_alive, read_heartbeat, read_pidfile, remove_pidfile, write_heartbeat, write_pidfile
from .status import COMPLETED, END_STATES, EXIT_CODES, LIVE_STATES, SETTLED

__all__ = [
    "BEST", "CKPT_DIR", "COMPLETED", "CONFIG", "CORRUPT_SUFFIX", "END_STATES", "EXIT_CODES", "HEARTBEAT", "LATEST",
    "LIVE_STATES", "LOCKFILE", "METRICS", "PIDFILE", "RUN_NAMES", "SETTLED", "STOPFILE", "TOKENIZER", "TRAIN_LOG", "CheckpointRef", "HeaderError",
    "RunBusy", "RunLock", "enclosing_run", "holds_run", "list_checkpoints", "lock_held", "new_run_dir", "newest_run",
    "pid_is_local_and_alive", "read_best", "read_header", "read_heartbeat", "read_latest", "read_pidfile",
    "refuse_foreign_folder", "refuse_nested_run", "remove_pidfile", "resolve_checkpoint", "resume_checkpoint",
    "set_aside", "state_name", "sweep_half_checkpoints", "sweep_temp_files", "utc_now_iso", "utc_stamp",
    "verify_checkpoint", "weights_name", "weights_step", "write_heartbeat", "write_pidfile", "write_pointer",
]  # fmt: skip
