"""Results that must not be lost: kept on disk until the broker has them.

Every result is written to the outbox directory (one file each, mode 0600,
written atomically) *before* it is published, and removed only once the
broker acknowledged it (PUBACK / PUBCOMP). Results still there when the link
comes back, or when collectd starts again, are published again. A sender may
therefore see a result twice after a fault; senders de-duplicate by task_id.
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

from collectd_monitor.fsutil import UnsafePath, atomic_write, private_directory

log = logging.getLogger(__name__)


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

    def put(self, topic: str, payload: bytes) -> Entry:
        with self._lock:
            self._counter += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}.json"
        entry = Entry(name, topic, payload)
        if self.directory is not None:
            body = json.dumps({"topic": topic, "payload": payload.decode("utf-8", "replace")})
            try:
                atomic_write(self.directory / name, body, mode=0o600, durable=True)
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
        """Every entry not yet acknowledged, oldest first."""
        with self._lock:
            entries = dict(self._memory)
        if self.directory is not None:
            for path in sorted(self.directory.glob("[0-9]*.json")):
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                    entries[path.name] = Entry(path.name, data["topic"], data["payload"].encode())
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.warning("dropping unreadable outbox file %s: %s", path, exc)
                    path.unlink(missing_ok=True)
        yield from (entries[name] for name in sorted(entries))

    def __len__(self) -> int:
        return sum(1 for _ in self.pending())
