"""The live dashboard: a Textual app over one or more run directories.

It only reads files (metrics.jsonl, config.toml, train.pid, heartbeat.json)
and, on `s`, writes the `stop` file; training never waits for it. Data is
polled on a timer (`poll_interval`, 0.5 s by default), which is also the cap on
how often the charts redraw. The heartbeat moves the header's step counter
between log lines and shows "compiling (first step)" while torch.compile works.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, Grid, Horizontal, Vertical, VerticalScroll
from textual.events import Resize
from textual.geometry import Size
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, RichLog, Static

from jepa_core.rundir.listing import run_labels
from jepa_core.rundir.live import RunLog, RunSet, RunUnreadable
from jepa_core.rundir.lock import pid_is_local_and_alive, read_pidfile

from .charts import CHARTS, METRIC_COLORS, RUN_COLORS, X_AXES, ChartWidget, View
from .control import request_stop
from .panels import alerts_text, event_line, evals_compact, evals_table, header_text, live_step, start_phase
from .picker import RESET, MetricPicker, metric_keys
from .system import SystemSampler, gpu_index

# Below either size the dashboard uses its compact layout (80x24 fits).
COMPACT_WIDTH = 120
COMPACT_HEIGHT = 36

HELP_TEXT = """\
[b]keys[/b]
  [b]?[/b]      help                 [b]q[/b]  detach: training goes on
  [b]s[/b]      stop training (asks) [b]x[/b]  x axis: step / tokens / time
  [b]m[/b]      EMA smoothing        [b]l[/b]  log scale on loss charts
  [b]tab[/b]    next chart / log     [b]c[/b]  cycle the focused chart's metric
  [b]p[/b]      pick any metric for the focused chart (type to filter)
  [b]mouse[/b]  click to focus, hover a chart to read its values
[b]charts[/b]  (● marks an eval point; a key with → is on the right axis)
  loss          total, lm, jepa (train) and val (eval)
  JEPA terms    info_nce, variance and covariance (the VICReg terms)
  latent std    std_anchor, std_pred (per-dim std of z; falls on collapse)
  grad norm·LR  grad_norm, and the backbone LR on its own axis
  large screens also: EMA · loss weights (EMA momentum, lm_w, jepa_w);
    grads: norms of the LM and weighted JEPA gradients on the shared
    backbone and their cosine (log steps); retrieval top-1
  several runs: one colour per run, one metric per chart (c);
  runs are named by what differs (profile, --set values, seed)
[b]eval[/b]    top-1: retrieval of z(t+k) among the pairs; lift vs copy:
        top-1 minus the copy control's (z(t) as the query);
        chance-norm: 0 at chance, 1 when every pair is found
[b]status[/b]  compiling (first step), running, stopping, stale (quiet,
        or trainer gone), finished, interrupted, diverged, failed
[b]strip[/b]   alerts (count, worst first); the trainer's CPU %, RSS,
        and on CUDA the GPU's use and memory
