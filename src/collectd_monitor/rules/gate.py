"""When a rule may run its command: one at a time, cooldown, circuit breaker.

A rule reports *fault* or *no fault* each time it is evaluated; the gate turns
that into a verdict. It is what keeps a fault that lasts an hour from
restarting a service every interval (the original's behaviour): after a run
the rule waits out its cooldown, and after ``max_runs`` runs within
``window`` it suspends itself until it has reported no fault for
``resume_after`` seconds. Time is whatever clock the engine passes in.
"""

from __future__ import annotations

import enum
from collections import deque

from collectd_monitor.rules.declarative import GateSettings


class Verdict(enum.Enum):
    QUIET = "no fault"
    RUN = "run the command"
    RUNNING = "its command is still running"
    COOLDOWN = "cooling down after the last run"
    SUSPENDED = "suspended by its circuit breaker"
    TRIPPED = "circuit breaker opens now"


class Gate:
    """The run bookkeeping of one rule. Not thread-safe: the engine holds its lock."""

    def __init__(self, settings: GateSettings) -> None:
        self.settings = settings
        self.runs: deque[float] = deque()
        self.running = False
        self.ready_at = float("-inf")
        self.suspended = False
        self.last_fault: float | None = None
        self.last_task_id: int | None = None

    def report(self, now: float, fault: bool) -> Verdict:
        if not fault:
            return Verdict.QUIET
        self.last_fault = now
        if self.suspended:
            return Verdict.SUSPENDED
        if self.running:
            return Verdict.RUNNING
        if now < self.ready_at:
            return Verdict.COOLDOWN
        horizon = now - self.settings.window
        while self.runs and self.runs[0] <= horizon:
            self.runs.popleft()
        if len(self.runs) >= self.settings.max_runs:
            self.suspended = True
            return Verdict.TRIPPED
        return Verdict.RUN

    def started(self, now: float, task_id: int | None = None) -> None:
        self.runs.append(now)
        self.running = True
        self.last_task_id = task_id

    def finished(self, now: float) -> None:
        self.running = False
        self.ready_at = now + self.settings.cooldown

    def try_resume(self, now: float) -> bool:
        """Close an open breaker once the rule has been quiet long enough."""
        if not self.suspended:
            return False
        quiet_since = self.last_fault if self.last_fault is not None else now
        if now - quiet_since < self.settings.resume_after:
            return False
        self.suspended = False
        self.runs.clear()
        return True
