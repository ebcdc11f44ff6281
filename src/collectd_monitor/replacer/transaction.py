"""collectd.conf replacement as a transaction with automatic rollback.

Two halves, because collectd's own process cannot restart collectd:

``prepare`` (in the plugin, or the CLI)
    static checks of the text, which run nothing of it (0x2002) -> lock the
    live config (0x2000) -> every collectd running on this config is the one
    the pid file names (0x200b) -> write ``CONFIG.new`` mode 0600 (0x2001) ->
    ``collectd -T`` with our plugins offline (0x2002). ``-T`` runs plugin init
    and a read cycle, so it comes last. Nothing live has been touched yet.

``apply`` (in the detached helper)
    stop collectd (0x2003) and wait until it is really gone: process exited
    (a zombie counts) and pid file removed (0x2004) -> back up the live config
    (0x2005) -> swap in the new one atomically (0x2006) -> start -> health: a
    new pid (0x2009), still alive after the settle time, and, if the config
    loads our remote plugin, that plugin connected to the broker -> on any
    failure put the old config back and restart (0x2007 recovered, 0x2008 not).

Every effect (service manager, process runner, clock, liveness, broker probe)
is a constructor parameter, so the step logic is unit-tested without collectd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import Result
from collectd_monitor.fsutil import atomic_write
from collectd_monitor.plugin_support import process_alive
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.lock import ReplaceLock
from collectd_monitor.replacer.manager import ManagerError, ServiceManager, manager_for
from collectd_monitor.replacer.paths import ReplacerPaths, check_paths, check_single_daemon
from collectd_monitor.replacer.report import read_plugin_status
from collectd_monitor.replacer.static import static_check
from collectd_monitor.replacer.validate import Runner, collectd_check, run_process

log = logging.getLogger("collectd_monitor.replacer")

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


@dataclass
class Prepared:
    """A validated new config waiting beside the live one, and the lock that guards it."""

    task_id: int
    loads_remote: bool
    lock: ReplaceLock = field(repr=False)


class Unhealthy(Exception):
    """The restarted collectd is not fit to keep; the message says why."""

    def __init__(self, message: str, *, no_pid: bool = False) -> None:
        super().__init__(message)
        self.no_pid = no_pid


class Transaction:
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
    ) -> None:
        self.paths = paths
        self.proc = proc
        self.runner = runner
        self.manager = manager or manager_for(paths, runner)
        self.clock = clock or Clock()
        self.alive = alive
        self.probe = probe
        self.timing = paths.timing

    # ------------------------------------------------------------------ prepare

    def prepare(self, task_id: int, text: str, *, require_remote: bool = False) -> Prepared:
        check_paths(self.paths)
        # Nothing of the text runs before these pass (collectd -T would run it).
        checked = static_check(
            text, require_remote=require_remote, max_bytes=self.paths.max_config_bytes
        )
        lock = ReplaceLock(self.paths.lock, now=self.clock.wall)
        lock.acquire(task_id)
        try:
            check_single_daemon(self.paths, self.manager.pid(), self.proc)
            self._write_new(text)
            try:
                collectd_check(
                    self.paths.binary,
                    str(self.paths.new),
                    text,
                    timeout=self.timing.validate,
                    runner=self.runner,
                )
            except ReplaceFailed:
                with contextlib.suppress(OSError):
                    self.paths.new.unlink()
                raise
        except BaseException:
            lock.release()
            raise
        log.info("task %s: new config passed the static checks and collectd -T", task_id)
        return Prepared(task_id, checked.loads_remote, lock)

    def _write_new(self, text: str) -> None:
        try:
            atomic_write(self.paths.new, text.encode("utf-8"), mode=0o600)
        except OSError as exc:
            raise ReplaceFailed(
                ResultCode.REPLACE_WRITE_FAILED,
                f"cannot write the new config to {self.paths.new}: {exc.strerror or exc}",
            ) from None

    # ------------------------------------------------------------------ apply

    def apply(
        self, task_id: int, *, loads_remote: bool, expected_broker: str | None = None
    ) -> Result:
        """Run the restart half; never raises, always returns the outcome to report."""
        try:
            return self._apply(task_id, loads_remote, expected_broker)
        except ReplaceFailed as exc:
            return Result(task_id, exc.code, exc.message)

    def _apply(self, task_id: int, loads_remote: bool, expected_broker: str | None) -> Result:
        if not self.paths.new.is_file():
            raise ReplaceFailed(
                ResultCode.REPLACE_PATH_NOT_FOUND, f"the validated config {self.paths.new} is gone"
            )
        old_pid = self._live_pid()
        if old_pid is not None:
            log.info("task %s: stopping collectd (pid %d)", task_id, old_pid)
            try:
                self._stop(old_pid)
            except ReplaceFailed as exc:
                raise ReplaceFailed(exc.code, exc.message + self._ensure_running()) from None
        try:
            original_mode = self.paths.config.stat().st_mode & 0o7777
            atomic_write(self.paths.backup, self.paths.config.read_bytes(), mode=original_mode)
        except OSError as exc:
            raise ReplaceFailed(
                ResultCode.REPLACE_BACKUP_FAILED,
                f"cannot back up {self.paths.config} to {self.paths.backup}: "
                f"{exc.strerror or exc}" + self._ensure_running(),
            ) from None
        try:
            os.replace(self.paths.new, self.paths.config)
        except OSError as exc:
            raise ReplaceFailed(
                ResultCode.REPLACE_SWAP_FAILED,
                f"cannot move {self.paths.new} to {self.paths.config}: {exc.strerror or exc}"
                + self._ensure_running(),
            ) from None
        log.info(
            "task %s: config swapped (backup in %s); starting collectd", task_id, self.paths.backup
        )
        try:
            pid, note = self._start_and_check(loads_remote, expected_broker)
        except Unhealthy as why:
            log.warning("task %s: the new config failed: %s; rolling back", task_id, why)
            return self._rollback(task_id, why)
        log.info("task %s: collectd runs with the new config (pid %d)", task_id, pid)
        return Result(
            task_id,
            ResultCode.SUCCESS,
            f"collectd restarted with the new config (pid {pid}, was {old_pid})" + note,
        )

    def _live_pid(self) -> int | None:
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

    def _ensure_running(self) -> str:
        """After an early failure (config untouched): make sure the old collectd runs."""
        pid = self._live_pid()
        if pid is not None:
            return f"; collectd (pid {pid}) keeps running with the old config"
        try:
            pid = self._start()
        except (ManagerError, Unhealthy) as exc:
            return f"; collectd is NOT running: restarting it with the old config failed: {exc}"
        return f"; collectd was restarted with the old config (pid {pid})"

    def _start(self) -> int:
        """Start collectd and return its new pid (one the pid file did not name before)."""
        before = self.manager.pid()
        self.manager.start()
        return self._wait_new_pid(before)

    def _wait_new_pid(self, old_pid: int | None) -> int:
        deadline = self.clock.monotonic() + self.timing.start
        while True:
            pid = self.manager.pid()
            if pid is not None and pid != old_pid:
                if self.alive(pid):
                    return pid
                raise Unhealthy(f"collectd (pid {pid}) exited right after it started")
            if self.clock.monotonic() >= deadline:
                raise Unhealthy(f"no new collectd pid within {self.timing.start:g} s", no_pid=True)
            self.clock.sleep(POLL)

    def _start_and_check(self, loads_remote: bool, expected_broker: str | None) -> tuple[int, str]:
        try:
            pid = self._start()
        except ManagerError as exc:
            raise Unhealthy(str(exc)) from None
        return pid, self._check_health(pid, loads_remote, expected_broker)

    def _check_health(self, pid: int, loads_remote: bool, expected_broker: str | None) -> str:
        """Alive after the settle time and, with our plugin loaded, connected. Returns a note."""
        started = self.clock.monotonic()
        wait_plugin = max(self.timing.connect, self.timing.settle)
        while True:
            if not self.alive(pid):
                raise Unhealthy(
                    f"collectd (pid {pid}) exited {self.clock.monotonic() - started:.1f} s "
                    "after it started"
                )
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

    # ------------------------------------------------------------------ rollback

    def _rollback(self, task_id: int, why: Unhealthy) -> Result:
        failed = f"the new config failed after the restart: {why}"
        pid = self._live_pid()
        if pid is not None:
            try:
                self._stop(pid)
            except ReplaceFailed:
                self.manager.kill(pid)
                self._wait_gone(pid)
        try:
            with contextlib.suppress(OSError):
                atomic_write(self.paths.rejected, self.paths.config.read_bytes(), mode=0o600)
            backup = self.paths.backup
            atomic_write(
                self.paths.config, backup.read_bytes(), mode=backup.stat().st_mode & 0o7777
            )
        except OSError as exc:
            return Result(
                task_id,
                ResultCode.REPLACE_RECOVERY_FAILED,
                f"{failed}; cannot restore the old config from {self.paths.backup}: "
                f"{exc.strerror or exc}; collectd is NOT running",
            )
        log.info("task %s: old config restored; starting collectd", task_id)
        try:
            pid, _ = self._start_and_check(loads_remote=False, expected_broker=None)
        except Unhealthy as again:
            code = (
                ResultCode.REPLACE_NO_NEW_PID
                if why.no_pid and again.no_pid
                else ResultCode.REPLACE_RECOVERY_FAILED
            )
            return Result(
                task_id, code, f"{failed}; recovery with the old config failed too: {again}"
            )
        return Result(
            task_id,
            ResultCode.REPLACE_RECOVERED,
            f"{failed}; recovered: collectd runs with the old config again (pid {pid}); "
            f"the rejected config is kept in {self.paths.rejected}",
        )

    def _wait_gone(self, pid: int) -> None:
        deadline = self.clock.monotonic() + self.timing.stop
        while self.alive(pid) and self.clock.monotonic() < deadline:
            self.clock.sleep(POLL)
