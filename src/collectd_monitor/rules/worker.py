"""Rule-file handlers off collectd's threads: a bounded queue, workers, a watchdog.

collectd calls the write and notification callbacks on its own threads; a
handler that blocks there stops every write plugin and keeps collectd from
stopping. So the callbacks only put the event in a bounded queue
(:class:`EventQueue`: when it is full the event is dropped and counted, and
the count is logged at most once a minute), and :class:`HandlerPool` calls
the handlers on its own daemon threads.

A thread stuck in Python code cannot be killed. Instead a watchdog looks at
each worker several times per budget: a call still running past the budget
is *abandoned*. Its worker is marked so that whatever the call returns is
ignored and the thread ends when it comes back, a new worker takes over the
rest of the event and the queue, and the handler is skipped until the
abandoned call returns (so a handler holds at most one abandoned thread).
The number of abandoned threads is capped; past the cap no replacement is
started until one comes back. Nothing ever joins a worker: stopping only
tells them to end, so a hung handler cannot hold up collectd's shutdown.

Ordering: with one worker (the default) the handlers see events in the order
the callbacks queued them, each event by each handler in turn. An event a
handler misses (queue full, handler suspended or still in an abandoned call)
is never delivered to it later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from collectd_monitor.rules.model import Action, Metric, Notice, Outgoing
from collectd_monitor.rules.overrun import OverrunGuard
from collectd_monitor.rules.pyfiles import Handler

log = logging.getLogger("collectd_monitor.local")

QUEUE_SIZE = 10_000
"""Events waiting for the handlers; about 10 s of a busy host's values."""
DROP_LOG_EVERY = 60.0
MAX_ABANDONED = 8
"""Threads that may be left inside overrunning handlers while workers are replaced;
one more and no replacement is started until one of them returns."""

Event = Metric | Notice
Call = Callable[[Handler, Event], Action | None]
"""Calls one handler (reporting its errors itself) and returns its action."""
Judge = Callable[[Handler, Event, Action | None], None]
"""Judges what a handler returned: the engine's gates, runs and notifications."""
Emit = Callable[[Outgoing], None]


@dataclass(frozen=True)
class Job:
    event: Event
    handlers: tuple[Handler, ...]
    start: int = 0
    """The first handler still to call: a replacement worker resumes there."""


class EventQueue:
    """A bounded FIFO whose ``put`` never blocks: a full queue drops and counts."""

    def __init__(
        self,
        size: int = QUEUE_SIZE,
        *,
        clock: Callable[[], float] = time.monotonic,
        log_every: float = DROP_LOG_EVERY,
    ) -> None:
        self.size = size
        self.clock = clock
        self.log_every = log_every
        self.dropped = 0
        """Every event dropped since start."""
        self._unreported = 0
        self._reported_at = float("-inf")
        self._items: deque[Job] = deque()
        self._ready = threading.Condition(threading.Lock())

    def __len__(self) -> int:
        return len(self._items)

    def put(self, job: Job) -> bool:
        with self._ready:
            if len(self._items) < self.size:
                self._items.append(job)
                self._ready.notify()
                return True
            self.dropped += 1
            self._unreported += 1
        self.report_drops()
        return False

    def get(self, timeout: float) -> Job | None:
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            return self._items.popleft() if self._items else None

    def report_drops(self) -> str | None:
        """Log the drops not yet reported, at most once per ``log_every``; the line logged."""
        now = self.clock()
        with self._ready:
            if not self._unreported or now - self._reported_at < self.log_every:
                return None
            count, self._unreported, self._reported_at = self._unreported, 0, now
        line = (
            f"rule-file handlers fall behind: queue full ({self.size} events), {count} "
            f"event(s) dropped since the last report ({self.dropped} in all); "
            "declarative rules still see every value"
        )
        log.warning("%s", line)
        return line


@dataclass
class _Worker:
    number: int
    resume: Job | None = None
    job: Job | None = None
    index: int = 0
    started: float = 0.0
    abandoned: bool = False
    thread: threading.Thread | None = None

    @property
    def calling(self) -> Handler | None:
        return self.job.handlers[self.index] if self.job is not None else None


