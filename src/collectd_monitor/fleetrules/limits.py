"""Fleet-wide safety: how many hosts may be repaired, and when a rule must stop.

A per-host gate (cooldown, circuit breaker) keeps one host from being
restarted in a loop; it cannot see that *every* host faults at once, which
is what a bad deploy or a network partition looks like from the centre. So,
above the per-host gates:

* ``MaxConcurrentHosts``: repairs in flight at once, over every rule;
* ``MaxHostsPerWindow``: distinct hosts one rule may repair within ``Window``
  (a host already repaired in the window does not count again);
* the abort threshold: when more than ``AbortFailureRatio`` of a rule's
  repairs that ended within ``Window`` failed (at least ``AbortMinRepairs`` of
  them), the rule stops acting for ``ResumeAfter`` seconds and then starts
  afresh, like a circuit breaker.

Not thread-safe: the engine holds its lock. Time is the engine's clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from collectd_monitor.codes import ResultCode
from collectd_monitor.fleetrules.settings import FleetSettings


@dataclass(slots=True)
class _RuleWindow:
    repairs: deque[tuple[float, str]] = field(default_factory=deque)
    """(started, host) of repairs started within the window."""
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)
    """(ended, failed) of repairs that ended within the window."""
    aborted_at: float | None = None


@dataclass(frozen=True, slots=True)
class Blocked:
    code: int
    reason: str


class FleetLimits:
    def __init__(self, settings: FleetSettings) -> None:
        self.settings = settings
        self.in_flight = 0
        self._rules: dict[str, _RuleWindow] = {}

    def _window(self, rule: str, now: float) -> _RuleWindow:
        state = self._rules.get(rule)
        if state is None:
            state = self._rules[rule] = _RuleWindow()
        horizon = now - self.settings.window
        while state.repairs and state.repairs[0][0] <= horizon:
            state.repairs.popleft()
        while state.outcomes and state.outcomes[0][0] <= horizon:
            state.outcomes.popleft()
        return state

    def aborted(self, rule: str) -> bool:
        state = self._rules.get(rule)
        return state is not None and state.aborted_at is not None

    def blocked(self, rule: str, host: str, now: float) -> Blocked | None:
        """Why ``rule`` may not repair ``host`` now, or None when it may."""
        s = self.settings
        state = self._window(rule, now)
        if state.aborted_at is not None:
            until = state.aborted_at + s.resume_after - now
            return Blocked(
                ResultCode.CENTRAL_ABORTED,
                f"not sent: rule aborted (too many failed repairs); resumes in {until:.0f} s",
            )
        if self.in_flight >= s.max_concurrent_hosts:
            return Blocked(
                ResultCode.CENTRAL_HELD,
                f"held: {self.in_flight} repairs in flight (MaxConcurrentHosts "
                f"{s.max_concurrent_hosts})",
            )
        hosts = {name for _, name in state.repairs}
        if host not in hosts and len(hosts) >= s.max_hosts_per_window:
            return Blocked(
                ResultCode.CENTRAL_HELD,
                f"held: {len(hosts)} hosts repaired within {s.window:g} s (MaxHostsPerWindow "
                f"{s.max_hosts_per_window})",
            )
        return None

    def started(self, rule: str, host: str, now: float) -> None:
        self._window(rule, now).repairs.append((now, host))
        self.in_flight += 1

    def finished(self, rule: str, failed: bool, now: float) -> str | None:
        """Count an ended repair; the reason when this trips the rule's abort threshold."""
        self.in_flight = max(self.in_flight - 1, 0)
        state = self._window(rule, now)
        state.outcomes.append((now, failed))
        if state.aborted_at is not None:
            return None
        total = len(state.outcomes)
        failures = sum(1 for _, bad in state.outcomes if bad)
        s = self.settings
        if total >= s.abort_min_repairs and failures > s.abort_failure_ratio * total:
            state.aborted_at = now
            return (
                f"rule aborted: {failures} of {total} repairs failed within {s.window:g} s "
                f"(AbortFailureRatio {s.abort_failure_ratio:g}); no repairs for "
                f"{s.resume_after:g} s"
            )
        return None

    def try_resume(self, rule: str, now: float) -> bool:
        """Lift an abort once ``ResumeAfter`` has passed; the rule's counts start afresh."""
        state = self._rules.get(rule)
        if state is None or state.aborted_at is None:
            return False
        if now - state.aborted_at < self.settings.resume_after:
            return False
        state.aborted_at = None
        state.outcomes.clear()
        state.repairs.clear()
        return True

    def aborted_rules(self) -> list[str]:
        return [name for name, state in self._rules.items() if state.aborted_at is not None]
