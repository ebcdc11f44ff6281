"""How collectd is stopped, started and found: directly, by commands, or by systemd.

* ``direct``: SIGTERM to the pid in the pid file; start ``collectd -C CONFIG
  -P PIDFILE`` (collectd daemonizes and writes the pid file).
* ``commands``: the ``commands.start`` / ``commands.stop`` lines of
  ``Services.collectd`` run by ``/bin/sh``; the pid comes from the pid file.
* ``systemd``: ``systemctl stop|start UNIT``; the pid is the unit's MainPID.

Every failure is a :class:`ManagerError` with the tool's own words.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from typing import Protocol

from collectd_monitor.plugin_support import OFFLINE_ENV, SAFE_PATH
from collectd_monitor.replacer.paths import ReplacerPaths
from collectd_monitor.replacer.validate import ProcessResult, Runner, run_process


class ManagerError(Exception):
    pass


def read_pid_file(path: os.PathLike[str] | str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def daemon_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment collectd is started with: never in offline (validation) mode."""
    env = dict(os.environ if base is None else base)
    env.pop(OFFLINE_ENV, None)
    env.setdefault("PATH", SAFE_PATH)
    return env


class ServiceManager(Protocol):
    def pid(self) -> int | None:
        """The daemon's pid as recorded (pid file or MainPID), alive or not."""

    def pid_file_names(self, pid: int) -> bool:
        """Whether a pid file still names ``pid``."""

    def stop(self, pid: int) -> None: ...

    def start(self) -> None: ...

    def kill(self, pid: int) -> None: ...


def _check(done: ProcessResult, what: str) -> None:
    if done.returncode != 0:
        text = done.output.strip()[-1500:]
        raise ManagerError(
            f"{what} failed (exit {done.returncode})" + (f": {text}" if text else "")
        )


class PidFileManager:
    """``direct`` and ``commands`` modes."""

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
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise ManagerError(f"cannot signal collectd (pid {pid}): {exc.strerror}") from None

    def start(self) -> None:
        if self.paths.start_command:
            argv = ["/bin/sh", "-c", self.paths.start_command]
            what = f"start command {self.paths.start_command!r}"
        else:
            argv = [self.paths.binary, "-C", str(self.paths.config), "-P", str(self.paths.pid)]
            what = f"{self.paths.binary} -C {self.paths.config}"
        _check(self.runner(argv, daemon_env(), self.paths.timing.start), what)

    def kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class SystemdManager:
    """collectd as a systemd unit. Not exercised by the tests (no systemd in CI)."""

    def __init__(self, paths: ReplacerPaths, runner: Runner = run_process) -> None:
        self.paths = paths
        self.runner = runner

    def _systemctl(self, *args: str) -> ProcessResult:
        return self.runner(["systemctl", *args], daemon_env(), max(self.paths.timing.stop, 30))

    def pid(self) -> int | None:
        done = self._systemctl("show", "--property=MainPID", "--value", self.paths.unit)
        try:
            pid = int(done.output.strip())
        except ValueError:
            return None
        return pid or None

    def pid_file_names(self, pid: int) -> bool:
        return read_pid_file(self.paths.pid) == pid

    def stop(self, pid: int) -> None:
        _check(self._systemctl("stop", self.paths.unit), f"systemctl stop {self.paths.unit}")

    def start(self) -> None:
        _check(self._systemctl("start", self.paths.unit), f"systemctl start {self.paths.unit}")

    def kill(self, pid: int) -> None:
        self._systemctl("kill", "--signal=SIGKILL", self.paths.unit)


def manager_for(paths: ReplacerPaths, runner: Runner = run_process) -> ServiceManager:
    if paths.mode == "systemd":
        return SystemdManager(paths, runner)
    return PidFileManager(paths, runner)