class HandlerPool:
    """Worker threads that call rule-file handlers within a time budget each."""

    def __init__(
        self,
        call: Call,
        judge: Judge,
        emit: Emit,
        guard: OverrunGuard,
        *,
        workers: int = 1,
        queue: EventQueue | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_abandoned: int = MAX_ABANDONED,
    ) -> None:
        self.call = call
        self.judge = judge
        self.emit = emit
        self.guard = guard
        self.workers = workers
        self.queue = queue if queue is not None else EventQueue(clock=clock)
        self.clock = clock
        self.max_abandoned = max_abandoned
        self._lock = threading.Lock()
        self._active: list[_Worker] = []
        self._abandoned: list[_Worker] = []
        self._resume: deque[Job] = deque()
        self._hung: set[str] = set()
        """Handlers with a call still running on an abandoned thread."""
        self._stopping = threading.Event()
        self._count = 0
        self._capped = False

    # -- life cycle ----------------------------------------------------------------

    def start(self, *, watchdog: bool = True) -> None:
        """Start the workers, and (unless a test drives :meth:`check`) the watchdog."""
        with self._lock:
            self._fill()
        if watchdog:
            interval = min(0.25, max(0.02, self.guard.budget / 4))
            threading.Thread(
                target=self._watch, args=(interval,), name="local-watchdog", daemon=True
            ).start()

    def stop(self) -> None:
        """Tell every thread to end; never waits for one (a handler may hang for good)."""
        self._stopping.set()

    @property
    def abandoned(self) -> int:
        with self._lock:
            return len(self._abandoned)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._active)

    def busy_with(self) -> list[str]:
        """Names of the handlers the active workers are calling right now."""
        with self._lock:
            return [w.calling.name for w in self._active if w.calling is not None]

    # -- input (collectd's threads: never blocks) ------------------------------------

    def submit(self, event: Event, handlers: Sequence[Handler]) -> bool:
        if not handlers or self._stopping.is_set():
            return False
        return self.queue.put(Job(event, tuple(handlers)))

    # -- watchdog --------------------------------------------------------------------

    def _watch(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            try:
                self.check()
            except Exception:
                log.exception("handler watchdog failed")

    def check(self) -> None:
        """Abandon overrunning calls, resume suspended handlers, report drops."""
        now = self.clock()
        reports = []
        with self._lock:
            for worker in list(self._active):
                handler = worker.calling
                if handler is None or now - worker.started <= self.guard.budget:
                    continue
                worker.abandoned = True
                self._active.remove(worker)
                self._abandoned.append(worker)
                self._hung.add(handler.name)
                assert worker.job is not None
                if worker.index + 1 < len(worker.job.handlers):
                    self._resume.append(
                        Job(worker.job.event, worker.job.handlers, worker.index + 1)
                    )
                took = now - worker.started
                reports.append(self.guard.overran(handler.name, now, took, abandoned=True))
            resumed = self.guard.resume_due(now)
            self._fill()
        for report in reports:
            log.warning("%s", report.text)
            self._emit(report.notes)
        for name, note in resumed:
            log.info("%s: resumed after its suspension for time budget overruns", name)
            self._emit((note,))
        self.queue.report_drops()

    def _fill(self) -> None:
        """Start workers up to ``workers`` while the abandoned ones stay under the cap."""
        if self._stopping.is_set():
            return
        while len(self._active) < self.workers:
            if len(self._abandoned) > self.max_abandoned:
                if not self._capped:
                    self._capped = True
                    log.error(
                        "%d handler threads are stuck in rule-file handlers; no handler runs "
                        "until one returns (declarative rules still work)",
                        len(self._abandoned),
                    )
                return
            self._capped = False
            self._count += 1
            worker = _Worker(self._count, self._resume.popleft() if self._resume else None)
            worker.thread = threading.Thread(
                target=self._work, args=(worker,), name=f"local-handlers-{self._count}", daemon=True
            )
            self._active.append(worker)
            worker.thread.start()

    # -- workers ---------------------------------------------------------------------

    def _work(self, worker: _Worker) -> None:
        while not self._stopping.is_set():
            job, worker.resume = worker.resume, None
            if job is None:
                job = self.queue.get(timeout=0.5)
            if job is None:
                continue
            for index in range(job.start, len(job.handlers)):
                if not self._run(worker, job, index):
                    return

    def _run(self, worker: _Worker, job: Job, index: int) -> bool:
        """Call one handler; False when this worker was abandoned and must end."""
        handler = job.handlers[index]
        with self._lock:
            if worker.abandoned or self._stopping.is_set():
                return False
            if handler.name in self._hung or self.guard.suspended(handler.name):
                return True
            worker.job, worker.index, worker.started = job, index, self.clock()
        action: Action | None = None
        try:
            action = self.call(handler, job.event)
        except Exception:  # the engine reports handler errors; this is a bug of ours
            log.exception("%s: calling the handler failed", handler.name)
        report = None
        with self._lock:
            worker.job = None
            now = self.clock()
            took = now - worker.started
            if worker.abandoned:
                self._abandoned.remove(worker)
                self._hung.discard(handler.name)
                self._fill()
                late = True
            else:
                late = False
                if took > self.guard.budget:
                    report = self.guard.overran(handler.name, now, took, abandoned=False)
        if late:
            log.info("%s: abandoned call returned after %.3g s; result ignored", handler.name, took)
            return False
        if report is not None:
            log.warning("%s", report.text)
            self._emit(report.notes)
        try:
            self.judge(handler, job.event, action)
        except Exception:
            log.exception("%s: judging the handler's result failed", handler.name)
        return True

    def _emit(self, notes: Iterable[Outgoing]) -> None:
        for note in notes:
            try:
                self.emit(note)
            except Exception:
                log.exception("cannot dispatch the notification for %s", note.type_instance)
