"""Files the helper and the plugins exchange: the outcome report and the plugin status.

The helper cannot publish its outcome itself: it runs while collectd (and the
MQTT session) is down. It writes the result to the report file instead (mode
0600, temp file + rename, so a reader never sees half of it); the remote
plugin of whichever collectd runs afterwards publishes it once it is
connected and only then removes it.

The remote plugin writes its *status* (pid, started/connected, broker, last
error) beside the report when it starts and each time it connects: that is how
the helper learns that the restarted daemon's plugin reached the broker.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import Result
from collectd_monitor.fsutil import atomic_write


def write_report(path: Path, result: Result) -> None:
    atomic_write(path, result.encode(), mode=0o600)


@dataclass(frozen=True)
class PendingReport:
    result: Result
    inode: int
    """Identifies this very file: remove it only if it was not replaced meanwhile."""


def read_report(path: Path) -> PendingReport | None:
    """The report waiting at ``path``, or ``None``; a corrupt one becomes a 0x2008 result."""
    try:
        with open(path, "rb") as handle:
            inode = os.fstat(handle.fileno()).st_ino
            raw = handle.read()
    except FileNotFoundError:
        return None
    try:
        result = Result.decode(raw)
    except (ValueError, TypeError):
        result = Result(
            task_id=0,
            code=ResultCode.REPLACE_RECOVERY_FAILED,
            message=f"unreadable replacement report {path}",
        )
    return PendingReport(result, inode)


def remove_report(path: Path, report: PendingReport) -> bool:
    """Remove the report just published, unless a newer one took its place."""
    try:
        if os.stat(path).st_ino != report.inode:
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class PluginStatus:
    pid: int
    state: str
    """``started`` (config loaded, trying to connect) or ``connected``."""
    broker: str = ""
    error: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()


def write_plugin_status(path: Path, status: PluginStatus) -> None:
    atomic_write(path, status.to_json(), mode=0o644)


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