re-attach any time: [b]jepa watch[/b] (newest run) or [b]jepa watch RUN_DIR[/b]
[dim]escape ? q: close[/dim]"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: auto; max-width: 95%; height: auto; max-height: 95%;
                                  border: round $accent; padding: 0 1; background: $surface; }
    HelpScreen Static { width: auto; }
    """
    BINDINGS = [
        Binding("escape", "close", "close"),
        Binding("question_mark", "close", show=False),
        Binding("q", "close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "jepa dashboard"
            yield Static(HELP_TEXT, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)


class ConfirmStop(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmStop { align: center middle; }
    ConfirmStop > Vertical { width: 64; max-width: 95%; height: auto; border: thick $error;
                             padding: 0 1; background: $surface; }
    ConfirmStop Horizontal { height: auto; align: center middle; }
    ConfirmStop Button { margin: 0 2; }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "stop"),
        Binding("n", "answer(False)", "cancel"),
        Binding("escape", "answer(False)", show=False),
    ]

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names = list(names)

    def compose(self) -> ComposeResult:
        which = self.names[0] if len(self.names) == 1 else f"{len(self.names)} runs ({', '.join(self.names)})"
        with Vertical():
            yield Static(
                f"[b]Stop training of {which}?[/b]\n"
                "The trainer finishes its current step, writes a checkpoint and ends "
                "with status [b]interrupted[/b]; resume later with --resume.\n"
                "[b]y[/b] stop · [b]n[/b] cancel"
            )
            with Horizontal():
                yield Button("Stop (y)", variant="error", id="yes")
                yield Button("Cancel (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class Dashboard(App[str]):
    """`run()` returns "detach" (q), "ended" (the child training process exited) or None."""

    TITLE = "jepa"
    # the footer's room at 80 columns goes to the dashboard's own keys (p opens the metric picker)
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { layout: vertical; }
    #header, #alerts, #evals, #system { text-wrap: nowrap; text-overflow: ellipsis; }
    #header { height: auto; max-height: 9; padding: 0 1; background: $panel; }
    #strip { height: 1; }
    #alerts { height: 1; width: 1fr; }
    #system { height: 1; width: auto; max-width: 50%; color: $text-muted; }
    #body { height: 1fr; layout: horizontal; }
    #charts { grid-size: 2 4; grid-gutter: 0 1; width: 1fr; height: 1fr; }
    #chart-retrieval { column-span: 2; }
    Screen.-compact #charts { grid-size: 2 2; }
    Screen.-compact ChartWidget.-large-only { display: none; }
    #side { width: 50; height: 1fr; }
    #evals { height: auto; max-height: 24; border: round $primary-background; border-title-color: $text-muted; }
    #log { height: 1fr; border: round $primary-background; border-title-color: $text-muted; }
    #log:focus { border: round $accent; }
    Screen.-compact #body { layout: vertical; }
    Screen.-compact #side { width: 1fr; height: 4; }
    Screen.-compact #evals { border: none; height: auto; max-height: 3; padding: 0 1; }
    Screen.-compact #log { border: none; padding: 0 1; }
    Screen.-compact #header { max-height: 3; }
    """
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        Binding("q", "detach", "detach"),
        Binding("s", "stop", "stop"),
        Binding("x", "cycle_x", "x-axis"),
        Binding("m", "toggle_smooth", "smooth"),
        Binding("l", "toggle_log", "log"),
        Binding("p", "pick_metric", "pick"),
    ]

    def __init__(
        self,
        run_dirs: Sequence[Path],
        *,
        child: subprocess.Popen | None = None,
        poll_interval: float = 0.5,
        stale_after: float = 60.0,
        clock: Callable[[], float] = time.time,
        linger_on_success: bool = False,
        system: SystemSampler | None = None,
    ):
        super().__init__()
        self.runset = RunSet.open(run_dirs, stale_after=stale_after, clock=clock)
        self.child = child
        # keep the final charts on screen after a successful run (until `q`);
        # a failed run exits at once so its log tail is printed
        self.linger_on_success = linger_on_success
        self.child_returncode: int | None = None
        self.read_error: RunUnreadable | None = None  # a run that became unreadable: the dashboard exits, its caller says why
        self.poll_interval = poll_interval
        self.view = View()
        self.labels = run_labels(self.runs)
        self.system = system or SystemSampler()
        self._last_chart = 0  # the chart `p` fills when no chart has focus: the last one focused
        self._last_note: str | None = None
        self._logged_events = [0] * len(self.runs)
        self._seen_resets = [0] * len(self.runs)
        self._logged_alerts: list[set] = [set() for _ in self.runs]
        self.compact = True
        self._width = 80

    # the charts read these
    @property
    def runs(self) -> list[RunLog]:
        return self.runset.runs

    @property
    def colors(self) -> list[str]:
        if len(self.runs) == 1:
            return [METRIC_COLORS[0]]
        return [RUN_COLORS[i % len(RUN_COLORS)] for i in range(len(self.runs))]

    def compose(self) -> ComposeResult:
        # Kept as attributes: timers fire while a modal screen is on top, where queries
        # (which search the active screen) would not find them.
        self.header = Static(id="header")
        self.alerts = Static(id="alerts")
        self.system_strip = Static(id="system")
        self.charts = [ChartWidget(spec, self, classes="-large-only" if spec.large_only else None) for spec in CHARTS]
        self.side = Vertical(id="side")
        self.evals = Static(id="evals")
        self.log_pane = RichLog(id="log", wrap=True, markup=False, max_lines=2000, auto_scroll=True)
        yield self.header
        with Horizontal(id="strip"):
            yield self.alerts
            yield self.system_strip
        with Container(id="body"):
            with Grid(id="charts"):
                yield from self.charts
            with self.side:
                yield self.evals
                yield self.log_pane
        yield Footer()

    @property
    def main_screen(self):
        return self.screen_stack[0] if self.screen_stack else self.screen

    def on_mount(self) -> None:
        self.evals.border_title = "latest eval"
        self.log_pane.border_title = "log: events and samples"
        self._apply_layout()
        self._tick()
        self.set_interval(self.poll_interval, self._tick)

    def on_resize(self, event: Resize) -> None:
        # self.size is updated after this handler runs: use the event's size
        self._apply_layout(event.size)

    def _apply_layout(self, size: Size | None = None) -> None:
        w, h = size or self.size
        self._width = w
        compact = w < COMPACT_WIDTH or h < COMPACT_HEIGHT
        self.compact = compact
        self.main_screen.set_class(compact, "-compact")
        self.side.styles.height = (min(3, len(self.runs)) + 3) if compact else "1fr"
        self._update_panels()

    @property
    def chart_note(self) -> str | None:
        """What an empty chart says while the only run has not logged yet: why it is empty."""
        if len(self.runs) != 1 or self.runs[0].train.n:
            return None
        run = self.runs[0]
        phase = start_phase(run)
        if phase is not None:
            return "compiling (first step)..." if phase[0] == "compiling" else "starting..."
        if run.end is not None:
            return None
        if not run.events:
            return self._launch_note(run)
        every = (run.config.get("log") or {}).get("every")
        if isinstance(every, int) and live_step(run) < every:
            return f"step {live_step(run)}: first point at step {every}"
        return None

    def _launch_note(self, run: RunLog) -> str:
        """Before run_start: the last line the trainer printed (preparing data...), when it runs under us."""
        from jepa_core.rundir import LOG_FILE

        try:
            with open(run.run_dir / LOG_FILE, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 400))
                lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        return lines[-1][:60] if lines else "waiting for the trainer..."

    # ---- data

    def _tick(self) -> None:
        # A long file is read over several ticks so the screen stays responsive while attaching.
        changed = self.runset.poll(budget_s=0.15)
        broken = next((r.unreadable for r in self.runs if r.unreadable is not None), None)
        if broken is not None and self.read_error is None:
            self.read_error = broken
            self.exit("unreadable")
            return
        if self.runset.behind:
            self.set_timer(0.02, self._tick)
        if changed:
            labels = run_labels(self.runs)  # run_start may have brought the configs
            if labels != self.labels:
                self.labels = labels
        for i, run in enumerate(self.runs):
            self._log_new(i, run)
        note = self.chart_note
        if changed or note != self._last_note:
            self._last_note = note
            self._refresh_charts()
        self._update_panels()
        self._update_system()
        if self.child is not None and self.child_returncode is None:
            rc = self.child.poll()
            if rc is not None:
                self.child_returncode = rc
                self.runset.poll()  # the last lines the trainer wrote before exiting
                if rc == 0 and self.linger_on_success:
                    self.notify("Training finished. Press q to leave the dashboard.", timeout=30)
                else:
                    self.exit("ended")

    def _log_new(self, i: int, run: RunLog) -> None:
        log = self.log_pane
        if run.resets != self._seen_resets[i]:
            # a rewritten metrics file: rewrite the log from every run's events
            self._seen_resets[i] = run.resets
            log.clear()
            self._logged_events = [0] * len(self.runs)
            self._logged_alerts = [set() for _ in self.runs]
            for j, r in enumerate(self.runs):
                if j != i:
                    self._log_new(j, r)
        multi = len(self.runs) > 1
        label = self.labels[i][:16] if multi else None
        color = self.colors[i]
        for rec in run.events[self._logged_events[i] :]:
            log.write(event_line(rec, label, color))
        self._logged_events[i] = len(run.events)
        for a in run.alert_list():
            if a.kind == "nonfinite" and a.key not in self._logged_alerts[i]:
                self._logged_alerts[i].add(a.key)
                t = Text()
                if label:
                    t.append(f"{label} ", style=f"bold {color}")
                t.append(f"{a.first_step:>6} ", style="dim")
                t.append("⚠ ", style="bold red")
                t.append(a.message)
                log.write(t)

    def _trainers(self) -> tuple[list[int], list[int], str | None]:
        """(local live trainer pids, CUDA indices of live runs, host of a trainer elsewhere)."""
        pids, gpus, remote = [], [], None
        for run in self.runs:
            if run.end is not None:
                continue
            info = read_pidfile(run.run_dir)
            alive = pid_is_local_and_alive(info)
            if alive:
                pids.append(int(info["pid"]))  # type: ignore[index]
                idx = gpu_index(run.device)
                if idx is not None and idx not in gpus:
                    gpus.append(idx)
            elif alive is None and info:
                remote = str(info.get("host") or "another host")
        return pids, gpus, remote

    def _update_system(self) -> None:
        pids, gpus, remote = self._trainers()
        self.system.sample(pids)
        self.system.want_gpu(bool(gpus))
        self.system_strip.update(self.system.text(pids, gpus, remote))

    def on_unmount(self) -> None:
        self.system.close()

    def _update_panels(self) -> None:
        w = self._width
        if self.compact:
            max_lines = 2 if len(self.runs) == 1 else 3
        else:
            max_lines = 2 if len(self.runs) == 1 else 8
        self.header.update(header_text(self.runs, self.labels, self.colors, w - 2, max_lines))
        self.alerts.update(alerts_text(self.runs, self.labels))
        evals = self.evals
        if self.compact:
            evals.update(evals_compact(self.runs, self.labels, self.colors))
        else:
            evals.update(evals_table(self.runs, self.labels, self.colors))

    # ---- keys

    def _refresh_charts(self) -> None:
        for chart in self.charts:
            chart.refresh()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_detach(self) -> None:
        self.exit("detach")

    def action_cycle_x(self) -> None:
        self.view.x_axis = X_AXES[(X_AXES.index(self.view.x_axis) + 1) % len(X_AXES)]
        self._refresh_charts()
        self.notify(f"x axis: {self.view.x_axis}", timeout=1.5)

    def action_toggle_smooth(self) -> None:
        self.view.smooth = not self.view.smooth
        self._refresh_charts()

    def action_toggle_log(self) -> None:
        self.view.log = not self.view.log
        self._refresh_charts()

    def on_descendant_focus(self, event) -> None:
        if isinstance(event.widget, ChartWidget):
            self._last_chart = self.charts.index(event.widget)

    def action_pick_metric(self) -> None:
        chart = self.focused if isinstance(self.focused, ChartWidget) else self.charts[self._last_chart]
        if not chart.display:  # a large-only chart while the compact layout hides it
            chart = self.charts[0]
        choices = metric_keys(self.runs)
        if not choices:
            self.notify("No metrics yet: nothing to pick from.", severity="warning")
            return

        def done(choice) -> None:
            if choice is None:
                return
            if choice == RESET:
                chart.pick(None)
            else:
                chart.pick(choice.key, choice.table)
            self.notify(f"{chart.base_spec.title} chart: {chart.spec.title}", timeout=1.5)

        self.push_screen(MetricPicker(choices, chart.spec.title), done)

    def _stoppable(self) -> list[int]:
        out = []
        for i, run in enumerate(self.runs):
            if run.end is not None:
                continue
            alive = pid_is_local_and_alive(read_pidfile(run.run_dir))
            if alive is None and self.child is not None and self.child_returncode is None:
                alive = True  # the trainer this dashboard started, before it wrote train.pid
            if alive is True or (alive is None and run.status().state in ("running", "stopping", "waiting")):
                out.append(i)
        return out

    def action_stop(self) -> None:
        idx = self._stoppable()
        if not idx:
            self.notify("Nothing to stop: no run here is still training.", severity="warning")
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            for i in idx:
                fallback = self.child.pid if (self.child is not None and self.child_returncode is None) else None
                req = request_stop(self.runs[i].run_dir, fallback_pid=fallback)
                how = f" and sent SIGINT to pid {req.signalled_pid}" if req.signalled_pid else ""
                self.notify(f"Stop requested for {self.labels[i]}: wrote {req.stop_file.name}{how}.", timeout=4)
            self._update_panels()

        self.push_screen(ConfirmStop([self.labels[i] for i in idx]), done)


def screen_text(app: App) -> str:
    """The current screen as plain text, one line per row (for snapshots and tests)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(s.text.rstrip() for s in strips)
