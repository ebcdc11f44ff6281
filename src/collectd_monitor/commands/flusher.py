"""What follows a publish, done off its path: the outbox's fsync, the task's log line.

A result is written to the outbox journal (page cache) *before* it is
published: from that moment it survives any crash of collectd, SIGKILL
included, because the kernel keeps the data. Only a power loss or a kernel
crash can still lose it, and that is what an fsync guards against. An fsync
costs a disk flush (0.5 ms on a quiet disk, 20 ms and more while other
processes write), so it is not done before the publish: the outbox hands its
journal to a :class:`Flusher`, whose own thread syncs it :data:`SYNC_DELAY`
after the publish, and only if results still wait in it then. On a healthy
link the broker has acknowledged the result long before (about a
millisecond on a LAN), so nothing is synced at all: the broker keeps it now.
The agent defers a task's end line the same way (:meth:`Flusher.later`).

What survives a power loss therefore: every result the broker acknowledged,
and every result still waiting :data:`SYNC_DELAY` plus a disk flush after its
publish. A result written in the window before that may be lost, or come back
cut, in which case the outbox moves the cut line to ``quarantine/`` when it
starts.

Waking a sleeping thread costs a round trip about 60 µs when it happens while
the result goes out (the woken thread wants the GIL just as the MQTT thread
answers the broker's PUBREC). So the agent calls :meth:`Flusher.expect` when a
command starts: the thread wakes then, while the command runs and nothing
else needs the GIL, and sets its alarm; work handed in before the alarm rings
needs no wake-up at all.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

Sync = Callable[[int], None]
"""``os.fdatasync`` or a stand-in (tests)."""

SYNC_DELAY = 0.02
"""Seconds between a publish and the sync of its journal (skipped if acknowledged by then)."""


class Syncable(Protocol):
    def sync(self, sync: Sync) -> None: ...


class Flusher:
    """Runs work :attr:`delay` seconds after it is handed in, on a thread of its own.

    Work is a journal to sync (:meth:`submit`) or a call (:meth:`later`), run
    in the order handed in. :meth:`close` runs what is left on the calling
    thread at once; work handed in after it runs at once on the caller.
    """

    def __init__(self, *, sync: Sync = os.fdatasync, delay: float = SYNC_DELAY) -> None:
        self._sync = sync
        self.delay = delay
        self._cond = threading.Condition()
        self._work: list[tuple[float, Syncable | Callable[[], None]]] = []
        self._alarm: float | None = None
        """When the thread wakes next; None while it sleeps until notified."""
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def expect(self) -> None:
        """Work will follow soon (a command has started): wake the thread now, so
        that work handed in within :attr:`delay` finds its alarm set."""
        with self._cond:
            if self._closed or self._alarm is not None:
                return
            self._alarm = time.monotonic() + self.delay
            self._wake()

    def submit(self, target: Syncable) -> None:
        """Sync ``target`` soon (once, however often it is submitted before that)."""
        with self._cond:
            if any(item is target for _, item in self._work):
                return
        self._add(target)

    def later(self, call: Callable[[], None]) -> None:
        """Run ``call`` soon, off the caller's thread (its exceptions are logged)."""
        self._add(call)

    def _add(self, item: Syncable | Callable[[], None]) -> None:
        with self._cond:
            if not self._closed:
                due = time.monotonic() + self.delay
                self._work.append((due, item))
                if self._alarm is None:  # asleep without an alarm: the one wake-up
                    self._alarm = due
                    self._wake()
                return
        self._run_items([item])

    def _wake(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cm-outbox-sync", daemon=True)
            self._thread.start()
        self._cond.notify()

    def wait(self, timeout: float) -> bool:
        """Wait until everything handed in so far has run; False on ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._work and not self._busy, timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the thread after its batch; run what is still waiting here and now."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            left, self._work = self._work, []
        self._run_items([item for _, item in left])

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._alarm is None or time.monotonic() < self._alarm):
                    self._cond.wait(None if self._alarm is None else self._alarm - time.monotonic())
                if self._closed:
                    return  # close() runs the rest
                now = time.monotonic()
                batch = [item for due, item in self._work if due <= now]
                self._work = [(due, item) for due, item in self._work if due > now]
                self._alarm = self._work[0][0] if self._work else None
                self._busy = True
            try:
                self._run_items(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _run_items(self, items: list[Syncable | Callable[[], None]]) -> None:
        for item in items:
            try:  # never let the thread die: later work needs it
                if callable(item):
                    item()
                else:
                    item.sync(self._sync)
            except Exception:
                log.exception("error in work that follows a publish")
