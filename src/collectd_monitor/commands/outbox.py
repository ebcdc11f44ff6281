"""Results that must not be lost: kept on disk until the broker has them.

Every result is written to the outbox *before* it is published, and dropped
only once the broker acknowledged it (PUBACK / PUBCOMP). Results still there
when the link comes back, or when collectd starts again, are published again.
A sender may therefore see a result twice after a fault; senders de-duplicate
by task_id.

A running plugin keeps its own results in a journal (:mod:`.journal`): one
``write`` per result, to the page cache, which survives a crash of collectd.
:meth:`Outbox.persist` has it fsync'd after the publish by a
:class:`~collectd_monitor.commands.flusher.Flusher` (it then survives a power
loss too), unless the broker acknowledged it first. When a plugin starts, the
journals of earlier runs become entry files: one file per result (mode 0600,
written atomically), published by this run.

Other processes drop entry files too (:func:`write_entry`): the config
replacement helper leaves its outcome in the outbox of the plugin that runs
after the restart, which publishes it (:meth:`RemoteAgent.deliver_foreign`).
An entry's name carries the pid of its writer.

Refusals are never fsync'd: they are cheap to lose and a flood of them must
not cost a disk flush each. An entry that cannot be read back, or that the
broker will not take (see the agent), is moved to ``quarantine/`` beside the
entries, never published again, and kept for a look.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from collectd_monitor.commands.flusher import Flusher
from collectd_monitor.commands.journal import Journal, peek, take_over
from collectd_monitor.config import MonitorConfig
from collectd_monitor.fsutil import UnsafePath, atomic_write, private_directory

log = logging.getLogger(__name__)


_names = itertools.count(1)

QUARANTINE = "quarantine"
"""The outbox's subdirectory for entries never to be published again."""


@dataclass(frozen=True)
class Entry:
    name: str
    topic: str
    payload: bytes

    @property
    def writer(self) -> int | None:
        """The pid of the process that wrote the entry (from its name)."""
        try:
            return int(self.name.split("-")[1])
        except (IndexError, ValueError):
            return None


def entry_name() -> str:
    """A name that sorts by time and is unique across processes: ``TIME-PID-COUNTER.json``."""
    return f"{time.time_ns():020d}-{os.getpid()}-{next(_names):06d}.json"


def _entry_body(topic: str, payload: bytes) -> bytes:
    body = {"topic": topic, "payload": payload.decode("utf-8", "replace")}
    return json.dumps(body).encode("utf-8")


def write_entry(directory: Path, topic: str, payload: bytes) -> Entry:
    """Drop an entry into the outbox ``directory`` from another process (atomically,
    mode 0600, fsync'd); OSError on failure."""
    entry = Entry(entry_name(), topic, payload)
    atomic_write(directory / entry.name, _entry_body(topic, payload), mode=0o600)
    return entry


