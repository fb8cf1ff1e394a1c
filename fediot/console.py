"""Our console output, kept readable whatever FedML does to sys.stdout and logging.

FedML's `fedml.init()` replaces `sys.stdout.write` with its logger; we write to a duplicate of the
original stdout file descriptor instead.
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Callable


def _dup(stream: IO[str]) -> IO[str]:
    """A private handle on the same file as `stream`, unaffected by later fd redirections."""
    try:
        return os.fdopen(os.dup(stream.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):
        return stream


# Taken at import time, before FedML or our own fd redirection can touch fds 1 and 2.
_OUT: IO[str] = _dup(sys.__stdout__)
_ERR: IO[str] = _dup(sys.__stderr__)


def _out() -> IO[str]:
    return _OUT


def error(message: str) -> None:
    """Print one error line to the original stderr."""
    _ERR.write(f"error: {message}\n")
    _ERR.flush()


def say(message: str) -> None:
    """Print one line of our own output."""
    out = _out()
    out.write(message + "\n")
    out.flush()


def names_line(names: list[str] | set[str], order: list[str], limit: int = 12,
               label: Callable[[str], str] = str) -> str:
    """Names for a console line, in `order` (others last): the first `limit` (as `label` writes them), then how many
    more."""
    index = {n: i for i, n in enumerate(order)}
    shown = [label(n) for n in sorted(names, key=lambda n: (index.get(n, len(index)), n))]
    return ", ".join(shown[:limit]) + (f" and {len(shown) - limit} more" if len(shown) > limit else "")


def round_bar(done: int, total: int, width: int = 20) -> str:
    """'[#####-----] ' on a terminal; '' when output goes to a file or a service log."""
    if not is_terminal() or total <= 0:
        return ""
    filled = int(width * done / total)
    return "[" + "#" * filled + "-" * (width - filled) + "] "


def is_terminal() -> bool:
    """Whether our output reaches a terminal. Under mpirun the ranks' stdout is a pseudo-terminal
    even when the user redirected mpirun's output, so run_simulation.sh passes FEDIOT_TTY=0/1."""
    forced = os.environ.get("FEDIOT_TTY")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return _out().isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress indicator: a redrawn bar on a terminal, plain periodic lines otherwise."""

    def __init__(self, label: str, total: float | None, unit: str = "", every_s: float = 5.0) -> None:
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.done = 0.0
        self._last = 0.0
        self._tty = is_terminal()

    def _fmt(self) -> str:
        def human(v: float) -> str:
            if self.unit == "B":
                for u in ("B", "KB", "MB", "GB"):
                    if v < 1024 or u == "GB":
                        return f"{v:.1f} {u}" if u != "B" else f"{int(v)} B"
                    v /= 1024
            return f"{int(v)}{(' ' + self.unit) if self.unit else ''}"
        if self.total:
            pct = 100.0 * self.done / self.total
            return f"{self.label}: {human(self.done)} / {human(self.total)} ({pct:.0f}%)"
        return f"{self.label}: {human(self.done)}"

    def update(self, amount: float) -> None:
        self.done += amount
        now = time.monotonic()
        if self._tty and now - self._last >= 0.2:
            _out().write("\r" + self._fmt() + " " * 4)
            _out().flush()
            self._last = now
        elif not self._tty and now - self._last >= self.every_s:
            say(self._fmt())
            self._last = now

    def close(self) -> None:
        if self._tty:
            _out().write("\r" + self._fmt() + " " * 4 + "\n")
            _out().flush()
        else:
            say(self._fmt() + " done")
