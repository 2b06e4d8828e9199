"""Run statuses, in one place: how a run ended (with the process's exit code), the live states a
reader derives while it trains, the states of a planned ablation run, and the colour each is shown in.

The trainer writes an end state into `run_end`; readers (`jepa runs`, the dashboard, `jepa ablate`)
derive the others. Colours are Rich style names, plain strings, so the core stays free of UI imports.
"""

from __future__ import annotations

#: How a run ended (run_end's `status`) -> the exit code of `jepa train`. "write_failed" is a
#: user-fixable condition (a full disk, a read-only folder), like bad input.
EXIT_CODES = {"finished": 0, "early_stopped": 0, "interrupted": 130, "diverged": 3, "write_failed": 2, "failed": 1}
END_STATES = tuple(EXIT_CODES)
#: Ended where it was planned to (max_steps, the time budget, or early stopping): its result counts.
COMPLETED = ("finished", "early_stopped")
#: Ended for good: rerunning would give the same (a diverged run diverges again on the same seed).
SETTLED = (*COMPLETED, "diverged")
#: What a reader sees while the trainer may still be at work.
LIVE_STATES = ("waiting", "running", "stopping", "stale")
#: A planned ablation run that has not started, and one killed without a run_end.
PENDING, INCOMPLETE = "pending", "incomplete"

#: Status -> colour in tables and end lines; the dashboard's badge adds weight (`badge_style`).
STATUS_COLOUR = {
    "waiting": "dim",
    "running": "green",
    "stopping": "yellow",
    "stale": "yellow",
    "finished": "cyan",
    "early_stopped": "cyan",
    "interrupted": "yellow",
    "diverged": "red",
    "write_failed": "red",
    "failed": "red",
    PENDING: "dim",
    INCOMPLETE: "yellow",
}
_ALARM = ("diverged", "write_failed", "failed")


def status_style(status: str) -> str:
    """The colour of a status in a table or an end line (red for anything unknown)."""
    return STATUS_COLOUR.get(status, "red")


def badge_style(status: str) -> str:
    """The dashboard's status badge: bold, and white on red for a run that failed."""
    return "bold white on red" if status in _ALARM or status not in STATUS_COLOUR else f"bold {STATUS_COLOUR[status]}"
