"""The time budget of rule-file handlers: overruns, suspension, resumption.

A handler that takes longer than its budget per call has *overrun*. Each
overrun is reported; after :data:`MAX_OVERRUNS` of them within the gate's
``Window`` the handler is suspended, like a rule whose circuit breaker
opened, and is called again once ``ResumeAfter`` seconds have passed. This
module only keeps the books and words the notifications; the worker pool
(:mod:`collectd_monitor.rules.worker`) measures the calls and decides when a
thread is abandoned. Time is whatever clock the caller passes in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from collectd_monitor.codes import ResultCode
from collectd_monitor.rules.declarative import GateSettings
from collectd_monitor.rules.model import Outgoing, Severity
from collectd_monitor.rules.notify import SUSPENDED, clip_name, result_message

MAX_OVERRUNS = 3
"""Overruns within the gate's window that suspend a handler."""


@dataclass(frozen=True)
class Overrun:
    """What one overrun led to: its notification, and the suspension if it tripped one."""

    name: str
    count: int
    """Overruns of this handler within the window, this one included."""
    suspended: bool
    notes: tuple[Outgoing, ...]
    text: str
    """One line for collectd's log."""


@dataclass
class _Books:
    overruns: deque[float] = field(default_factory=deque)
    suspended_until: float | None = None


class OverrunGuard:
    """Per-handler overrun books. Not thread-safe: the worker pool holds its lock."""

    def __init__(
        self, budget: float, settings: GateSettings, max_overruns: int = MAX_OVERRUNS
    ) -> None:
        self.budget = budget
        self.settings = settings
        self.max_overruns = max_overruns
        self._books: dict[str, _Books] = {}

    def suspended(self, name: str) -> bool:
        books = self._books.get(name)
        return books is not None and books.suspended_until is not None

    def overran(self, name: str, now: float, took: float, *, abandoned: bool) -> Overrun:
        """Book an overrun of ``took`` seconds (``abandoned``: the call is still running)."""
        books = self._books.setdefault(name, _Books())
        horizon = now - self.settings.window
        while books.overruns and books.overruns[0] <= horizon:
            books.overruns.popleft()
        books.overruns.append(now)
        count = len(books.overruns)
        if abandoned:
            what = (
                f"still running after {took:.3g} s, over its {self.budget:g} s time budget; "
                "its thread is abandoned and the handler is skipped until that call returns"
            )
        else:
            what = f"took {took:.3g} s, over its {self.budget:g} s time budget"
        what += f" (overrun {count} of {self.max_overruns} within {self.settings.window:g} s)"
        notes = [_note(name, Severity.WARNING, ResultCode.HANDLER_OVERRUN, what)]
        tripped = count >= self.max_overruns and books.suspended_until is None
        if tripped:
            books.suspended_until = now + self.settings.resume_after
            books.overruns.clear()
            stop = (
                f"suspended: {count} overruns of its {self.budget:g} s time budget within "
                f"{self.settings.window:g} s; resumes in {self.settings.resume_after:g} s"
            )
            notes.append(_note(name, Severity.FAILURE, SUSPENDED, stop))
            what += f"; {stop}"
        return Overrun(name, count, tripped, tuple(notes), f"{name}: {what}")

    def resume_due(self, now: float) -> list[tuple[str, Outgoing]]:
        """Resume every handler whose suspension has run out; its notification each."""
        due = []
        for name, books in self._books.items():
            if books.suspended_until is not None and now >= books.suspended_until:
                books.suspended_until = None
                text = (
                    f"resumed after {self.settings.resume_after:g} s of suspension for "
                    "time budget overruns"
                )
                due.append((name, _note(name, Severity.OKAY, ResultCode.SUCCESS, text)))
        return due


def _note(name: str, severity: Severity, code: int, text: str) -> Outgoing:
    return Outgoing(severity, clip_name(name), result_message(None, code, text))
