"""A requested command as a job for the executor: its log lines and its result.

The log stays off the result's path. The worker publishes the result as
soon as the command has ended; the task's one INFO line ("ended with code")
is written by the flusher's thread about :data:`~.flusher.SYNC_DELAY` later,
and the flusher is woken when the command starts, while nothing else needs
the interpreter (see :mod:`.flusher`). A command still running after
:data:`~collectd_monitor.process.RUNNING_NOTICE` seconds gets an INFO line
too, so a hung command still shows; its start is logged at DEBUG.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from collectd_monitor.codes import describe
from collectd_monitor.commands.flusher import Flusher
from collectd_monitor.commands.protocol import Result
from collectd_monitor.config import CommandSpec
from collectd_monitor.executor import RUNNING_NOTICE, Job, Outcome

log = logging.getLogger(__name__)


def command_job(
    task_id: int, spec: CommandSpec, *, publish: Callable[[Result], None], flusher: Flusher
) -> Job:
    """The executor's job for task ``task_id``: run ``spec``, ``publish`` its result."""

    def started() -> None:
        flusher.expect()  # the moment to wake it: the command is running
        log.debug("task %s: running %s", task_id, spec.label)

    def long_run() -> None:
        log.info("task %s: running %s (for %g s now)", task_id, spec.label, RUNNING_NOTICE)

    def done(outcome: Outcome) -> None:
        flusher.later(lambda: log_end(task_id, spec, outcome))
        publish(command_result(task_id, outcome))

    return Job(spec=spec, on_done=done, on_start=started, on_long_run=long_run)


def log_end(task_id: int, spec: CommandSpec, outcome: Outcome) -> None:
    """The task's end line: INFO for code 0, else WARNING with the command's stderr."""
    level = logging.INFO if outcome.code == 0 else logging.WARNING
    log.log(
        level,
        "task %s: %s ended with code %d (%s) in %.0f ms",
        task_id,
        spec.label,
        outcome.code,
        describe(outcome.code),
        outcome.duration * 1000,
    )
    if outcome.errors and outcome.code != 0:
        log.info("task %s: %s stderr: %s", task_id, spec.label, outcome.errors[:500])


def command_result(task_id: int, outcome: Outcome) -> Result:
    """A command's result: stdout in ``message`` (as the original), stderr beside it."""
    stderr = "" if outcome.start_failed else outcome.errors
    return Result(task_id=task_id, code=outcome.code, message=outcome.message, stderr=stderr)
