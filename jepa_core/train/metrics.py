"""Metrics sinks: metrics.jsonl always; TensorBoard and W&B when the profile asks.

Optional sinks are opened before the first step, so a missing package is a
clear error at start-up rather than a crash mid-run. W&B never blocks: with
no API key it runs in offline mode.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from jepa_core.config import Config
from jepa_core.errors import ConfigError


class JsonlSink:
    """Appends one JSON object per line and flushes it, so readers see whole lines promptly."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        # allow_nan keeps NaN/Infinity tokens: a diverged value must be visible, not dropped
        self._f.write(json.dumps(record, allow_nan=True, separators=(",", ":")) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorBoardSink:
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "log.tensorboard = true but the tensorboard package is not installed.",
                hint="pip install 'jepa[tensorboard]' (or tensorboard), or set log.tensorboard = false.",
            ) from None
        self._w = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

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
    def __init__(self, cfg: Config, run_dir: Path):
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                "log.wandb = true but the wandb package is not installed.",
                hint="pip install 'jepa[wandb]' (or wandb), or set log.wandb = false.",
            ) from None
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        self._run = wandb.init(
            project=cfg.log.wandb_project,
            name=Path(run_dir).name,
            dir=str(run_dir),
            config=cfg.to_dict(),
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

    def __init__(self, cfg: Config, run_dir: Path, enabled: bool = True):
        self.sinks: list[Any] = []
        if not enabled:
            return
        self.sinks.append(JsonlSink(Path(run_dir) / "metrics.jsonl"))
        if cfg.log.tensorboard:
            self.sinks.append(TensorBoardSink(run_dir))
        if cfg.log.wandb:
            self.sinks.append(WandbSink(cfg, run_dir))

    def log(self, type_: str, step: int, **fields: Any) -> dict[str, Any]:
        record = {"type": type_, "step": int(step), "time": round(time.time(), 3), **fields}
        for s in self.sinks:
            s.write(record)
        return record

    def event(self, step: int, event: str, **fields: Any) -> dict[str, Any]:
        return self.log("event", step, event=event, **fields)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
        self.sinks = []


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
