"""The metric picker (`p`): any numeric key of the metrics stream onto the focused chart.

Type to filter (every typed word must appear in the key, in any order: `ret h8`
finds `retrieval_top1_h8` and `retrieval_copy_top1_h8`), arrows to move, enter to
choose, escape to cancel. The first entry puts the chart's own metrics back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from .plot import fmt_num

if TYPE_CHECKING:
    from jepa_core.rundir.live import RunLog

#: Columns that are axes or bookkeeping, not metrics worth a chart.
NOT_METRICS = frozenset({"step", "time"})
RESET = "\x00reset"  # the option that gives the chart its own metrics back


@dataclass(frozen=True)
class Choice:
    key: str
    table: str  # "train" or "eval"
    latest: float | None

    @property
    def id(self) -> str:
        return f"{self.table}:{self.key}"


def metric_keys(runs: Sequence[RunLog]) -> list[Choice]:
    """Every numeric column of every run's train and eval lines (the first run's latest value)."""
    seen: dict[tuple[str, str], Choice] = {}
    for run in runs:
        for table_name, table in (("train", run.train), ("eval", run.evals)):
            for key in table.columns:
                if key in NOT_METRICS or (key, table_name) in seen or not table.has(key):
                    continue
                seen[(key, table_name)] = Choice(key, table_name, table.last(key))
    return sorted(seen.values(), key=lambda c: (c.table != "train", c.key))


def matches(key: str, query: str) -> bool:
    words = query.lower().split()
    k = key.lower()
    return all(w in k for w in words)


class MetricPicker(ModalScreen["Choice | None | str"]):
    """Returns a Choice, RESET (the chart's own metrics), or None (cancelled)."""

    DEFAULT_CSS = """
    MetricPicker { align: center middle; }
    MetricPicker > Vertical { width: 60; max-width: 95%; height: 80%; max-height: 30;
                              border: round $accent; background: $surface; padding: 0 1; }
    MetricPicker Input { margin: 0; }
    MetricPicker OptionList { height: 1fr; border: none; }
    MetricPicker #picker-help { color: $text-muted; height: 1; }
    """
    BINDINGS = [
        Binding("escape", "cancel", "cancel"),
        Binding("down", "move(1)", show=False),
        Binding("up", "move(-1)", show=False),
    ]

    def __init__(self, choices: Sequence[Choice], chart_title: str):
        super().__init__()
        self.choices = list(choices)
        self.chart_title = chart_title

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = f"metric for the {self.chart_title} chart"
            yield Input(placeholder="filter: type part of a key (ret h8, grad, lr)", id="picker-filter")
            yield OptionList(id="picker-list")
            yield Static("enter choose · ↑↓ move · esc cancel", id="picker-help")

    def on_mount(self) -> None:
        self._fill("")
        self.query_one(Input).focus()

    def _fill(self, query: str) -> None:
        ol = self.query_one(OptionList)
        ol.clear_options()
        options: list[Option] = []
        if not query.strip():
            options.append(Option(Text(f"(the chart's own: {self.chart_title})", style="italic"), id=RESET))
        for c in self.choices:
            if matches(c.key, query):
                t = Text()
                t.append(c.key.ljust(28), style="bold")
                t.append(f" {c.table:<5} ", style="dim")
                t.append(fmt_num(c.latest))
                options.append(Option(t, id=c.id))
        if not options:
            options.append(Option(Text(f"no key matches {query!r}", style="dim"), id="\x00none", disabled=True))
        ol.add_options(options)
        ol.highlighted = 0 if not options[0].disabled else None

    def on_input_changed(self, event: Input.Changed) -> None:
        self._fill(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        ol = self.query_one(OptionList)
        if ol.highlighted is not None:
            self._choose(ol.get_option_at_index(ol.highlighted).id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._choose(event.option.id)

    def _choose(self, option_id: str | None) -> None:
        if option_id is None or option_id == "\x00none":
            return
        if option_id == RESET:
            self.dismiss(RESET)
            return
        by_id = {c.id: c for c in self.choices}
        self.dismiss(by_id.get(option_id))

    def action_move(self, delta: int) -> None:
        ol = self.query_one(OptionList)
        if ol.option_count:
            cur = ol.highlighted if ol.highlighted is not None else -delta
            ol.highlighted = max(0, min(ol.option_count - 1, cur + delta))

    def action_cancel(self) -> None:
        self.dismiss(None)
