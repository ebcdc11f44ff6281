"""Files the helper and the plugins exchange: the outcome and the plugin status.

The helper cannot publish its outcome itself: it runs while collectd (and the
MQTT session) is down. It drops the result into the **outbox** of the remote
plugin that runs afterwards (``StateDir/<ClientId>/outbox``, the format of
:mod:`collectd_monitor.commands.outbox`): the new config's plugin on success,
the old config's after a rollback. That plugin publishes it once connected and
removes it once the broker acknowledged it, like any of its own results.
``replace-config`` reads its outcome from a file of its own instead.

The remote plugin writes its *status* (pid, started/connected, broker, last
error) beside the report path when it starts and each time it connects: that
is how the helper learns that the restarted daemon's plugin reached the broker.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.outbox import outbox_directory, write_entry
from collectd_monitor.commands.protocol import Result
from collectd_monitor.config import MonitorConfig
from collectd_monitor.fsutil import atomic_write

log = logging.getLogger("collectd_monitor.replacer")


@dataclass(frozen=True)
class OutboxTarget:
    """A remote plugin's outbox and the topic its results go to."""

    directory: Path
    topic: str

    @classmethod
    def of(cls, config: MonitorConfig) -> OutboxTarget | None:
        directory = outbox_directory(config)
        return cls(directory, config.result_topic) if directory is not None else None

    def to_dict(self) -> dict[str, str]:
        return {"directory": str(self.directory), "topic": self.topic}

    @classmethod
    def from_dict(cls, data: Any) -> OutboxTarget | None:
        if not data:
            return None
        return cls(Path(data["directory"]), str(data["topic"]))

    def put(self, result: Result) -> None:
        """Drop ``result`` into the outbox; ``OSError`` if it cannot be written."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_entry(self.directory, self.topic, result.encode())


def write_report(path: Path, result: Result) -> None:
    atomic_write(path, result.encode(), mode=0o600)


def read_report(path: Path) -> Result | None:
    """The outcome waiting at ``path``, or ``None``; a corrupt one becomes a 0x2008 result."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Result.decode(raw)
    except (ValueError, TypeError):
        return Result(
            task_id=0,
            code=ResultCode.REPLACE_RECOVERY_FAILED,
            message=f"unreadable replacement report {path}",
        )


@dataclass(frozen=True)
class PluginStatus:
    pid: int
    state: str
    """``started`` (config loaded, trying to connect), ``connected`` or ``stopped``."""
    broker: str = ""
    error: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()


def write_plugin_status(path: Path, status: PluginStatus) -> None:
    atomic_write(path, status.to_json(), mode=0o644, durable=False)


def read_plugin_status(path: Path) -> PluginStatus | None:
    try:
        data: Any = json.loads(path.read_bytes())
        return PluginStatus(
            pid=int(data["pid"]),
            state=str(data["state"]),
            broker=str(data.get("broker", "")),
            error=data.get("error"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
