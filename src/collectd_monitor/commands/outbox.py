"""Results that must not be lost: kept on disk until the broker has them.

Every result is written to the outbox directory (one file each, mode 0600,
written atomically) *before* it is published, and removed only once the
broker acknowledged it (PUBACK / PUBCOMP). Results still there when the link
comes back, or when collectd starts again, are published again. A sender may
therefore see a result twice after a fault; senders de-duplicate by task_id.

Refusals are written without fsync (``durable=False``): they are cheap to lose
and a flood of them must not cost a disk flush each. An entry that cannot be
read back, or that the broker will not take (see the agent), is moved to
``quarantine/`` beside the entries, never published again, and kept for a look.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from collectd_monitor.fsutil import atomic_write

log = logging.getLogger(__name__)


QUARANTINE = "quarantine"
"""The outbox's subdirectory for entries never to be published again."""


@dataclass(frozen=True)
class Entry:
    name: str
    topic: str
    payload: bytes


class Outbox:
    """A directory of pending publishes; ``directory=None`` keeps nothing on disk."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._counter = 0
        self._memory: dict[str, Entry] = {}
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                log.warning(
                    "cannot create outbox %s: %s; results kept in memory only", directory, exc
                )
                self.directory = None

    def put(self, topic: str, payload: bytes, *, durable: bool = True) -> Entry:
        with self._lock:
            self._counter += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}.json"
        entry = Entry(name, topic, payload)
        if self.directory is not None:
            body = json.dumps({"topic": topic, "payload": payload.decode("utf-8", "replace")})
            try:
                atomic_write(self.directory / name, body, mode=0o600, durable=durable)
                return entry
            except OSError as exc:
                log.warning("cannot write %s to the outbox: %s; kept in memory only", name, exc)
        with self._lock:
            self._memory[name] = entry
        return entry

    def remove(self, entry: Entry) -> None:
        with self._lock:
            self._memory.pop(entry.name, None)
        if self.directory is not None:
            try:
                (self.directory / entry.name).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove %s from the outbox: %s", entry.name, exc)

    def pending(self) -> Iterator[Entry]:
        """Every entry not yet acknowledged, oldest first; unreadable files are quarantined."""
        with self._lock:
            entries = dict(self._memory)
        if self.directory is not None:
            for path in sorted(self.directory.glob("[0-9]*.json")):
                entry = _read_entry(path)
                if isinstance(entry, Entry):
                    entries[path.name] = entry
                else:
                    log.warning("outbox file %s is unusable (%s); moved aside", path, entry)
                    self._move_aside(path.name)
        yield from (entries[name] for name in sorted(entries))

    def quarantine(self, entry: Entry) -> Path | None:
        """Take ``entry`` out of the outbox for good; where it was kept, if on disk."""
        with self._lock:
            self._memory.pop(entry.name, None)
        return self._move_aside(entry.name)

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