class Outbox:
    """Pending publishes: this run's in its journal, others' as files; ``directory=None``
    keeps nothing on disk."""

    def __init__(self, directory: Path | None, *, flusher: Flusher | None = None) -> None:
        self.directory = directory
        self.flusher = flusher or Flusher()
        self._lock = threading.Lock()
        self._memory: dict[str, Entry] = {}
        self._journal: Journal | None = None
        if directory is not None:
            try:  # a directory another user can change could redirect our writes
                private_directory(directory)
            except UnsafePath as exc:
                log.error("unsafe outbox directory: %s; results kept in memory only", exc)
                self.directory = None
            except OSError as exc:
                log.warning(
                    "cannot create outbox %s: %s; results kept in memory only", directory, exc
                )
                self.directory = None
        if self.directory is not None:
            try:
                self._journal = Journal(self.directory)
            except OSError as exc:  # e.g. a file system without flock: a file per result
                log.warning("cannot keep an outbox journal in %s: %s", self.directory, exc)
        self._take_over()

    def put(self, topic: str, payload: bytes) -> Entry:
        """Keep a publish: in the journal (page cache, not yet fsync'd: see :meth:`persist`).

        After :meth:`close` (a command that ends while collectd stops) it is
        written as an entry file and synced at once, for the next run.
        """
        entry = Entry(entry_name(), topic, payload)
        try:
            with self._lock:
                if self._journal is not None:
                    self._journal.append(entry.name, topic, payload)
                    return entry
            if self.directory is not None:  # closed (collectd stops), or no journal: a file
                atomic_write(self.directory / entry.name, _entry_body(topic, payload))
                return entry
        except OSError as exc:
            log.warning("cannot write %s to the outbox: %s; kept in memory only", entry.name, exc)
        with self._lock:
            self._memory[entry.name] = entry
        return entry

    def persist(self, entry: Entry) -> None:
        """Have ``entry`` fsync'd soon, on the flusher's thread (results, not refusals).

        The flusher waits a moment first: an entry the broker has acknowledged
        by then needs no sync at all.
        """
        journal = self._journal
        if journal is not None and entry.name in journal.live:
            self.flusher.submit(journal)

    def close(self) -> None:
        """Sync what still waits for it (collectd stops): returns when it is done."""
        self.flusher.close()
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None

    def remove(self, entry: Entry) -> None:
        with self._lock:
            self._memory.pop(entry.name, None)
            if self._journal is not None and self._journal.settle(entry.name):
                return
        if self.directory is not None:
            try:
                (self.directory / entry.name).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove %s from the outbox: %s", entry.name, exc)

    def pending(self) -> Iterator[Entry]:
        """Every entry not yet acknowledged, oldest first; unreadable files are quarantined."""
        self._take_over()
        with self._lock:
            entries = dict(self._memory)
            if self._journal is not None:
                for name, (topic, payload) in self._journal.live.items():
                    entries[name] = Entry(name, topic, payload)
        if self.directory is not None:
            for path in sorted(self.directory.glob("[0-9]*.json")):
                entry = _read_entry(path)
                if isinstance(entry, Entry):
                    entries[path.name] = entry
                else:
                    log.warning("outbox file %s is unusable (%s); moved aside", path, entry)
                    self._move_aside(path.name)
        yield from (entries[name] for name in sorted(entries))

    def _take_over(self) -> None:
        """Journals of runs that ended with results waiting become entry files."""
        if self.directory is not None:
            handed = take_over(self.directory, self.directory / QUARANTINE, _entry_body)
            if handed:
                log.info("%d result(s) left by an earlier run taken into the outbox", handed)

    def quarantine(self, entry: Entry) -> Path | None:
        """Take ``entry`` out of the outbox for good; where it was kept, if on disk."""
        with self._lock:
            self._memory.pop(entry.name, None)
            journal = self._journal
            if journal is None or entry.name not in journal.live:
                journal = None
        if journal is not None and self.directory is not None:
            kept = self._keep_aside(entry)
            with self._lock:
                journal.settle(entry.name)
            return kept
        return self._move_aside(entry.name)

    def _keep_aside(self, entry: Entry) -> Path | None:
        """Write a journal's entry to ``quarantine/``; None if it cannot be kept."""
        assert self.directory is not None
        target = self.directory / QUARANTINE / entry.name
        try:
            target.parent.mkdir(mode=0o700, exist_ok=True)
            atomic_write(target, _entry_body(entry.topic, entry.payload), mode=0o600)
        except OSError as exc:
            log.warning("cannot keep %s in %s: %s; dropped", entry.name, target.parent, exc)
            return None
        return target

    def _move_aside(self, name: str) -> Path | None:
        if self.directory is None:
            return None
        source = self.directory / name
        target = self.directory / QUARANTINE / name
        try:
            target.parent.mkdir(mode=0o700, exist_ok=True)
            source.replace(target)
            return target
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot move %s to %s: %s; removing it", source, target.parent, exc)
            source.unlink(missing_ok=True)
            return None

    def __len__(self) -> int:
        return sum(1 for _ in self.pending())


def waiting(directory: Path) -> list[tuple[str, bytes]]:
    """(topic, payload) of every result waiting in ``directory``, without touching it:
    entry files and every journal, held by a running plugin or not."""
    found = [
        (e.topic, e.payload)
        for e in map(_read_entry, sorted(directory.glob("[0-9]*.json")))
        if isinstance(e, Entry)
    ]
    return found + peek(directory)


def state_directory(config: MonitorConfig) -> Path | None:
    """Where this client keeps its seen task ids and its outbox (``StateDir/<ClientId>``)."""
    if not config.state_dir:
        return None
    return Path(config.state_dir) / _safe_name(config.broker.client_id)


def outbox_directory(config: MonitorConfig) -> Path | None:
    state = state_directory(config)
    return state / "outbox" if state else None


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "default"


def _read_entry(path: Path) -> Entry | str:
    """The entry stored in ``path``, or why it cannot be one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        return f"unreadable: {exc}"
    if not isinstance(data, dict):
        return "not a JSON object"
    topic, payload = data.get("topic"), data.get("payload")
    if not isinstance(topic, str) or not topic:
        return "topic is not a string"
    if not isinstance(payload, str):
        return "payload is not a string"
    return Entry(path.name, topic, payload.encode("utf-8", "backslashreplace"))
