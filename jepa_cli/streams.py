"""Console streams that can vanish under a long command without stopping it.

`jepa train ... | head -1`, `>&-`, `2>&-` or a terminal that hangs up must cost
the user the progress display only: training, metrics and checkpoints go on.
Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError;
Rich turns that into SystemExit(1) by default. Here it turns into silence.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_STD = ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w"))


def reopen_closed_std_fds() -> None:
    """Point closed descriptors 0-2 (a command started with `>&-`) at /dev/null.

    Otherwise the next file opened (metrics.jsonl, a checkpoint) takes descriptor 1
    or 2 and receives whatever is printed, and `sys.stdout` is None, which turns the
    first `print` into an AttributeError.
    """
    for fd, name, mode in _STD:
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, mode, closefd=False, encoding="utf-8", errors="replace"))


def silence(console: Any) -> None:
    """Stop a Rich console for good, and point its descriptor at /dev/null so that the
    interpreter's final flush of a broken stream does not fail (exit code 120)."""
    console.quiet = True
    try:
        fd = console.file.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real descriptor (a test runner's buffer): quiet is enough
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass


def survive_broken_pipe(console: Any) -> None:
    """Make a broken pipe silence `console` instead of exiting (Rich's default for BrokenPipeError)."""
    console.on_broken_pipe = lambda: silence(console)


def safe_print(console: Any, *args: Any, **kwargs: Any) -> None:
    """console.print, except that a stream that is gone (EPIPE, EIO after a hang-up, a closed
    file) silences the console instead of raising."""
    if console.quiet:
        return
    try:
        console.print(*args, **kwargs)
    except (OSError, ValueError):
        silence(console)


def _stream_gone(e: BaseException) -> bool:
    # ValueError only for a closed file object; any other ValueError is a bug to show
    return isinstance(e, OSError) or (isinstance(e, ValueError) and "closed file" in str(e))


class guard:
    """`with guard(console, err_console):` output whose stream is gone silences those consoles
    instead of raising; the rest of the block is skipped (there is nowhere to show it)."""

    def __init__(self, *consoles: Any):
        self.consoles = consoles

    def __enter__(self) -> "guard":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and _stream_gone(exc):
            dead = [c for c in self.consoles if _dead(c)] or self.consoles  # keep a stderr that still works
            for c in dead:
                silence(c)
            return True
        return False


def _dead(console: Any) -> bool:
    """True when the console's stream is closed, or its pipe or terminal is gone (POLLERR/POLLHUP)."""
    import select

    try:
        fd = console.file.fileno()
    except ValueError:
        return True  # a closed file object
    except (AttributeError, OSError):
        return False
    if not hasattr(select, "poll"):  # pragma: no cover - not POSIX
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, ev in poller.poll(0))


class GuardedCallbacks:
    """The trainer's callbacks (`on_*`) forwarded to `target` under `guard`, so a progress display
    whose stream is gone can never stop training; Rich's exit on a broken pipe is turned off too."""

    def __init__(self, target: Any, *consoles: Any):
        self._target, self._consoles = target, consoles
        for c in consoles:
            survive_broken_pipe(c)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not (name.startswith("on_") and callable(attr)):
            return attr

        def call(*args: Any, **kwargs: Any) -> None:
            with guard(*self._consoles):
                attr(*args, **kwargs)

        return call
