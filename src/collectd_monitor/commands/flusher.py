"""fsync of the outbox, off the result path.

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

What survives a power loss therefore: every result the broker acknowledged,
and every result still waiting :data:`SYNC_DELAY` plus a disk flush after its
publish. A result written in the window before that may be lost, or come back
cut, in which case the outbox moves the cut line to ``quarantine/`` when it
starts.
"""

from __future__ import annotations

import logging
import os
import threading
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
    """Syncs what it is given, on a thread of its own started on first use.

    :meth:`close` syncs what is left on the calling thread; targets submitted
    after it are synced at once on the submitting thread.
    """

    def __init__(self, *, sync: Sync = os.fdatasync, delay: float = SYNC_DELAY) -> None:
        self._sync = sync
        self.delay = delay
        self._cond = threading.Condition()
        self._pending: list[Syncable] = []
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, target: Syncable) -> None:
        """Sync ``target`` soon (once, however often it is submitted before that)."""
        with self._cond:
            if not self._closed:
                if not any(t is target for t in self._pending):
                    self._pending.append(target)
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="cm-outbox-sync", daemon=True
                    )
                    self._thread.start()
                self._cond.notify()
                return
        self._flush([target])

    def wait(self, timeout: float) -> bool:
        """Wait until everything submitted so far is synced; False on ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the thread after its batch; sync what is still waiting here and now."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            left, self._pending = self._pending, []
        self._flush(left)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return  # close() syncs the rest
                self._busy = True
                # the grace: what the broker acknowledges meanwhile needs no sync
                self._cond.wait_for(lambda: self._closed, self.delay)
                if self._closed:
                    self._busy = False
                    self._cond.notify_all()
                    return
                batch, self._pending = self._pending, []
            try:
                self._flush(batch)
            except Exception:  # never let the thread die: later entries need it
                log.exception("error while syncing the outbox")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _flush(self, batch: list[Syncable]) -> None:
        for target in batch:
            target.sync(self._sync)
