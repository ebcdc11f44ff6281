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
    (0x2005) -> swap in the new one atomically (0x2006) -> start -> health
    (:mod:`~collectd_monitor.replacer.health`) -> on any failure put the old
    config back and restart (0x2007 recovered, 0x2008 not). Under collectdmon
    the swap comes first and collectdmon restarts collectd in place.

``watch`` (in the helper, after success was reported)
    a death of the new daemon within ``WatchTime`` rolls back (a second 0x2007).

``recover`` (in the guardian, when the helper died midway)
    from the last step the helper journaled, bring the host back to a running
    collectd: on the old config if nothing was swapped or the new one was not
    yet confirmed; clean up ``CONFIG.new``.

A clean stop from outside (an admin's SIGTERM, ``systemctl stop``) wins: the
helper never restarts a collectd someone stopped on purpose (0x2010).

Every effect (service manager, process runner, clock, liveness, broker probe,
journal) is a constructor parameter, so the step logic is unit-tested without
collectd. The phases are here; the steps they are built of (stop and wait,
start and wait, put the old config back) are the base class's,
:class:`~collectd_monitor.replacer.steps.Steps`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import Result
from collectd_monitor.fsutil import atomic_write
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.health import Clock, StoppedOutside, Unhealthy, tcp_probe
from collectd_monitor.replacer.lock import ReplaceLock
from collectd_monitor.replacer.paths import check_paths, check_single_daemon
from collectd_monitor.replacer.static import static_check
from collectd_monitor.replacer.steps import Steps
from collectd_monitor.replacer.validate import collectd_check

log = logging.getLogger("collectd_monitor.replacer")

__all__ = ["Clock", "Prepared", "Transaction", "Unhealthy", "tcp_probe"]

UNSWAPPED = ("begin", "stopping", "stopped")
"""Steps after which the live config is certainly still the old one."""


@dataclass
class Prepared:
    """A validated new config waiting beside the live one, and the lock that guards it."""

    task_id: int
    loads_remote: bool
    lock: ReplaceLock = field(repr=False)


class Transaction(Steps):
    """prepare, apply, rollback, watch, recover: the phases, built of :class:`Steps`."""

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
                self.discard_new()
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
        self,
        task_id: int,
        *,
        loads_remote: bool,
        expected_broker: str | None = None,
        was_running: bool = False,
    ) -> Result:
        """Run the restart half; never raises, always returns the outcome to report.

        ``was_running``: collectd ran when the config was validated; if it is gone
        now, someone stopped it meanwhile and nothing is started.
        """
        try:
            return self._apply(task_id, loads_remote, expected_broker, was_running)
        except ReplaceFailed as exc:
            self.discard_new()
            return Result(task_id, exc.code, exc.message)

    def _apply(
        self, task_id: int, loads_remote: bool, expected_broker: str | None, was_running: bool
    ) -> Result:
        if not self.paths.new.is_file():
            raise ReplaceFailed(
                ResultCode.REPLACE_PATH_NOT_FOUND, f"the validated config {self.paths.new} is gone"
            )
        old_pid = self.live_pid()
        if old_pid is None and was_running:
            raise ReplaceFailed(
                ResultCode.REPLACE_STOPPED_OUTSIDE,
                "collectd was stopped from outside before the helper stopped it; the admin's "
                "stop wins: the new config was not applied and collectd stays stopped",
            )
        if old_pid is not None and not self.manager.in_place:
            log.info("task %s: stopping collectd (pid %d)", task_id, old_pid)
            self.journal("stopping", {"pid": old_pid})
            try:
                self._stop(old_pid)
            except ReplaceFailed as exc:
                raise ReplaceFailed(exc.code, exc.message + self._ensure_running()[1]) from None
            self.journal("stopped", {})
        self.journal("swapping", {})
        self._swap()
        self.journal("swapped", {})
        log.info("task %s: config swapped (backup in %s); restarting", task_id, self.paths.backup)
        try:
            pid = self._start(old_pid)
            self.journal("started", {"pid": pid})
            note = self.health.check(pid, loads_remote, expected_broker)
        except StoppedOutside as why:
            return self._keep_stopped(task_id, why)
        except Unhealthy as why:
            log.warning("task %s: the new config failed: %s; rolling back", task_id, why)
            return self.rollback(
                task_id, f"the new config failed after the restart: {why}", no_pid=why.no_pid
            )
        log.info("task %s: collectd runs with the new config (pid %d)", task_id, pid)
        self.new_pid = pid
        return Result(
            task_id,
            ResultCode.SUCCESS,
            f"collectd restarted with the new config (pid {pid}, was {old_pid})" + note,
        )

    def _swap(self) -> None:
        try:
            original_mode = self.paths.config.stat().st_mode & 0o7777
            atomic_write(self.paths.backup, self.paths.config.read_bytes(), mode=original_mode)
        except OSError as exc:
            raise ReplaceFailed(
                ResultCode.REPLACE_BACKUP_FAILED,
                f"cannot back up {self.paths.config} to {self.paths.backup}: "
                f"{exc.strerror or exc}" + self._ensure_running()[1],
            ) from None
        try:
            os.replace(self.paths.new, self.paths.config)
        except OSError as exc:
            raise ReplaceFailed(
                ResultCode.REPLACE_SWAP_FAILED,
                f"cannot move {self.paths.new} to {self.paths.config}: {exc.strerror or exc}"
                + self._ensure_running()[1],
            ) from None

    # ------------------------------------------------------------------ after the restart

    def _keep_stopped(self, task_id: int, why: Unhealthy) -> Result:
        log.warning("task %s: %s; the admin's stop wins", task_id, why)
        try:
            self._restore_old()
        except OSError as exc:
            return Result(
                task_id,
                ResultCode.REPLACE_STOPPED_OUTSIDE,
                f"{why}; the admin's stop wins: collectd stays stopped, on the new config "
                f"(restoring the old one failed: {exc.strerror or exc})",
            )
        return Result(
            task_id,
            ResultCode.REPLACE_STOPPED_OUTSIDE,
            f"{why} while the new config was being checked; the admin's stop wins: collectd "
            f"stays stopped, the old config is back in place (the new one is kept in "
            f"{self.paths.rejected})",
        )

    def rollback(self, task_id: int, failed: str, *, no_pid: bool = False) -> Result:
        """Put the old config back and start it (0x2007), or say why not (0x2008/0x2009)."""
        self.journal("rolling-back", {})
        if not self.manager.in_place:
            pid = self.live_pid()
            if pid is not None:
                try:
                    self._stop(pid)
                except ReplaceFailed:
                    self.manager.kill(pid)
                    self._wait_gone(pid)
        try:
            self._restore_old()
        except OSError as exc:
            return Result(
                task_id,
                ResultCode.REPLACE_RECOVERY_FAILED,
                f"{failed}; cannot restore the old config from {self.paths.backup}: "
                f"{exc.strerror or exc}; collectd is NOT running",
            )
        log.info("task %s: old config restored; starting collectd", task_id)
        try:
            pid = self._start(None)
            self.health.check(pid, False, None)
        except StoppedOutside as why:
            return Result(
                task_id,
                ResultCode.REPLACE_STOPPED_OUTSIDE,
                f"{failed}; the old config is back in place, but {why}: it stays stopped",
            )
        except Unhealthy as again:
            code = (
                ResultCode.REPLACE_NO_NEW_PID
                if no_pid and again.no_pid
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

    def watch(self, task_id: int, pid: int, until: float) -> Result | None:
        """Watch the new daemon until ``until`` (monotonic); roll back if it dies meanwhile.

        Returns the second result of a late death, or ``None`` when the daemon
        lived through the window or was stopped from outside (the admin's stop wins).
        """
        started = self.clock.monotonic()
        while self.clock.monotonic() < until:
            if not self.alive(pid):
                verdict = self.health.exited(pid, started)
                if isinstance(verdict, StoppedOutside):
                    log.info("task %s: %s during the watch; not restarted", task_id, verdict)
                    return None
                log.warning("task %s: late death of collectd (pid %d); rolling back", task_id, pid)
                return self.rollback(
                    task_id,
                    f"late death: collectd (pid {pid}) with the new config died after the "
                    f"replacement was reported successful (within WatchTime "
                    f"{self.timing.watch:g} s)",
                )
            self.clock.sleep(min(0.2, max(until - self.clock.monotonic(), 0.0)))
        log.info("task %s: collectd (pid %d) lived through the watch", task_id, pid)
        return None

    # ------------------------------------------------------------------ the guardian's side

    def recover(self, task_id: int, died: str, state: Mapping[str, Any]) -> Result | None:
        """Bring collectd back after the helper died at the step ``state`` records."""
        step = str(state.get("step", "begin"))
        if step == "finished":
            return None
        if step == "reported":
            return self.watch(task_id, int(state["pid"]), float(state["until"]))
        swapped = step not in UNSWAPPED and not (step == "swapping" and self.paths.new.is_file())
        if swapped:
            return self.rollback(task_id, f"{died} after the config was swapped")
        self.discard_new()
        if step == "stopping":
            pid = int(state["pid"])
            if self.alive(pid):
                try:
                    self._stop(pid)
                except ReplaceFailed:
                    self.manager.kill(pid)
                    self._wait_gone(pid)
        running, note = self._ensure_running()
        if not running:
            code = ResultCode.REPLACE_RECOVERY_FAILED
        elif step == "begin":
            code = ResultCode.REPLACE_STOP_FAILED
        else:
            code = ResultCode.REPLACE_RECOVERED
        return Result(task_id, code, f"{died} before the config was swapped{note}")
