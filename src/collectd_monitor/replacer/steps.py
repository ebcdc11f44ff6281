"""The steps a config replacement is made of (the base of ``Transaction``).

What :class:`~collectd_monitor.replacer.transaction.Transaction`'s phases are
built from: which collectd is live, stop it and wait until it is really gone
(process and pid file), start it and wait for a new pid, make sure the old
collectd runs after an early failure, put the backed-up config back, drop
``CONFIG.new``. Every effect (service manager, process runner, clock,
liveness, broker probe, journal) is a constructor parameter here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.fsutil import atomic_write
from collectd_monitor.plugin_support import process_alive
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.health import POLL, Clock, HealthCheck, Unhealthy, tcp_probe
from collectd_monitor.replacer.manager import ManagerError, ServiceManager, manager_for
from collectd_monitor.replacer.paths import ReplacerPaths
from collectd_monitor.replacer.validate import Runner, run_process

log = logging.getLogger("collectd_monitor.replacer")

Journal = Callable[[str, Mapping[str, Any]], None]
"""Told each step as it is reached (the guardian recovers from the last one)."""


def _no_journal(_step: str, _data: Mapping[str, Any]) -> None:
    pass


class Steps:
    """collectd's process and config files as a replacement handles them."""

    def __init__(
        self,
        paths: ReplacerPaths,
        *,
        manager: ServiceManager | None = None,
        runner: Runner = run_process,
        clock: Clock | None = None,
        alive: Callable[[int], bool] = process_alive,
        probe: Callable[[str], bool] = tcp_probe,
        proc: str = "/proc",
        journal: Journal = _no_journal,
    ) -> None:
        self.paths = paths
        self.proc = proc
        self.runner = runner
        self.manager = manager or manager_for(paths, runner)
        self.clock = clock or Clock()
        self.alive = alive
        self.journal = journal
        self.timing = paths.timing
        self.health = HealthCheck(
            paths, self.manager, self.clock, lambda pid: self.alive(pid), probe
        )
        self.new_pid: int | None = None
        """The daemon running the new config, after a successful :meth:`apply`."""

    def discard_new(self) -> None:
        with contextlib.suppress(OSError):
            self.paths.new.unlink()

    def live_pid(self) -> int | None:
        pid = self.manager.pid()
        return pid if pid is not None and self.alive(pid) else None

    def _stop(self, pid: int) -> None:
        try:
            self.manager.stop(pid)
        except ManagerError as exc:
            raise ReplaceFailed(
                ResultCode.REPLACE_STOP_FAILED, f"cannot stop collectd: {exc}"
            ) from None
        deadline = self.clock.monotonic() + self.timing.stop
        while self.alive(pid):
            if self.clock.monotonic() >= deadline:
                raise ReplaceFailed(
                    ResultCode.REPLACE_STOP_FAILED,
                    f"collectd (pid {pid}) did not exit within {self.timing.stop:g} s",
                )
            self.clock.sleep(POLL)
        while self.manager.pid_file_names(pid):
            if self.clock.monotonic() >= deadline:
                raise ReplaceFailed(
                    ResultCode.REPLACE_PID_NOT_REMOVED,
                    f"collectd (pid {pid}) exited but its pid file {self.paths.pid} "
                    "was not removed",
                )
            self.clock.sleep(POLL)

    def _ensure_running(self) -> tuple[bool, str]:
        """After an early failure (config untouched): make sure the old collectd runs."""
        pid = self.live_pid()
        if pid is not None:
            return True, f"; collectd (pid {pid}) keeps running with the old config"
        try:
            pid = self._start(None)
        except Unhealthy as exc:
            return False, (
                f"; collectd is NOT running: restarting it with the old config failed: {exc}"
            )
        return True, f"; collectd was restarted with the old config (pid {pid})"

    def _start(self, old_pid: int | None) -> int:
        """(Re)start collectd on the live config; its new pid, or :class:`Unhealthy`."""
        before = self.manager.pid()
        try:
            if self.manager.in_place:
                self.manager.restart(before)
            else:
                self.manager.start()
        except ManagerError as exc:
            raise Unhealthy(str(exc)) from None
        return self.health.wait_new_pid(before if before is not None else old_pid)

    def _restore_old(self) -> None:
        """Put the backup back as the live config; keep the rejected one. ``OSError`` on failure."""
        backup = self.paths.backup.read_bytes()
        with contextlib.suppress(OSError):
            live = self.paths.config.read_bytes()
            if live != backup:
                atomic_write(self.paths.rejected, live, mode=0o600)
        atomic_write(self.paths.config, backup, mode=self.paths.backup.stat().st_mode & 0o7777)

    def _wait_gone(self, pid: int) -> None:
        deadline = self.clock.monotonic() + self.timing.stop
        while self.alive(pid) and self.clock.monotonic() < deadline:
            self.clock.sleep(POLL)
