"""Memory of recently seen messages, bounded in size, optionally kept on disk.

A message is known by its task id *and* a digest of its content (the
canonical JSON without its ``signature``, see :func:`message_digest`). It is
remembered before its command runs and after it has finished, so a sender that
retries, a broker that redelivers, or an attacker who replays a captured
message cannot run the same task twice; a new message that merely reuses a
task id (the original's senders pick ids from a weak random source) runs.

With a ``path`` the memory survives a collectd restart: each entry is appended
to the file as ``[task_id, seen_at, digest]`` as it arrives, and the file is
rewritten (atomically) once it holds twice the capacity. Lines of former
versions, ``[task_id, seen_at]``, still load: such an entry has no digest and
refuses every message with its task id until it ages out, as before.

When the file cannot be written (unwritable state directory, full disk) the
memory goes on in RAM only: replay protection then no longer survives a
restart. That is logged at ERROR once and shown by :attr:`SeenTasks.memory_only`
(the agent puts it in its status message).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from collectd_monitor.fsutil import UnsafePath, atomic_write, open_private, private_directory

log = logging.getLogger(__name__)

TaskId = int | str
Key = tuple[TaskId, str | None]
"""(task_id, content digest); a digest of None (a former version's entry) matches any content."""


def message_digest(fields: Mapping[str, Any]) -> str:
    """SHA-256 of the message without ``signature``, as canonical JSON (hex).

    The same canonical form that signatures cover: a replay that re-encodes the
    JSON (key order, whitespace, escapes) has the same digest.
    """
    body = {key: value for key, value in fields.items() if key != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


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
        self._ids: OrderedDict[Key, float] = OrderedDict()
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._lines = 0
        self.memory_only = False
        """True once a configured file could not be written: replays are only
        remembered until the next restart."""
        if path is not None:
            try:  # another user's directory could redirect our appends (symlinks)
                private_directory(path.parent)
            except UnsafePath as exc:
                self._degrade(f"unsafe state directory: {exc}")
            except OSError as exc:
                self._degrade(f"cannot create {path.parent}: {exc.strerror or exc}")
            else:
                self._load(path)

    def _load(self, path: Path) -> None:
        """Read what a former run remembered; a bad line is skipped, never fatal."""
        horizon = self.clock() - self.window if self.window else float("-inf")
        skipped = 0
        try:
            fd = open_private(path, os.O_RDONLY)
            with open(fd, encoding="utf-8", errors="replace") as handle:
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

    def _remember(self, key: Key, seen_at: float) -> None:
        self._ids[key] = seen_at
        self._ids.move_to_end(key)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def _known(self, key: Key) -> Key | None:
        """The remembered entry ``key`` repeats: the same content, or a legacy id-only entry."""
        for candidate in (key, (key[0], None)):
            if candidate in self._ids:
                return candidate
        return None

    def _rewrite(self) -> None:
        if self.path is None:
            return
        try:
            lines = "".join(_line(key, at) for key, at in self._ids.items())
            atomic_write(self.path, lines, mode=0o600, durable=True)
            if self._file is not None:
                self._file.close()
                self._file = None
            fd = open_private(self.path, os.O_WRONLY | os.O_APPEND)
            self._file = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self._lines = len(self._ids)
        except OSError as exc:
            self._degrade(f"cannot persist seen task ids to {self.path}: {exc}")

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

    def add(self, task_id: TaskId, digest: str | None = None) -> bool:
        """Remember this message; False if it was already remembered.

        ``digest`` (from :func:`message_digest`) tells messages with one task id
        apart; without it only the task id counts.
        """
        key: Key = (task_id, digest)
        with self._lock:
            known = self._known(key)
            if known is not None:
                self._ids.move_to_end(known)
                return False
            now = self.clock()
            self._remember(key, now)
            if self._file is not None:
                try:
                    self._file.write(_line(key, now))
                    self._file.flush()
                    self._lines += 1
                except OSError as exc:
                    self._degrade(f"cannot append to {self.path}: {exc}")
                if self._file is not None and self._lines > 2 * self.capacity:
                    self._rewrite()
            return True

    def __contains__(self, item: TaskId | Key) -> bool:
        """A (task_id, digest) pair as :meth:`add` would judge it, or a bare task id."""
        with self._lock:
            if isinstance(item, tuple):
                return self._known(item) is not None
            return any(key[0] == item for key in self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _line(key: Key, seen_at: float) -> str:
    task_id, digest = key
    return json.dumps([task_id, seen_at] if digest is None else [task_id, seen_at, digest]) + "\n"


def _parse_line(line: str) -> tuple[Key, float] | None:
    """``[task_id, seen_at, digest]`` as written by :meth:`SeenTasks.add`, or a former
    version's ``[task_id, seen_at]``; None for anything else."""
    try:
        entry = json.loads(line)
    except (ValueError, TypeError):
        return None
    if not isinstance(entry, list) or len(entry) not in (2, 3):
        return None
    task_id, seen_at = entry[0], entry[1]
    digest = entry[2] if len(entry) == 3 else None
    if isinstance(task_id, bool) or not isinstance(task_id, int | str):
        return None
    if isinstance(seen_at, bool) or not isinstance(seen_at, int | float):
        return None
    if not math.isfinite(seen_at):
        return None
    if len(entry) == 3 and not isinstance(digest, str):
        return None
    return (task_id, digest), float(seen_at)
