"""The dashboard's system strip: the trainer's CPU % and RSS, and on CUDA the GPU's use and memory.

CPU and memory come from /proc/PID (Linux) for the trainer named by `train.pid`
when it runs on this host; nothing is sampled for a trainer on another host (the
strip says where it runs). GPU figures come from `nvidia-smi`, asked in a
background thread every few seconds so that a slow driver never stalls the UI.
No psutil: /proc holds everything needed and costs a few microseconds to read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.style import Style
from rich.text import Text

from .plot import fmt_num

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class GpuInfo:
    index: int
    util: float  # percent
    mem_used: float  # MiB
    mem_total: float  # MiB


def read_proc(pid: int, proc: Path = Path("/proc")) -> tuple[float, int] | None:
    """(CPU seconds used, resident bytes) of a process, or None when it cannot be read."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        statm = (proc / str(pid) / "statm").read_text().split()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may hold spaces and parentheses: fields count from the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        cpu_s = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime
        rss = int(statm[1]) * _PAGE
    except (IndexError, ValueError):
        return None
    return cpu_s, rss


def query_nvidia_smi(timeout: float = 3.0) -> list[GpuInfo]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            gpus.append(GpuInfo(int(parts[0]), float(parts[1]), float(parts[2]), float(parts[3])))
        except (IndexError, ValueError):
            continue
    return gpus


class SystemSampler:
    """CPU % (of one core, so 250% is two and a half busy cores) and RSS of trainer processes;
    GPU use and memory from a background poller when some run trains on CUDA."""

    def __init__(
        self,
        *,
        proc: Path = Path("/proc"),
        gpu_query: Callable[[], list[GpuInfo]] = query_nvidia_smi,
        gpu_every: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.proc = proc
        self.gpu_query = gpu_query
        self.gpu_every = gpu_every
        self.clock = clock
        self._last: dict[int, tuple[float, float]] = {}  # pid -> (clock, cpu seconds)
        self.cpu: dict[int, float] = {}  # pid -> percent over the last interval
        self.rss: dict[int, int] = {}
        self.gpus: list[GpuInfo] = []
        self._gpu_thread: threading.Thread | None = None
        self._stop = threading.Event()

    def sample(self, pids: list[int]) -> None:
        now = self.clock()
        for pid in list(self._last):
            if pid not in pids:
                self._last.pop(pid, None)
                self.cpu.pop(pid, None)
                self.rss.pop(pid, None)
        for pid in pids:
            got = read_proc(pid, self.proc)
            if got is None:
                continue
            cpu_s, rss = got
            self.rss[pid] = rss
            prev = self._last.get(pid)
            if prev is not None and now > prev[0]:
                self.cpu[pid] = 100.0 * (cpu_s - prev[1]) / (now - prev[0])
            self._last[pid] = (now, cpu_s)

    def want_gpu(self, on: bool) -> None:
        """Start (or keep) the GPU poller while some run is on CUDA."""
        if on and self._gpu_thread is None:
            self._gpu_thread = threading.Thread(target=self._gpu_loop, name="jepa-gpu-poll", daemon=True)
            self._gpu_thread.start()

    def _gpu_loop(self) -> None:
        while not self._stop.is_set():
            self.gpus = self.gpu_query()
            self._stop.wait(self.gpu_every)

    def close(self) -> None:
        self._stop.set()

    def text(self, pids: list[int], gpu_indices: list[int], remote_host: str | None = None) -> Text:
        """`cpu 187% rss 412M  gpu0 97% 12.1/80G` for the given trainers; empty when there is nothing to say."""
        t = Text(no_wrap=True, overflow="ellipsis")
        if remote_host and not pids:
            t.append(f"trainer on {remote_host} ", Style(dim=True))
            return t
        known = [p for p in pids if p in self.rss]
        if known:
            if len(known) > 1:
                t.append(f"{len(known)} trainers ", Style(dim=True))
            cpu = [self.cpu[p] for p in known if p in self.cpu]
            t.append("cpu ", Style(dim=True))
            t.append(f"{sum(cpu):.0f}%" if cpu else "–")
            t.append(" rss ", Style(dim=True))
            t.append(fmt_num(float(sum(self.rss[p] for p in known)), 3) + "B")
        for g in self.gpus:
            if g.index in gpu_indices:
                t.append(f"  gpu{g.index} " if len(gpu_indices) > 1 or g.index else "  gpu ", Style(dim=True))
                t.append(f"{g.util:.0f}%")
                t.append(f" {g.mem_used / 1024:.1f}/{g.mem_total / 1024:.0f}G")
        if t.plain:
            t.append(" ")
        return t


def gpu_index(device: str) -> int | None:
    """0 for `cuda`, N for `cuda:N`, None for anything else (`cpu fp32`, `mps`...)."""
    dev = device.split()[0] if device else ""
    if not dev.startswith("cuda"):
        return None
    _, _, idx = dev.partition(":")
    return int(idx) if idx.isdigit() else 0
