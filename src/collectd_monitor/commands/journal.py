"""The outbox's fast path: one append-only file per running plugin.

Writing a result to the outbox must cost next to nothing, because it happens
between the command's exit and the publish. Creating a file costs about
50 µs on ext4 (an inode, a directory entry, a rename for atomicity); one
``write(2)`` to a file that is already open costs about 1 µs. So each
:class:`~collectd_monitor.commands.outbox.Outbox` keeps its own results in a
journal: one JSON line per result (``{"name", "topic", "payload"}``), one line
per acknowledgement (``{"done": name}``), and the file is cut back to nothing
whenever no result is waiting, which on a healthy link is after every result.

The journal is as crash-safe as a file per entry: a line is in the page cache
once ``write`` returns, so a crash of collectd (SIGKILL included) loses
nothing; :meth:`Journal.sync` (on the flusher's thread) makes it survive a
power loss too. A journal holds an exclusive ``flock`` for as long as its
plugin runs; :func:`take_over` turns the journals nobody holds any more (their
collectd died or stopped with results waiting) into ordinary entry files,
which the next run publishes. A line cut by a power loss is moved to
``quarantine/`` with the other unusable entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from collectd_monitor.fsutil import atomic_write, sync_directory

log = logging.getLogger(__name__)

PREFIX = "journal-"
SUFFIX = ".jsonl"
MAX_BYTES = 1 << 20
"""A journal that grows past this while results wait is rewritten with only those."""

Record = tuple[str, bytes]
"""A waiting publish: (topic, payload)."""

Sync = Callable[[int], None]


def _line(name: str, topic: str, payload: bytes) -> bytes:
    body = {"name": name, "topic": topic, "payload": payload.decode("utf-8", "replace")}
    return json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n"


def _done(name: str) -> bytes:
    return json.dumps({"done": name}).encode("utf-8") + b"\n"


class Journal:
    """This process's journal in ``directory``: appends, acknowledgements, syncs.

    Not thread-safe by itself: the outbox calls it under its lock, except
    :meth:`sync` (the flusher's thread), which borrows a copy of the descriptor.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.live: dict[str, Record] = {}
        """The results written here and not yet acknowledged, by entry name."""
        self._dirty = False
        self._size = 0
        self._live_bytes = 0
        """The size the waiting results' lines take: what a rewrite would keep."""
        self._lengths: dict[str, int] = {}
        self._fd_lock = threading.Lock()
        """Held to swap the descriptor (a rewrite) and to borrow it (a sync)."""
        self.path, self._fd = self._create()

    def _create(self) -> tuple[Path, int]:
        path = self.directory / f"{PREFIX}{os.getpid()}-{time.time_ns()}{SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        sync_directory(self.directory)  # the journal's name survives a power loss
        return path, fd

    def append(self, name: str, topic: str, payload: bytes) -> None:
        """Keep a result (page cache); OSError when the disk refuses it."""
        line = _line(name, topic, payload)
        if self._size > MAX_BYTES and self._size > 2 * self._live_bytes:
            self._rotate()  # mostly acknowledgements and their results by now
        self._write(line)
        self.live[name] = (topic, payload)
        self._lengths[name] = len(line)
        self._live_bytes += len(line)

    def settle(self, name: str) -> bool:
        """Forget ``name`` (acknowledged or moved aside); False if it is not here."""
        if self.live.pop(name, None) is None:
            return False
        self._live_bytes -= self._lengths.pop(name, 0)
        try:
            if self.live:
                self._write(_done(name))
            else:  # nothing waits: start over (the common case on a healthy link)
                os.ftruncate(self._fd, 0)
                self._size = self._live_bytes = 0
        except OSError as exc:  # published again after a restart: senders de-duplicate
            log.warning("cannot note the delivery of %s in %s: %s", name, self.path, exc)
        return True

    def _write(self, line: bytes) -> None:
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view) :]
        self._size += len(line)
        self._dirty = True

    def _rotate(self) -> None:
        """Carry the waiting results over to a new journal, then drop the old one."""
        old_path, old_fd = self.path, self._fd
        path, fd = self._create()
        with self._fd_lock:
            self.path, self._fd = path, fd
        self._size = 0
        for name, (topic, payload) in self.live.items():
            self._write(_line(name, topic, payload))
        os.fdatasync(self._fd)
        os.unlink(old_path)
        with self._fd_lock:
            os.close(old_fd)

    def sync(self, sync: Sync = os.fdatasync) -> None:
        """Make what was appended survive a power loss, unless nothing there waits."""
        if not self._dirty or not self.live:
            return
        self._dirty = False
        with self._fd_lock:  # a copy: a rewrite may close the journal's own meanwhile
            fd = os.dup(self._fd)
        try:
            sync(fd)
        except OSError as exc:
            self._dirty = True  # the next persist tries again
            log.warning(
                "cannot sync %s: %s; its results survive a crash, not a power loss", self.path, exc
            )
        finally:
            os.close(fd)

    def close(self) -> None:
        """Remove the journal when nothing waits; else sync it and leave it for the next run."""
        if self.live:
            with contextlib.suppress(OSError):
                os.fdatasync(self._fd)
        else:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)


def read_journal(path: Path) -> tuple[dict[str, Record], list[str]]:
    """The results a journal still holds, and its unusable lines (cut or garbled)."""
    live: dict[str, Record] = {}
    bad: list[str] = []
    text = path.read_bytes().decode("utf-8", "replace")
    for line in text.split("\n"):
        if not line:
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            bad.append(line)
            continue
        if isinstance(record, dict) and isinstance(record.get("done"), str):
            live.pop(record["done"], None)
            continue
        name = record.get("name") if isinstance(record, dict) else None
        topic = record.get("topic") if isinstance(record, dict) else None
        payload = record.get("payload") if isinstance(record, dict) else None
        if (
            isinstance(name, str)
            and name.endswith(".json")
            and "/" not in name
            and name[:1].isdigit()
            and isinstance(topic, str)
            and topic
            and isinstance(payload, str)
        ):
            live[name] = (topic, payload.encode("utf-8", "backslashreplace"))
        else:
            bad.append(line)
    return live, bad


def journals(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{PREFIX}*{SUFFIX}"))


def take_over(directory: Path, quarantine: Path, entry_body: Callable[[str, bytes], bytes]) -> int:
    """Turn every journal in ``directory`` that no running plugin holds into entry files.

    Returns how many results it handed over. Unusable lines go to
    ``quarantine`` (one file per journal). Safe against another process doing
    the same at once (the ``flock``) and against a crash half-way (entry files
    are written under their own names, the journal is removed last).
    """
    handed = 0
    for path in journals(directory):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its plugin runs: it publishes these itself
            live, bad = read_journal(path)
            for name, (topic, payload) in live.items():
                atomic_write(directory / name, entry_body(topic, payload), mode=0o600)
            if bad:
                quarantine.mkdir(mode=0o700, exist_ok=True)
                kept = quarantine / f"{path.stem}.unusable"
                atomic_write(kept, "\n".join(bad) + "\n", mode=0o600)
                log.warning("%d unusable line(s) of %s moved to %s", len(bad), path, kept)
            path.unlink()
            handed += len(live)
        except OSError as exc:
            log.warning("cannot take over the outbox journal %s: %s", path, exc)
        finally:
            os.close(fd)
    return handed


def peek(directory: Path) -> list[Record]:
    """Every result waiting in the journals of ``directory``, held or not (read only)."""
    waiting: list[Record] = []
    for path in journals(directory):
        with contextlib.suppress(OSError):
            waiting.extend(read_journal(path)[0].values())
    return waiting
