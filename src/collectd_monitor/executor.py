"""Run whitelisted recovery commands safely, off collectd's and the MQTT client's threads.

A bounded pool of worker threads takes jobs, runs each command with
:func:`collectd_monitor.process.run_command` (its own process group, output
capped, a timeout that ends the whole group) and reports every job's outcome
exactly once, also for jobs that never started because collectd stops.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from collectd_monitor.codes import ResultCode
from collectd_monitor.config import CommandSpec
from collectd_monitor.process import RUNNING_NOTICE, Handle, Outcome, run_command

log = logging.getLogger(__name__)

__all__ = [
    "RUNNING_NOTICE",
    "Busy",
    "CommandExecutor",
    "Handle",
    "Job",
    "Outcome",
    "run_command",
]


class Busy(Exception):
    """The queue of waiting commands is full."""


@dataclass
class Job:
    spec: CommandSpec
    on_done: Callable[[Outcome], None]
    on_start: Callable[[], None] | None = None
    """Called on the worker right after the command started (not if it never does)."""
    on_long_run: Callable[[], None] | None = None
    """Called on the worker if the command still runs :data:`RUNNING_NOTICE` s after its start."""


Runner = Callable[..., Outcome]

_NOT_RUN = Outcome(
    code=ResultCode.COMMAND_ABORTED,
    output="",
    errors="not run: collectd is shutting down",
    start_failed=True,
)


class CommandExecutor:
    """A bounded pool of worker threads that run jobs and report outcomes.

    ``submit`` never blocks: when ``max_queued`` jobs already wait it raises
    :class:`Busy`. ``shutdown`` ends running commands (their outcomes say
    *aborted*) and reports jobs that never started as aborted too, so that
    every job's ``on_done`` is called exactly once.
    """

    def __init__(
        self,
        *,
        max_concurrent: int = 4,
        max_queued: int = 64,
        default_timeout: float = 60.0,
        max_output: int = 64 * 1024,
        kill_grace: float = 1.0,
        runner: Runner = run_command,
    ) -> None:
        self._max_concurrent = max_concurrent
        self._queue: queue.Queue[Job | None] = queue.Queue(max_queued)
        self._default_timeout = default_timeout
        self._max_output = max_output
        self._kill_grace = kill_grace
        self._runner = runner
        self._workers: list[threading.Thread] = []
        self._running: dict[int, Handle] = {}
        self._lock = threading.Lock()
        self._closing = False

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closing:
                raise Busy("shutting down")
            while len(self._workers) < self._max_concurrent:
                worker = threading.Thread(
                    target=self._work, name=f"cm-exec-{len(self._workers)}", daemon=True
                )
                self._workers.append(worker)
                worker.start()
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise Busy(f"{self._queue.maxsize} commands already waiting") from None

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def running(self) -> int:
        return len(self._running)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            handle = Handle(job.on_start, job.on_long_run)
            with self._lock:
                if self._closing:
                    handle.aborted = True
                self._running[id(handle)] = handle
            try:
                if handle.aborted:
                    outcome = _NOT_RUN
                else:
                    outcome = self._runner(
                        job.spec,
                        timeout=job.spec.timeout or self._default_timeout,
                        max_output=self._max_output,
                        kill_grace=self._kill_grace,
                        handle=handle,
                    )
            except Exception as exc:  # never let a worker die
                log.exception("command %s failed unexpectedly", job.spec.label)
                outcome = Outcome(
                    code=ResultCode.COMMAND_START_FAILED,
                    output="",
                    errors=f"internal error running {job.spec.label}: {exc}",
                    start_failed=True,
                )
            finally:
                with self._lock:
                    self._running.pop(id(handle), None)
            self._report(job, outcome)

    @staticmethod
    def _report(job: Job, outcome: Outcome) -> None:
        try:
            job.on_done(outcome)
        except Exception:
            log.exception("reporting the result of %s failed", job.spec.label)

    def shutdown(self, timeout: float = 0.5) -> None:
        """Abort everything and wait up to ``timeout`` for outcomes to be reported."""
        with self._lock:
            self._closing = True
            handles = list(self._running.values())
            workers = list(self._workers)
        for handle in handles:
            handle.abort()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._report(job, _NOT_RUN)
        for _ in workers:
            try:
                self._queue.put_nowait(None)
            except queue.Full:  # the workers are daemon threads; they die with collectd
                break
        end = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(end - time.monotonic(), 0))
