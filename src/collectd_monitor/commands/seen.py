"""Memory of recently seen task ids, bounded in size, optionally kept on disk.

A task id is remembered before its command runs and after it has finished, so
a sender that retries, a broker that redelivers, or an attacker who replays a
captured message cannot run the same task twice. With a ``path`` the memory
survives a collectd restart: each id is appended to the file as it arrives, and
the file is rewritten (atomically) once it holds twice the capacity.

When the file cannot be written (unwritable state directory, full disk) the
memory goes on in RAM only: replay protection then no longer survives a
restart. That is logged at ERROR once and shown by :attr:`SeenTasks.memory_only`
(the agent puts it in its status message).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import IO

from collectd_monitor.fsutil import atomic_write

log = logging.getLogger(__name__)


class SeenTasks:
    def __init__(
        self,
        capacity: int = 10_000,
        *,
        path: Path | None = None,
        window: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.capacity = capacity
        self.path = path
        self.window = window
        self.clock = clock
        self._ids: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._lines = 0
        self.memory_only = False
        """True once a configured file could not be written: replays are only
        remembered until the next restart."""
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        """Read what a former run remembered; a bad line is skipped, never fatal."""
        horizon = self.clock() - self.window if self.window else float("-inf")
        skipped = 0
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    entry = _parse_line(line)
                    if entry is None:
                        skipped += 1
                    elif entry[1] >= horizon:
                        self._remember(*entry)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot read seen task ids from %s: %s", path, exc)
        if skipped:
            log.warning("%s: skipped %d unreadable line(s)", path, skipped)
        self._rewrite()

    def _remember(self, task_id: Hashable, seen_at: float) -> None:
        self._ids[task_id] = seen_at
        self._ids.move_to_end(task_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def _rewrite(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            lines = "".join(json.dumps([task_id, at]) + "\n" for task_id, at in self._ids.items())
            atomic_write(self.path, lines, mode=0o600, durable=True)
            if self._file is not None:
                self._file.close()
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self._lines = len(self._ids)
        except OSError as exc:
            self._degrade(f"cannot write {self.path}: {exc}")

    def _degrade(self, why: str) -> None:
        log.error(
            "%s; replay protection is memory-only: task ids seen before a restart "
            "will be accepted again after it",
            why,
        )
        self.memory_only = True
        self.path = None
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def add(self, task_id: Hashable) -> bool:
        """Remember ``task_id``; False if it was already remembered."""
        with self._lock:
            if task_id in self._ids:
                self._ids.move_to_end(task_id)
                return False
            now = self.clock()
            self._remember(task_id, now)
            if self._file is not None:
                try:
                    self._file.write(json.dumps([task_id, now]) + "\n")
                    self._file.flush()
                    self._lines += 1
                except OSError as exc:
                    self._degrade(f"cannot append to {self.path}: {exc}")
                if self._file is not None and self._lines > 2 * self.capacity:
                    self._rewrite()
            return True

    def __contains__(self, task_id: Hashable) -> bool:
        with self._lock:
            return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _parse_line(line: str) -> tuple[int | str, float] | None:
    """``[task_id, seen_at]`` as written by :meth:`SeenTasks.add`, or None."""
    try:
        task_id, seen_at = json.loads(line)
    except (ValueError, TypeError):
        return None
    if isinstance(task_id, bool) or not isinstance(task_id, int | str):
        return None
    if isinstance(seen_at, bool) or not isinstance(seen_at, int | float):
        return None
    if not math.isfinite(seen_at):
        return None
    return task_id, float(seen_at)
