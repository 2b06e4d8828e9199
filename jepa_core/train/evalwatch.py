"""Watching the validation loss: the best eval so far, an overfitting alert, early stopping.

Pure bookkeeping (no torch), fed one eval at a time on the main rank. Its
state travels in the checkpoint's metadata, so a resumed run keeps its best
and its counters. "Overfitting" here means: the val loss has stayed more than
`overfit_margin` nats above its best for `overfit_evals` evals in a row, the
typical shape when a small corpus is seen many times over.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from jepa_core.config import TrainConfig


@dataclass
class Verdict:
    improved: bool = False  # a new best val loss: keep this checkpoint
    alert: str | None = None  # the overfitting alert's message, the first time it holds
    early_stop: str | None = None  # why to stop now, with train.early_stop_evals


@dataclass
class EvalWatch:
    margin: float
    alert_after: int
    stop_after: int  # 0: never
    best_loss: float = math.inf
    best_bpb: float | None = None
    best_step: int | None = None
    since_best: int = 0  # evals since the best one
    above: int = 0  # consecutive evals more than `margin` above the best
    alerted: bool = False

    @classmethod
    def for_config(cls, tc: TrainConfig, state: dict[str, Any] | None = None) -> "EvalWatch":
        watch = cls(tc.overfit_margin, tc.overfit_evals, tc.early_stop_evals)
        for key, value in (state or {}).items():
            if key in ("best_loss", "best_bpb", "best_step", "since_best", "above", "alerted"):
                setattr(watch, key, math.inf if key == "best_loss" and value is None else value)
        return watch

    def state(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("margin", "alert_after", "stop_after"):  # settings come from the config, not the checkpoint
            d.pop(k)
        d["best_loss"] = None if math.isinf(self.best_loss) else self.best_loss
        return d

    def update(self, step: int, val_loss: float, val_bpb: float | None) -> Verdict:
        if not math.isfinite(val_loss):
            return Verdict()
        v = Verdict()
        if val_loss < self.best_loss:
            self.best_loss, self.best_bpb, self.best_step = val_loss, val_bpb, step
            self.since_best, self.above = 0, 0
            v.improved = True
            return v
        self.since_best += 1
        self.above = self.above + 1 if val_loss > self.best_loss + self.margin else 0
        best = f"the best was step {self.best_step} (val loss {self.best_loss:.4f}" + (
            f", val BPB {self.best_bpb:.4f})" if self.best_bpb is not None else ")"
        )
        if self.above >= self.alert_after and not self.alerted:
            self.alerted = True
            v.alert = (
                f"val loss {val_loss:.4f} has been more than {self.margin:g} above its best for {self.above} evals: "
                f"the model is overfitting; {best}"
            )
        if self.stop_after and self.since_best >= self.stop_after:
            v.early_stop = f"no better val loss in {self.since_best} evals (train.early_stop_evals); {best}"
        return v
