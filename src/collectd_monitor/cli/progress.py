"""How a fan-out shows its progress on stderr: a bar on a terminal, lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from collectd_monitor.fleet.fanout import Progress

BAR_WIDTH = 24


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def counts(p: Progress) -> str:
    remaining = p.total - p.finished
    text = (
        f"{p.finished}/{p.total} done: {p.ok} ok, {p.failed} failed, {p.timed_out} timed out, "
        f"{remaining} remaining"
    )
    if p.aborted:
        text += " (aborted)"
    return text


def line(p: Progress) -> str:
    """A progress line for a log: counts, rate and ETA."""
    return f"{counts(p)}; {p.rate:.1f}/s, ETA {duration(p.eta)}"


def bar(p: Progress, width: int = BAR_WIDTH) -> str:
    """A one-line bar for a terminal."""
    filled = 0 if p.total == 0 else min(width, round(width * p.finished / p.total))
    return f"[{'#' * filled}{'-' * (width - filled)}] {line(p)}"


class Display:
    """Redraws a bar in place on a TTY; otherwise writes a line every ``every`` seconds."""

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        every: float = 5.0,
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.every = every
        self.quiet = quiet
        self.clock = clock
        self._last = clock()
        self._drawn = False

    def show(self, progress: Progress) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\x1b[K" + bar(progress))
            self.stream.flush()
            self._drawn = True
            return
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            print(f"collectd-monitor: {line(progress)}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A line of its own (below the bar, which the next update redraws)."""
        self.end()
        print(f"collectd-monitor: {text}", file=self.stream, flush=True)

    def end(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
