"""Acting on a rule's decision: find the command, start it, report how it ended.

The engine decides *whether* a rule acts (conditions, gates); the dispatcher
does the acting, in two steps so that the engine can call the first under its
lock and the second without it:

* :meth:`Dispatcher.prepare` looks the action up in the host's services and
  claims it; a command that already runs (for this rule or another one) is not
  started twice, and an action the config does not define becomes a failure
  notification straight away;
* :meth:`Dispatcher.start` hands the command to the runner (the executor's
  worker threads in collectd, a dry run in ``test-rules``) and, when it ends,
  frees it and emits the result notification.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from collectd_monitor.codes import ResultCode
from collectd_monitor.config import CommandSpec, MonitorConfig, lookup_command
from collectd_monitor.errors import ProtocolError
from collectd_monitor.executor import Busy, Outcome
from collectd_monitor.rules import notify
from collectd_monitor.rules.model import Action, Outgoing

log = logging.getLogger("collectd_monitor.local")

Runner = Callable[[CommandSpec, Callable[[Outcome], None]], None]
"""Starts a command off the caller's thread; raises :class:`Busy` when it cannot."""
Emit = Callable[[Outgoing], None]
Observer = Callable[[float, str, str, str], None]
"""(time, event, rule name, text): what ``test-rules`` prints."""


@dataclass(frozen=True, slots=True)
class Run:
    """A claimed command, ready for :meth:`Dispatcher.start`."""

    name: str
    """The rule's name."""
    spec: CommandSpec
    task_id: int
    reason: str
    key: tuple[str, str]
    """(service, command) as the rule named them: what is busy until the run ends."""


@dataclass(frozen=True, slots=True)
class Refused:
    """An action that cannot run; ``notification`` says why."""

    task_id: int
    notification: Outgoing


class Dispatcher:
    def __init__(
        self,
        config: MonitorConfig,
        runner: Runner,
        *,
        emit: Emit,
        clock: Callable[[], float],
        new_task_id: Callable[[], int],
        observe: Observer | None = None,
    ) -> None:
        self.config = config
        self.runner = runner
        self.emit = emit
        self.clock = clock
        self.new_task_id = new_task_id
        self.observe = observe
        self._busy: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def prepare(self, name: str, action: Action, reason: str, now: float) -> Run | Refused | None:
        """Claim ``action`` for rule ``name``; None when its command already runs."""
        key = (action.service, action.command)
        with self._lock:
            if key in self._busy:
                self._note(now, "skipped", name, f"{action.label} is already running")
                log.info("%s: %s is already running; not started again", name, action.label)
                return None
            task_id = self.new_task_id()
            try:
                spec = lookup_command(self.config, action.service, action.command, task_id)
            except ProtocolError as exc:
                log.error("%s: %s", name, exc.message)
                self._note(now, "error", name, exc.message)
                return Refused(task_id, notify.result(name, task_id, exc.code, exc.message))
            self._busy.add(key)
        return Run(name, spec, task_id, reason, key)

    def start(self, run: Run, finished: Callable[[], None]) -> None:
        """Hand ``run`` to the runner; when it ends call ``finished``, free it, emit the result."""
        spec = run.spec
        log.info("%s: task %d: running %s (%s)", run.name, run.task_id, spec.label, run.reason)
        self._note(
            self.clock(), "run", run.name, f"task {run.task_id}: {spec.label} ({run.reason})"
        )

        def done(outcome: Outcome) -> None:
            finished()  # first: while the command still counts as busy, nothing can restart it
            with self._lock:
                self._busy.discard(run.key)
            level = logging.INFO if outcome.code == 0 else logging.WARNING
            log.log(
                level,
                "%s: task %d: %s ended with code %d",
                run.name,
                run.task_id,
                spec.label,
                outcome.code,
            )
            self._note(
                self.clock(),
                "result",
                run.name,
                f"task {run.task_id}: code {outcome.code}: {outcome.message[:100]}",
            )
            self.emit(notify.result(run.name, run.task_id, outcome.code, outcome.message))

        try:
            self.runner(spec, done)
        except Busy as exc:
            done(
                Outcome(
                    code=ResultCode.BUSY, output="", errors=f"not run: {exc}", start_failed=True
                )
            )

    def _note(self, now: float, event: str, name: str, text: str) -> None:
        if self.observe is not None:
            self.observe(now, event, name, text)
