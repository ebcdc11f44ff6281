"""The acting half of the local engine: a judgement of a rule goes to its gate.

:class:`~collectd_monitor.rules.engine.Engine` judges (values, notifications,
handler returns, threshold verdicts, missing data); every judgement ends in
:meth:`Acting._judge`, which reports it to the rule's :class:`~.gate.Gate` and
turns the verdict into a claimed run, a refusal, or a circuit breaker's
notification. Runs and notifications are collected under the engine's lock and
started or emitted by :meth:`Acting._flush` after it is released. Handler
errors and the observer (``test-rules``) are reported from here as well.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collectd_monitor.config import MonitorConfig
from collectd_monitor.rules import notify
from collectd_monitor.rules.condition import SeriesState
from collectd_monitor.rules.dispatch import Dispatcher, Emit, Observer, Refused, Run, Runner
from collectd_monitor.rules.gate import Gate, Verdict
from collectd_monitor.rules.model import Action, Outgoing
from collectd_monitor.rules.pyfiles import HandlerError, call_handler

log = logging.getLogger("collectd_monitor.local")

ERROR_LOG_EVERY = 60.0
"""A handler that raises on every value logs once a minute, not 20 000 times a second."""


@dataclass
class Entry:
    """A rule or handler as the engine tracks it."""

    name: str
    gate: Gate
    action: Action | None = None
    series: dict[tuple[str, ...], SeriesState] = field(default_factory=dict)
    open_faults: set[tuple[str, ...]] = field(default_factory=set)
    judged_at: float = float("-inf")
    """When a threshold notification was last judged (a compiled rule)."""


EntryRun = tuple[Entry, Run]
"""A run claimed for a rule, started once the lock is released."""


class Acting:
    """Gates, runs and notifications of the engine's rules (the base of ``Engine``)."""

    def __init__(
        self,
        config: MonitorConfig,
        runner: Runner,
        *,
        emit: Emit,
        clock: Callable[[], float],
        observe: Observer | None,
        new_task_id: Callable[[], int],
    ) -> None:
        self.emit = emit
        self.clock = clock
        self.observe = observe
        self.dispatcher = Dispatcher(
            config, runner, emit=self._emit, clock=clock, new_task_id=new_task_id, observe=observe
        )
        self._lock = threading.RLock()
        self._errors: dict[str, tuple[float, int]] = {}
        self._suspended: dict[int, Entry] = {}
        """The entries whose circuit breaker is open (by id): all that ticks must look at."""

    # -- gates and runs --------------------------------------------------------------

    def _judge(
        self,
        entry: Entry,
        fault: bool,
        now: float,
        runs: list[EntryRun],
        out: list[Outgoing],
        reason: str,
    ) -> None:
        """Feed one evaluation of a rule to its gate and act on the verdict."""
        verdict = entry.gate.report(now, fault)
        if verdict is Verdict.QUIET:
            self._maybe_resume(entry, now, out)
        elif verdict is Verdict.TRIPPED:
            self._suspend(entry, now, out)
        elif verdict is Verdict.RUN and entry.action is not None:
            claim = self.dispatcher.prepare(entry.name, entry.action, reason, now)
            if claim is None:
                return
            entry.gate.started(now, claim.task_id)
            if isinstance(claim, Refused):
                entry.gate.finished(now)
                out.append(claim.notification)
            else:
                runs.append((entry, claim))

    def _suspend(self, entry: Entry, now: float, out: list[Outgoing]) -> None:
        self._suspended[id(entry)] = entry
        s = entry.gate.settings
        log.warning(
            "%s: %d runs within %g s; suspended until no fault for %g s",
            entry.name,
            s.max_runs,
            s.window,
            s.resume_after,
        )
        self._note(now, "suspended", entry.name, f"after {s.max_runs} runs in {s.window:g} s")
        out.append(
            notify.suspended(
                entry.name, entry.gate.last_task_id, s.max_runs, s.window, s.resume_after
            )
        )

    def _maybe_resume(self, entry: Entry, now: float, out: list[Outgoing]) -> None:
        if entry.gate.try_resume(now):
            self._suspended.pop(id(entry), None)
            quiet = entry.gate.settings.resume_after
            log.info("%s: no fault for %g s; circuit breaker closed", entry.name, quiet)
            self._note(now, "resumed", entry.name, f"no fault for {quiet:g} s")
            out.append(notify.resumed(entry.name, quiet))

    def _flush(self, runs: list[EntryRun], out: list[Outgoing]) -> None:
        for item in out:
            self._emit(item)
        for entry, run in runs:
            self.dispatcher.start(run, finished=self._finisher(entry.gate))

    def _finisher(self, gate: Gate) -> Callable[[], None]:
        def finished() -> None:
            with self._lock:
                gate.finished(self.clock())

        return finished

    def _emit(self, item: Outgoing) -> None:
        try:
            self.emit(item)
        except Exception:
            log.exception("cannot dispatch the notification for %s", item.type_instance)

    # -- handler errors and observation ------------------------------------------------

    def _call(self, handler: Any, item: Any, now: float) -> Action | None:
        try:
            return call_handler(handler, item)
        except HandlerError as exc:
            self._handler_failed(handler.name, str(exc), now)
            return None

    def _handler_failed(self, name: str, text: str, now: float) -> None:
        self._note(now, "error", name, text)
        with self._lock:
            last, suppressed = self._errors.get(name, (float("-inf"), 0))
            if now - last < ERROR_LOG_EVERY:
                self._errors[name] = (last, suppressed + 1)
                return
            self._errors[name] = (now, 0)
        more = f" ({suppressed} more such errors since the last report)" if suppressed else ""
        log.error("%s%s", text, more)

    def _note(self, now: float, event: str, name: str, text: str) -> None:
        if self.observe is not None:
            self.observe(now, event, name, text)
