"""How collectd is stopped, started and found, for each service manager users have.

* ``pidfile`` (also ``direct``): SIGTERM to the pid in the pid file; start
  ``collectd -C CONFIG -P PIDFILE`` (collectd daemonizes, writes the pid file).
* ``commands``: the ``commands.start`` / ``commands.stop`` lines of
  ``Services.collectd`` run by ``/bin/sh``; the pid comes from the pid file.
* ``init``: Debian's ``/etc/init.d/collectd stop|start``; its pid file names
  collectd, or collectdmon when ``USE_COLLECTDMON=1`` (then collectd is its child).
* ``collectdmon``: collectd runs in the foreground under collectdmon, which
  restarts it whenever it exits. Supervision is kept: collectdmon is never
  stopped; a SIGHUP makes it stop collectd and start it again on the (swapped)
  config. ``PIDPath`` is collectdmon's own pid file.
* ``systemd``: ``systemctl stop|start UNIT``; the pid is the unit's MainPID.

Besides stop/start, a manager tells whether a collectd that exited was stopped
*from outside* (an admin's clean stop: the pid file removed, collectdmon gone,
the unit inactive) rather than crashed: the admin's stop wins over a replacement.

Every failure is a :class:`ManagerError` with the tool's own words.
"""

from __future__ import annotations

import os
import signal
from typing import Protocol

from collectd_monitor.plugin_support import process_alive
from collectd_monitor.replacer.environment import daemon_env
from collectd_monitor.replacer.paths import ReplacerPaths
from collectd_monitor.replacer.procfs import children_of, is_collectdmon
from collectd_monitor.replacer.validate import ProcessResult, Runner, run_process

INIT_SCRIPT = "/etc/init.d/collectd"


class ManagerError(Exception):
    pass


