"""fsync of outbox entries, off the result path.

An outbox entry is written (atomically, to the page cache) *before* its
result is published: from that moment it survives any crash of collectd,
SIGKILL included, because the kernel keeps the data. Only a power loss or a
kernel crash can still lose it, and that is what an fsync guards against. An
fsync costs a disk flush (0.5 ms on a quiet disk, 20 ms and more while other
processes write), so it is not done before the publish: the agent hands the
entry to a :class:`Flusher`, whose own thread fsyncs the file and then its
directory (once per batch) right after the publish.

What survives a power loss therefore: every entry the flusher has synced
(normally a few milliseconds after its publish); an entry written in the
window before that may be lost, or come back empty or cut, in which case the
outbox moves it to ``quarantine/`` as unreadable when it starts. An entry the
broker acknowledged before the flusher got to it has been removed already and
is not synced at all: nothing is left to keep.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from collectd_monitor.fsutil import sync_directory

log = logging.getLogger(__name__)

Sync = Callable[[int], None]
"""``os.fsync`` or a stand-in (tests)."""


class Flusher:
    """fsyncs the files it is given, on a thread of its own started on first use.

    :meth:`close` syncs what is left on the calling thread; files submitted
    after it are synced at once on the submitting thread.
    """

    def __init__(self, *, sync: Sync = os.fsync) -> None:
        self._sync = sync
        self._cond = threading.Condition()
        self._pending: list[Path] = []
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, path: Path) -> None:
        """Make ``path`` (and its name in its directory) durable soon."""
        with self._cond:
            if not self._closed:
                self._pending.append(path)
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="cm-outbox-sync", daemon=True
                    )
                    self._thread.start()
                self._cond.notify()
                return
        self._flush([path])

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
                batch, self._pending = self._pending, []
                self._busy = True
            try:
                self._flush(batch)
            except Exception:  # never let the thread die: later entries need it
                log.exception("error while syncing outbox entries")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _flush(self, batch: list[Path]) -> None:
        directories: set[Path] = set()
        for path in batch:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # acknowledged and removed already: nothing left to keep
            except OSError as exc:
                log.warning("cannot open %s to sync it: %s", path, exc)
                continue
            try:
                self._sync(fd)
                directories.add(path.parent)
            except OSError as exc:
                log.warning("cannot sync %s: %s; it survives a crash, not a power loss", path, exc)
            finally:
                os.close(fd)
        for directory in sorted(directories):
            sync_directory(directory)
