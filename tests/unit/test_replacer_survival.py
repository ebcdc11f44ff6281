"""Unit tests for the survival parts of the replacer: environment, service managers,
discovery of collectdmon/init, the watch, the admin's stop, the guardian's recovery."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.replacer.environment import SAFE_PATH, daemon_env, helper_env
from collectd_monitor.replacer.manager import InitScriptManager, SystemdManager
from collectd_monitor.replacer.paths import ReplacerPaths, Timing, discover
from collectd_monitor.replacer.validate import ProcessResult

from .test_replacer_transaction import NEW, OLD, make

# --------------------------------------------------------------------------- environment


def test_the_daemon_gets_a_service_managers_environment():
    caller = {
        "PATH": "/home/u/.pyenv/shims:/usr/bin",
        "LANG": "de_DE.UTF-8",
        "PYTHONPATH": "/x",
        "PYTHONHOME": "/y",
        "VIRTUAL_ENV": "/v",
        "CONDA_PREFIX": "/c",
        "PYENV_VERSION": "3.12",
        "COLLECTD_MONITOR_OFFLINE": "1",
    }
    assert daemon_env(caller) == {"PATH": SAFE_PATH, "LANG": "de_DE.UTF-8"}
    helper = helper_env(["/pkg"], caller)
    assert helper == {"PATH": SAFE_PATH, "LANG": "de_DE.UTF-8", "PYTHONPATH": "/pkg"}


# --------------------------------------------------------------------------- discovery


def fake_process(root: Path, pid: int, ppid: int, argv: list[str]) -> None:
    entry = root / str(pid)
    entry.mkdir(parents=True)
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (entry / "stat").write_text(f"{pid} ({Path(argv[0]).name}) S {ppid} 1 1 0\n")
    (entry / "cgroup").write_text("0::/user.slice\n")
    os.symlink(argv[0], entry / "exe")


def test_collectd_under_collectdmon_is_detected_with_collectdmons_pid_file(tmp_path):
    fake_process(tmp_path, 10, 1, ["/usr/sbin/collectdmon", "-P", "/run/cm.pid", "--", "-C", "/c"])
    fake_process(tmp_path, 11, 10, ["/usr/sbin/collectd", "-C", "/srv/c.conf", "-f"])
    paths = discover({}, collectd_pid=11, proc=str(tmp_path), systemd_root=str(tmp_path / "no"))
    assert (paths.mode, paths.pid, paths.config) == (
        "collectdmon",
        Path("/run/cm.pid"),
        Path("/srv/c.conf"),
    )


def test_a_foreground_collectd_under_no_manager_names_the_situation(tmp_path):
    fake_process(tmp_path, 20, 5, ["/bin/bash"])
    fake_process(tmp_path, 21, 20, ["/usr/sbin/collectd", "-C", "/srv/c.conf", "-f"])
    with pytest.raises(Exception) as failed:
        discover({}, collectd_pid=21, proc=str(tmp_path), systemd_root=str(tmp_path / "no"))
    message = str(failed.value)
    assert "foreground" in message and "no pid" not in message.lower().split("pid file")[0]
    assert "bash (pid 20)" in message and "collectdmon" in message


def test_debians_init_script_is_detected_for_the_default_paths(tmp_path):
    script = tmp_path / "init.d-collectd"
    script.write_text("#!/bin/sh\n")
    argv = [
        "/usr/sbin/collectd",
        "-C",
        "/etc/collectd/collectd.conf",
        "-P",
        "/var/run/collectd.pid",
    ]
    fake_process(tmp_path, 30, 1, argv)
    paths = discover(
        {},
        collectd_pid=30,
        proc=str(tmp_path),
        systemd_root=str(tmp_path / "no"),
        init_script=str(script),
    )
    assert paths.mode == "init"
    override = discover(
        {"ServiceManager": "pidfile"},
        collectd_pid=30,
        proc=str(tmp_path),
        systemd_root=str(tmp_path / "no"),
        init_script=str(script),
    )
    assert override.mode == "pidfile"
    assert discover({"ServiceManager": "direct"}, collectd_pid=30, proc=str(tmp_path)).mode == (
        "pidfile"
    )


# --------------------------------------------------------------------------- managers


class Recorder:
    def __init__(self, outputs: Mapping[str, str] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.envs: list[Mapping[str, str]] = []
        self.outputs = outputs or {}

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> ProcessResult:
        self.calls.append(list(argv))
        self.envs.append(env)
        return ProcessResult(0, self.outputs.get(" ".join(argv), ""))


def _paths(tmp_path: Path, mode: str) -> ReplacerPaths:
    return ReplacerPaths(
        config=tmp_path / "collectd.conf",
        binary="/usr/sbin/collectd",
        pid=tmp_path / "collectd.pid",
        report=tmp_path / "r.json",
        mode=mode,
    )


def test_the_init_script_mode_runs_the_script_and_follows_collectdmons_child(tmp_path):
    proc = tmp_path / "proc"
    fake_process(proc, 40, 1, ["/usr/sbin/collectdmon", "-P", "/var/run/collectd.pid"])
    fake_process(proc, 41, 40, ["/usr/sbin/collectd", "-C", "/etc/collectd/collectd.conf", "-f"])
    paths = _paths(tmp_path, "init")
    paths.pid.write_text("40\n")
    runner = Recorder()
    manager = InitScriptManager(paths, runner, script="/etc/init.d/collectd", proc=str(proc))
    assert manager.pid() == 41  # collectd, not collectdmon
    manager.stop(41)
    manager.start()
    assert runner.calls == [["/etc/init.d/collectd", "stop"], ["/etc/init.d/collectd", "start"]]
    assert all(env["PATH"] == SAFE_PATH for env in runner.envs)
    paths.pid.unlink()
    assert manager.stopped_from_outside(41)


def test_the_systemd_mode_uses_systemctl(tmp_path):
    runner = Recorder(
        {
            "systemctl show --property=MainPID --value collectd.service": "123\n",
            "systemctl show --property=ActiveState --value collectd.service": "inactive\n",
        }
    )
    manager = SystemdManager(_paths(tmp_path, "systemd"), runner)
    assert manager.pid() == 123
    manager.stop(123)
    manager.start()
    assert manager.stopped_from_outside(123)
    assert [c[:2] for c in runner.calls] == [
        ["systemctl", "show"],
        ["systemctl", "stop"],
        ["systemctl", "start"],
        ["systemctl", "show"],
    ]


# --------------------------------------------------------------------------- watch, admin stop


@pytest.fixture
def paths(tmp_path: Path) -> ReplacerPaths:
    config = tmp_path / "collectd.conf"
    config.write_text(OLD)
    binary = tmp_path / "collectd"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return ReplacerPaths(
        config=config,
        binary=str(binary),
        pid=tmp_path / "collectd.pid",
        report=tmp_path / "report.json",
        timing=Timing(settle=1, connect=5, stop=3, start=2, validate=5, watch=10),
    )


def test_a_late_death_within_the_watch_rolls_back(paths):
    tx, fake = make(paths)
    paths.new.write_text(NEW)
    assert tx.apply(7, loads_remote=False, was_running=True).code == ResultCode.SUCCESS
    assert tx.new_pid is not None
    fake.running = None  # crashed: its pid file stays
    late = tx.watch(7, tx.new_pid, tx.clock.monotonic() + 10)
    assert late is not None and late.code == ResultCode.REPLACE_RECOVERED
    assert "late death" in late.message
    assert paths.config.read_text() == OLD and fake.events[-1] == "start old"


def test_a_clean_stop_during_the_watch_is_left_alone(paths):
    tx, fake = make(paths)
    paths.new.write_text(NEW)
    tx.apply(7, loads_remote=False, was_running=True)
    fake.running, fake.pid_file = None, None  # stopped cleanly: its pid file removed
    assert tx.watch(7, 101, tx.clock.monotonic() + 10) is None
    assert paths.config.read_text() == NEW and fake.events[-1] == "start new"


def test_a_daemon_that_lives_through_the_watch_is_kept(paths):
    tx, _ = make(paths)
    paths.new.write_text(NEW)
    tx.apply(7, loads_remote=False, was_running=True)
    assert tx.watch(7, 101, tx.clock.monotonic() + 10) is None


def test_collectd_stopped_before_the_helper_stops_it_stays_stopped(paths):
    tx, fake = make(paths)
    fake.running, fake.pid_file = None, None
    paths.new.write_text(NEW)
    result = tx.apply(7, loads_remote=False, was_running=True)
    assert result.code == ResultCode.REPLACE_STOPPED_OUTSIDE
    assert fake.events == [] and not paths.new.exists() and paths.config.read_text() == OLD


def test_a_clean_stop_while_checking_the_new_daemon_wins(paths):
    tx, fake = make(paths)
    paths.new.write_text(NEW)
    original = fake.alive

    def alive(pid: int) -> bool:
        if pid == 101 and fake.events[-1] == "start new":
            fake.pid_file = None  # the admin's SIGTERM: collectd removed its pid file
            return False
        return original(pid)

    tx.alive = alive
    result = tx.apply(7, loads_remote=False, was_running=True)
    assert result.code == ResultCode.REPLACE_STOPPED_OUTSIDE, result.message
    assert fake.events == ["stop", "start new"]  # nothing started again
    assert paths.config.read_text() == OLD and paths.rejected.read_text() == NEW


# --------------------------------------------------------------------------- recovery


@pytest.mark.parametrize(
    ("step", "code", "events"),
    [
        ("begin", ResultCode.REPLACE_STOP_FAILED, []),
        ("stopped", ResultCode.REPLACE_RECOVERED, ["start old"]),
        ("swapped", ResultCode.REPLACE_RECOVERED, ["start old"]),
        ("started", ResultCode.REPLACE_RECOVERED, ["stop", "start old"]),
    ],
)
def test_the_guardian_recovers_from_the_last_step(paths, step, code, events):
    tx, fake = make(paths)
    paths.new.write_text(NEW)
    if step == "begin":
        state = {"step": "begin"}
    else:
        fake.running, fake.pid_file = None, None  # stopped by the helper
        if step != "stopped":
            paths.backup.write_text(OLD)
            paths.new.replace(paths.config)
        if step == "started":
            fake.running = fake.pid_file = 150
        state = {"step": step}
    result = tx.recover(7, "the replacement helper (pid 9) was killed by SIGKILL", state)
    assert result is not None and result.code == code, result
    assert "SIGKILL" in result.message
    assert fake.events == events
    assert paths.config.read_text() == OLD and not paths.new.exists()
    assert fake.running is not None
