"""Metrics sinks: metrics.jsonl always; TensorBoard and W&B when the profile asks.

Optional sinks are opened before the first step, so a missing package is a
clear error at start-up rather than a crash mid-run. W&B never blocks: with
no API key it runs in offline mode.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

from jepa_core.config import LogConfig
from jepa_core.errors import ConfigError
from jepa_core.rundir import METRICS, RunFolder
from jepa_core.rundir.layout import TENSORBOARD_DIR


class MetricsVanished(OSError):
    """metrics.jsonl was removed or replaced while the run wrote it: what follows would go nowhere."""


class JsonlSink:
    """Appends one JSON object per line in a single write, so a line is whole or absent.

    A half line left by a crash or a full disk is ended with a newline before
    the next record, so that record is never glued onto it. Readers then skip
    the broken line and keep everything else.

    Before each record the file's identity is compared with the one opened (one stat): a
    metrics.jsonl deleted or replaced under a running trainer raises MetricsVanished instead of
    appending to an unlinked file for the rest of the run. When the whole run folder moved
    (`folder.gone()`), the open file moved with it and the record is written there; the stop
    check reports the folder.
    """

    def __init__(self, path: Path, folder: RunFolder | None = None):
        self.path = Path(path)
        self.folder = folder
        if folder is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            folder.check()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # as any new file: the umask decides
        st = os.fstat(self._fd)
        self._identity = (st.st_dev, st.st_ino)
        self._needs_newline = _ends_mid_line(self.path)

    def _check_identity(self) -> None:
        try:
            st = os.stat(self.path)
            how = None if (st.st_dev, st.st_ino) == self._identity else "replaced by another file"
        except FileNotFoundError:
            how = "removed"
        except OSError:
            return  # cannot look (a permission change): the write itself will say what is wrong
        if how is not None and not (self.folder is not None and self.folder.gone()):
            raise MetricsVanished(errno.ENOENT, f"{self.path} was {how} during training; the records since went nowhere", str(self.path))

    def write(self, record: dict[str, Any]) -> None:
        self._check_identity()
        # allow_nan keeps NaN/Infinity tokens: a diverged value must be visible, not dropped
        line = json.dumps(record, allow_nan=True, separators=(",", ":")) + "\n"
        data = (b"\n" if self._needs_newline else b"") + line.encode("utf-8")
        done = 0
        try:
            # a short write is retried for the rest: the retry either finishes the line or
            # raises the real reason (ENOSPC, EFBIG...) for the message
            while done < len(data):
                n = os.write(self._fd, data[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, f"short write ({done} of {len(data)} bytes)", str(self.path))
                done += n
        except OSError:
            if done:
                self._needs_newline = True
            raise
        self._needs_newline = False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


class TensorBoardSink:
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "log.tensorboard = true but the tensorboard package is not installed.",
                hint="pip install 'jepa[tensorboard]' (or tensorboard), or set log.tensorboard = false.",
            ) from None
        self._w = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))

    def write(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind not in ("train", "eval"):
            return
        step = int(record["step"])
        for k, v in record.items():
            if k in ("type", "step", "time") or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            self._w.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        self._w.close()


class WandbSink:
    def __init__(self, lcfg: LogConfig, run_dir: Path, run_config: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                "log.wandb = true but the wandb package is not installed.",
                hint="pip install 'jepa[wandb]' (or wandb), or set log.wandb = false.",
            ) from None
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        self._run = wandb.init(
            project=lcfg.wandb_project,
            name=Path(run_dir).name,
            dir=str(run_dir),
            config=run_config,
            mode=os.environ.get("WANDB_MODE", mode),
        )

    def write(self, record: dict[str, Any]) -> None:
        if record.get("type") in ("train", "eval"):
            data = {
                f"{record['type']}/{k}": v
                for k, v in record.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "time")
            }
            self._run.log(data, step=int(record["step"]))

    def close(self) -> None:
        self._run.finish()


class MetricsLogger:
    """Fans one record out to every sink; only the writing rank creates one."""

    def __init__(self, lcfg: LogConfig, run_dir: Path, enabled: bool = True, run_config: dict[str, Any] | None = None,
                 folder: RunFolder | None = None):
        self.sinks: list[Any] = []
        self.error: str | None = None
        self.vanished = False  # metrics.jsonl was removed or replaced (the run folder itself is still there)
        if not enabled:
            return
        self.sinks.append(JsonlSink(Path(run_dir) / METRICS, folder))
        if lcfg.tensorboard:
            self.sinks.append(TensorBoardSink(run_dir))
        if lcfg.wandb:
            self.sinks.append(WandbSink(lcfg, run_dir, run_config or {}))

    def log(self, type_: str, step: int, **fields: Any) -> dict[str, Any]:
        """Write a record to every sink. A failed write does not raise (under DDP that would strand
        the other ranks): the first failure is kept in `error` for the stop decision to act on."""
        record = {"type": type_, "step": int(step), "time": round(time.time(), 3), **fields}
        for s in list(self.sinks):
            try:
                s.write(record)
            except MetricsVanished as e:
                # not a failing disk: the file is gone and the folder still works, so the run may
                # end with a final checkpoint; nothing more is written to the vanished file
                self.sinks.remove(s)
                s.close()
                self.vanished = self.error is None
                self.error = self.error or e.strerror
            except OSError as e:
                if self.error is None:
                    where = e.filename or getattr(s, "path", "a metrics sink")
                    self.error = f"writing {where} failed ({e.strerror or e}, errno {e.errno})"
        return record

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except OSError:
                pass
        self.sinks = []
