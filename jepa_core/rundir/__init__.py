"""The run directory, one package: its layout and names (`layout`), statuses and exit codes
(`status`), the safetensors header reader (`header`), checkpoints and their pointers
(`checkpoints`) and their payload digests (`digest`), the folder every trainer write goes through
(`folder`), the trainer's lock, pid file and heartbeat (`lock`), the tail of metrics.jsonl (`tail`),
the live reader (`live`),
whole-run summaries (`summary`) and the run listing (`listing`). docs/architecture.md has the contract.

Standard library only (`listing.overrides_vs_profile` loads a profile lazily), so every reader
uses it without torch. The names of `layout`, `checkpoints`, `lock`, `header` and `status` are
re-exported here: the trainer and the tools write `rundir.read_latest(run)`.
"""

from . import digest
from .checkpoints import (
    CORRUPT_SUFFIX,
    CheckpointRef,
    checkpoint_tokenizer,
    FileCheck,
    Verdict,
    check_checkpoint,
    check_file,
    list_checkpoints,
    newest_run,
    pointer_text,
    read_best,
    read_latest,
    resolve_checkpoint,
    resume_checkpoint,
    set_aside,
    sweep_half_checkpoints,
    sweep_if_idle,
    sweep_temp_files,
    unverified_note,
    verified_checkpoint,
    verify_checkpoint,
    write_pointer,
)
from .folder import RunFolder, RunFolderGone
from .header import HeaderError, read_header
from .layout import (
    BATCH_LOG,
    BEST,
    CKPT_DIR,
    CONFIG,
    HEARTBEAT,
    LATEST,
    LOCKFILE,
    LOG_FILE,
    METRICS,
    PIDFILE,
    RUN_NAMES,
    STOPFILE,
    TOKENIZER,
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
from .lock import (
    RunBusy,
    RunLock,
    heartbeat_text,
    lock_held,
    pid_is_local_and_alive,
    pid_text,
    read_heartbeat,
    read_pidfile,
    remove_pidfile,
    write_heartbeat,
    write_pidfile,
)
from .status import COMPLETED, END_STATES, EXIT_CODES, LIVE_STATES, SETTLED

__all__ = [
    "BATCH_LOG", "BEST", "CKPT_DIR", "COMPLETED", "CONFIG", "CORRUPT_SUFFIX", "END_STATES", "EXIT_CODES", "HEARTBEAT",
    "LATEST", "LIVE_STATES", "LOCKFILE", "LOG_FILE", "METRICS", "PIDFILE", "RUN_NAMES", "SETTLED", "STOPFILE", "TOKENIZER",
    "CheckpointRef", "FileCheck", "HeaderError", "RunBusy", "RunFolder", "RunFolderGone", "RunLock", "Verdict",
    "check_checkpoint", "check_file", "checkpoint_tokenizer", "digest", "enclosing_run", "heartbeat_text", "holds_run", "list_checkpoints", "lock_held",
    "new_run_dir", "newest_run", "pid_is_local_and_alive", "pid_text", "pointer_text", "read_best", "read_header",
    "read_heartbeat", "read_latest", "read_pidfile", "refuse_foreign_folder", "refuse_nested_run", "remove_pidfile", "resolve_checkpoint",
    "resume_checkpoint", "set_aside", "state_name", "sweep_half_checkpoints", "sweep_if_idle", "sweep_temp_files",
    "unverified_note", "utc_now_iso", "utc_stamp", "verified_checkpoint", "verify_checkpoint", "weights_name",
    "weights_step", "write_heartbeat", "write_pidfile", "write_pointer",
]  # fmt: skip
