"""Is the collectd just started fit to keep? A new pid, alive, its plugin connected.

:class:`HealthCheck` holds the waiting logic of the transaction: the new pid
appearing (0x2009 when none does), the daemon still alive after
``SettleTime``, and, when the config loads our remote plugin, that plugin
connected to the broker within ``ConnectTimeout``. A daemon that exits
because someone stopped it cleanly (an admin's ``systemctl stop``, a SIGTERM)
is :class:`StoppedOutside`, not :class:`Unhealthy`: the admin's stop wins.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from collectd_monitor.replacer.manager import ServiceManager
from collectd_monitor.replacer.paths import ReplacerPaths
from collectd_monitor.replacer.report import read_plugin_status

POLL = 0.05


@dataclass(frozen=True)
class Clock:
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], float] = time.time


def tcp_probe(address: str, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (``[v6]:port``)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class Unhealthy(Exception):
    """The restarted collectd is not fit to keep; the message says why."""

    def __init__(self, message: str, *, no_pid: bool = False) -> None:
        super().__init__(message)
        self.no_pid = no_pid


class StoppedOutside(Unhealthy):
    """collectd exited cleanly while being checked: someone stopped it on purpose."""


class HealthCheck:
    def __init__(
        self,
        paths: ReplacerPaths,
        manager: ServiceManager,
        clock: Clock,
        alive: Callable[[int], bool],
        probe: Callable[[str], bool],
    ) -> None:
        self.paths = paths
        self.manager = manager
        self.clock = clock
        self.alive = alive
        self.probe = probe
        self.timing = paths.timing

    def exited(self, pid: int, started: float) -> Unhealthy:
        """The verdict on a daemon found dead: stopped from outside, or failed."""
        after = self.clock.monotonic() - started
        if self.manager.stopped_from_outside(pid):
            return StoppedOutside(
                f"collectd (pid {pid}) was stopped from outside {after:.1f} s after it started"
            )
        return Unhealthy(f"collectd (pid {pid}) exited {after:.1f} s after it started")

    def wait_new_pid(self, old_pid: int | None) -> int:
        deadline = self.clock.monotonic() + self.timing.start
        while True:
            pid = self.manager.pid()
            if pid is not None and pid != old_pid:
                if self.alive(pid):
                    return pid
                if self.manager.stopped_from_outside(pid):
                    raise StoppedOutside(f"collectd (pid {pid}) was stopped from outside at once")
                raise Unhealthy(f"collectd (pid {pid}) exited right after it started")
            if self.clock.monotonic() >= deadline:
                raise Unhealthy(f"no new collectd pid within {self.timing.start:g} s", no_pid=True)
            self.clock.sleep(POLL)

    def check(self, pid: int, loads_remote: bool, expected_broker: str | None) -> str:
        """Alive after the settle time and, with our plugin loaded, connected. Returns a note."""
        started = self.clock.monotonic()
        wait_plugin = max(self.timing.connect, self.timing.settle)
        while True:
            if not self.alive(pid):
                raise self.exited(pid, started)
            elapsed = self.clock.monotonic() - started
            status = read_plugin_status(self.paths.plugin_status) if loads_remote else None
            ours = status is not None and status.pid == pid
            connected = not loads_remote or (
                ours and status is not None and status.state == "connected"
            )
            if elapsed >= self.timing.settle and connected:
                return ""
            if loads_remote and elapsed >= wait_plugin:
                break
            self.clock.sleep(POLL)
        if status is None or not ours:
            raise Unhealthy(
                f"the remote plugin did not start in the new collectd within {wait_plugin:g} s"
            )
        error = f" ({status.error})" if status.error else ""
        if self.probe(status.broker):
            raise Unhealthy(
                f"the remote plugin did not connect to the broker {status.broker}, "
                f"which is up{error}"
            )
        if expected_broker is not None and status.broker != expected_broker:
            raise Unhealthy(
                f"the new config points the remote plugin at {status.broker}, "
                f"which is unreachable{error}"
            )
        return (
            f"; the broker {status.broker} is unreachable, so the plugin's connection "
            "could not be checked; this result is published once it is back"
        )