def read_pid_file(path: os.PathLike[str] | str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


class ServiceManager(Protocol):
    in_place: bool
    """The manager restarts collectd itself (collectdmon): swap first, then :meth:`restart`."""

    def pid(self) -> int | None:
        """The collectd daemon's pid as recorded (pid file, collectdmon's child, MainPID)."""

    def pid_file_names(self, pid: int) -> bool:
        """Whether a pid file still names ``pid``."""

    def stop(self, pid: int) -> None: ...

    def start(self) -> None: ...

    def restart(self, pid: int | None) -> None:
        """Stop and start collectd in one step (``in_place`` managers)."""

    def kill(self, pid: int) -> None: ...

    def stopped_from_outside(self, pid: int) -> bool:
        """After ``pid`` exited: whether that was a clean stop by someone, not a crash."""


def _check(done: ProcessResult, what: str) -> None:
    if done.returncode != 0:
        text = done.output.strip()[-1500:]
        raise ManagerError(
            f"{what} failed (exit {done.returncode})" + (f": {text}" if text else "")
        )


def _signal(pid: int, sig: signal.Signals, what: str) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise ManagerError(f"cannot signal {what} (pid {pid}): {exc.strerror}") from None


def _collectd_child(monitor: int | None, proc: str = "/proc") -> int | None:
    if monitor is None:
        return None
    children = [pid for pid in children_of(monitor, proc) if process_alive(pid, proc)]
    return children[0] if children else None


class PidFileManager:
    """``pidfile`` and ``commands`` modes."""

    in_place = False

    def __init__(self, paths: ReplacerPaths, runner: Runner = run_process) -> None:
        self.paths = paths
        self.runner = runner

    def pid(self) -> int | None:
        return read_pid_file(self.paths.pid)

    def pid_file_names(self, pid: int) -> bool:
        return read_pid_file(self.paths.pid) == pid

    def stop(self, pid: int) -> None:
        if self.paths.stop_command:
            done = self.runner(
                ["/bin/sh", "-c", self.paths.stop_command], daemon_env(), self.paths.timing.stop
            )
            _check(done, f"stop command {self.paths.stop_command!r}")
            return
        _signal(pid, signal.SIGTERM, "collectd")

    def start(self) -> None:
        if self.paths.start_command:
            argv = ["/bin/sh", "-c", self.paths.start_command]
            what = f"start command {self.paths.start_command!r}"
        else:
            argv = [self.paths.binary, "-C", str(self.paths.config), "-P", str(self.paths.pid)]
            what = f"{self.paths.binary} -C {self.paths.config}"
        _check(self.runner(argv, daemon_env(), self.paths.timing.start), what)

    def restart(self, pid: int | None) -> None:
        raise ManagerError("a pid-file daemon is stopped and started, not restarted in place")

    def kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    def stopped_from_outside(self, pid: int) -> bool:
        # collectd removes its pid file when it shuts down cleanly (SIGTERM); a crash leaves it.
        return not self.pid_file_names(pid)


class InitScriptManager(PidFileManager):
    """Debian's init script, with or without collectdmon (``USE_COLLECTDMON``)."""

    def __init__(
        self,
        paths: ReplacerPaths,
        runner: Runner = run_process,
        *,
        script: str = INIT_SCRIPT,
        proc: str = "/proc",
    ) -> None:
        super().__init__(paths, runner)
        self.script = script
        self.proc = proc

    def _recorded(self) -> int | None:
        return read_pid_file(self.paths.pid)

    def pid(self) -> int | None:
        recorded = self._recorded()
        if recorded is not None and is_collectdmon(recorded, self.proc):
            return _collectd_child(recorded, self.proc)
        return recorded

    def pid_file_names(self, pid: int) -> bool:
        recorded = self._recorded()
        if recorded is not None and is_collectdmon(recorded, self.proc):
            return process_alive(recorded, self.proc)  # collectdmon removes its pid file on exit
        return recorded == pid

    def _script(self, action: str) -> None:
        timeout = self.paths.timing.stop if action == "stop" else self.paths.timing.start
        _check(self.runner([self.script, action], daemon_env(), timeout), f"{self.script} {action}")

    def stop(self, pid: int) -> None:
        self._script("stop")

    def start(self) -> None:
        self._script("start")

    def stopped_from_outside(self, pid: int) -> bool:
        return self._recorded() is None


class CollectdmonManager:
    """collectd in the foreground under collectdmon; ``paths.pid`` is collectdmon's pid file."""

    in_place = True

    def __init__(self, paths: ReplacerPaths, *, proc: str = "/proc") -> None:
        self.paths = paths
        self.proc = proc

    def monitor(self) -> int | None:
        pid = read_pid_file(self.paths.pid)
        if pid is None or not process_alive(pid, self.proc) or not is_collectdmon(pid, self.proc):
            return None
        return pid

    def pid(self) -> int | None:
        return _collectd_child(self.monitor(), self.proc)

    def pid_file_names(self, pid: int) -> bool:
        return False  # collectd -f writes no pid file

    def restart(self, pid: int | None) -> None:
        monitor = self.monitor()
        if monitor is None:
            raise ManagerError(f"collectdmon (pid file {self.paths.pid}) is not running")
        _signal(monitor, signal.SIGHUP, "collectdmon")

    def stop(self, pid: int) -> None:
        raise ManagerError("collectd under collectdmon is restarted in place, never stopped")

    def start(self) -> None:
        self.restart(None)

    def kill(self, pid: int) -> None:
        """Kill collectd only: collectdmon starts it again."""
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    def stopped_from_outside(self, pid: int) -> bool:
        return self.monitor() is None


class SystemdManager:
    """collectd as a systemd unit. Not exercised by the integration tests (no systemd in CI)."""

    in_place = False

    def __init__(self, paths: ReplacerPaths, runner: Runner = run_process) -> None:
        self.paths = paths
        self.runner = runner

    def _systemctl(self, *args: str) -> ProcessResult:
        return self.runner(["systemctl", *args], daemon_env(), max(self.paths.timing.stop, 30))

    def _property(self, name: str) -> str:
        return self._systemctl("show", f"--property={name}", "--value", self.paths.unit).output

    def pid(self) -> int | None:
        try:
            pid = int(self._property("MainPID").strip())
        except ValueError:
            return None
        return pid or None

    def pid_file_names(self, pid: int) -> bool:
        return read_pid_file(self.paths.pid) == pid

    def stop(self, pid: int) -> None:
        _check(self._systemctl("stop", self.paths.unit), f"systemctl stop {self.paths.unit}")

    def start(self) -> None:
        _check(self._systemctl("start", self.paths.unit), f"systemctl start {self.paths.unit}")

    def restart(self, pid: int | None) -> None:
        raise ManagerError("systemd units are stopped and started, not restarted in place")

    def kill(self, pid: int) -> None:
        self._systemctl("kill", "--signal=SIGKILL", self.paths.unit)

    def stopped_from_outside(self, pid: int) -> bool:
        # "systemctl stop" leaves the unit inactive; a crash leaves it failed or restarting.
        return self._property("ActiveState").strip() == "inactive"


def manager_for(paths: ReplacerPaths, runner: Runner = run_process) -> ServiceManager:
    if paths.mode == "systemd":
        return SystemdManager(paths, runner)
    if paths.mode == "collectdmon":
        return CollectdmonManager(paths)
    if paths.mode == "init":
        return InitScriptManager(paths, runner)
    return PidFileManager(paths, runner)
