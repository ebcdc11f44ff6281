"""The transaction's step logic against a pretend collectd (pure logic, no processes).

The service manager, liveness, clock and broker probe are the injected
effects; files are real, under tmp_path. The fake clock advances only when
the transaction sleeps, so timeouts are exercised without waiting.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.lock import ReplaceLock
from collectd_monitor.replacer.manager import ManagerError
from collectd_monitor.replacer.paths import ReplacerPaths, Timing
from collectd_monitor.replacer.report import PluginStatus, write_plugin_status
from collectd_monitor.replacer.transaction import Clock, Transaction
from collectd_monitor.replacer.validate import ProcessResult

OLD = 'Hostname "old"\n'
NEW = 'Hostname "new"\n'


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> Clock:
        return Clock(monotonic=lambda: self.now, sleep=self.sleep, wall=lambda: 1e9 + self.now)


class FakeCollectd:
    """A pretend daemon: what start() does depends on words in the live config."""

    def __init__(self, paths: ReplacerPaths) -> None:
        self.paths = paths
        self._pids = itertools.count(100)
        self.running: int | None = next(self._pids)
        self.pid_file: int | None = self.running
        self.events: list[str] = []
        self.fail_stop = False
        self.ignore_term = False
        self.keep_pid_file = False
        self.broker = "127.0.0.1:1883"

    # ServiceManager
    in_place = False

    def restart(self, pid: int | None) -> None:
        raise ManagerError("not in place")

    def stopped_from_outside(self, pid: int) -> bool:
        return self.pid_file != pid  # a crash leaves the pid file, a clean stop removes it

    def pid(self) -> int | None:
        return self.pid_file

    def pid_file_names(self, pid: int) -> bool:
        return self.pid_file == pid

    def stop(self, pid: int) -> None:
        self.events.append("stop")
        if self.fail_stop:
            raise ManagerError("permission denied")
        if not self.ignore_term:
            self.running = None
            if not self.keep_pid_file:
                self.pid_file = None

    def start(self) -> None:
        text = self.paths.config.read_text()
        self.events.append("start " + ("new" if "new" in text else "old"))
        if "FAILSTART" in text:
            raise ManagerError("collectd: exit 1")
        if "NOPID" in text:
            return
        pid = next(self._pids)
        self.pid_file = pid
        self.running = None if "DIES" in text else pid
        if "CONNECTS" in text:
            write_plugin_status(
                self.paths.plugin_status, PluginStatus(pid, "connected", self.broker)
            )
        elif "PLUGIN" in text:
            write_plugin_status(self.paths.plugin_status, PluginStatus(pid, "started", self.broker))

    def kill(self, pid: int) -> None:
        self.events.append("kill")
        self.running = None

    def alive(self, pid: int) -> bool:
        return pid == self.running


@pytest.fixture
def paths(tmp_path: Path) -> ReplacerPaths:
    config = tmp_path / "collectd.conf"
    config.write_text(OLD)
    config.chmod(0o644)
    binary = tmp_path / "collectd"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return ReplacerPaths(
        config=config,
        binary=str(binary),
        pid=tmp_path / "collectd.pid",
        report=tmp_path / "report.json",
        timing=Timing(settle=1, connect=5, stop=3, start=2, validate=5),
    )


def make(
    paths: ReplacerPaths, *, probe: bool = True, runner_rc: int = 0, runner_output: str = ""
) -> tuple[Transaction, FakeCollectd]:
    fake = FakeCollectd(paths)
    tx = Transaction(
        paths,
        manager=fake,
        clock=FakeClock().clock(),
        alive=fake.alive,
        probe=lambda _address: probe,
        runner=lambda argv, env, timeout: ProcessResult(runner_rc, runner_output),
    )
    return tx, fake


def apply(
    tx: Transaction,
    paths: ReplacerPaths,
    text: str,
    *,
    loads_remote: bool = False,
    expected_broker: str | None = None,
) -> tuple[int, str]:
    paths.new.write_text(text)
    result = tx.apply(7, loads_remote=loads_remote, expected_broker=expected_broker)
    return result.code, result.message


# --------------------------------------------------------------------------- apply


def test_success_stops_backs_up_swaps_and_starts(paths):
    tx, fake = make(paths)
    code, message = apply(tx, paths, NEW)
    assert code == ResultCode.SUCCESS
    assert fake.events == ["stop", "start new"]
    assert paths.config.read_text() == NEW
    assert paths.backup.read_text() == OLD
    assert paths.backup.stat().st_mode & 0o777 == 0o644
    assert not paths.new.exists()
    assert "pid 101" in message and "was 100" in message


def test_a_daemon_that_dies_after_start_is_rolled_back(paths):
    tx, fake = make(paths)
    code, message = apply(tx, paths, NEW + "# DIES\n")
    assert code == ResultCode.REPLACE_RECOVERED
    assert fake.events == ["stop", "start new", "start old"]
    assert paths.config.read_text() == OLD
    assert paths.rejected.read_text() == NEW + "# DIES\n"
    assert "exited" in message and "old config again" in message


def test_a_daemon_that_dies_during_the_settle_time_is_rolled_back(paths):
    tx, fake = make(paths)
    original_alive = fake.alive
    seen: list[int] = []

    def alive(pid: int) -> bool:  # alive at first, dead from the second look on
        seen.append(pid)
        return original_alive(pid) and (pid != 101 or seen.count(101) < 2)

    tx.alive = alive
    code, message = apply(tx, paths, NEW)
    assert code == ResultCode.REPLACE_RECOVERED
    assert "after it started" in message


def test_failed_start_and_failed_recovery_is_0x2008(paths):
    paths.config.write_text(OLD + "# DIES\n")
    tx, _ = make(paths)
    code, message = apply(tx, paths, NEW + "# DIES\n")
    assert code == ResultCode.REPLACE_RECOVERY_FAILED
    assert "recovery with the old config failed too" in message


def test_no_new_pid_then_recovered(paths):
    tx, fake = make(paths)
    code, message = apply(tx, paths, NEW + "# NOPID\n")
    assert code == ResultCode.REPLACE_RECOVERED
    assert fake.events == ["stop", "start new", "start old"]
    assert "no new collectd pid" in message


def test_no_pid_with_either_config_is_0x2009(paths):
    paths.config.write_text(OLD + "# NOPID\n")
    tx, _ = make(paths)
    code, _ = apply(tx, paths, NEW + "# NOPID\n")
    assert code == ResultCode.REPLACE_NO_NEW_PID


def test_a_start_command_failure_is_rolled_back(paths):
    tx, fake = make(paths)
    code, message = apply(tx, paths, NEW + "# FAILSTART\n")
    assert code == ResultCode.REPLACE_RECOVERED
    assert fake.events == ["stop", "start new", "start old"]
    assert "exit 1" in message


def test_stop_failure_changes_nothing(paths):
    tx, fake = make(paths)
    fake.fail_stop = True
    code, message = apply(tx, paths, NEW)
    assert code == ResultCode.REPLACE_STOP_FAILED
    assert "permission denied" in message and "keeps running with the old config" in message
    assert paths.config.read_text() == OLD
    assert fake.events == ["stop"]


def test_a_daemon_that_ignores_sigterm_is_0x2003_after_the_stop_timeout(paths):
    tx, fake = make(paths)
    fake.ignore_term = True
    code, message = apply(tx, paths, NEW)
    assert code == ResultCode.REPLACE_STOP_FAILED
    assert "did not exit within 3 s" in message
    assert paths.config.read_text() == OLD


def test_a_pid_file_left_behind_is_0x2004_and_the_old_config_restarted(paths):
    tx, fake = make(paths)
    fake.keep_pid_file = True
    code, message = apply(tx, paths, NEW)
    assert code == ResultCode.REPLACE_PID_NOT_REMOVED
    assert "restarted with the old config" in message
    assert fake.events == ["stop", "start old"]
    assert paths.config.read_text() == OLD


def test_backup_failure_is_0x2005(paths):
    tx, fake = make(paths)
    paths.backup.mkdir()  # a directory where the backup file goes
    code, message = apply(tx, paths, NEW)
    assert code == ResultCode.REPLACE_BACKUP_FAILED
    assert "cannot back up" in message
    assert fake.events == ["stop", "start old"]
    assert paths.config.read_text() == OLD


def test_the_validated_file_gone_is_0x200a(paths):
    tx, fake = make(paths)
    assert tx.apply(7, loads_remote=False).code == ResultCode.REPLACE_PATH_NOT_FOUND
    assert fake.events == []


@pytest.mark.parametrize(
    ("marker", "probe", "expected_broker", "code"),
    [
        ("CONNECTS", True, None, ResultCode.SUCCESS),
        ("PLUGIN", True, "127.0.0.1:1883", ResultCode.REPLACE_RECOVERED),  # broker up, no connect
        ("PLUGIN", False, "127.0.0.1:1883", ResultCode.SUCCESS),  # broker down: not the config
        ("PLUGIN", False, "10.0.0.1:1883", ResultCode.REPLACE_RECOVERED),  # moved to a dead broker
        ("", True, None, ResultCode.REPLACE_RECOVERED),  # plugin never started
    ],
    ids=["connected", "broker-up-not-connected", "broker-down", "moved-broker", "no-plugin"],
)
def test_plugin_health(paths, marker, probe, expected_broker, code):
    tx, _ = make(paths, probe=probe)
    result, message = apply(
        tx, paths, f"{NEW}# {marker}\n", loads_remote=True, expected_broker=expected_broker
    )
    assert result == code, message
    if marker == "PLUGIN" and code == ResultCode.SUCCESS:
        assert "unreachable" in message


# --------------------------------------------------------------------------- prepare


def test_prepare_writes_0600_validates_and_keeps_the_lock(paths):
    tx, _ = make(paths)
    prepared = tx.prepare(7, NEW)
    assert paths.new.read_text() == NEW and paths.new.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ReplaceFailed) as second:
        tx.prepare(8, NEW)
    assert second.value.code == ResultCode.REPLACE_IN_PROGRESS
    assert "task 7" in second.value.message
    prepared.lock.release()


def test_a_broken_config_is_0x2002_with_collectds_words_and_leaves_nothing(paths):
    tx, _ = make(
        paths,
        runner_rc=1,
        runner_output="Parse error in file `x', line 4\n"
        'plugin_load: plugin "cpu" successfully loaded.\n',
    )
    with pytest.raises(ReplaceFailed) as failed:
        tx.prepare(7, NEW)
    assert failed.value.code == ResultCode.REPLACE_CONFIG_BROKEN
    assert "Parse error in file" in failed.value.message
    assert "successfully loaded" not in failed.value.message
    assert not paths.new.exists()
    ReplaceLock(paths.lock).acquire(9)  # released


def test_an_unwritable_new_file_is_0x2001_and_releases_the_lock(paths):
    tx, _ = make(paths)
    paths.new.mkdir()
    with pytest.raises(ReplaceFailed) as failed:
        tx.prepare(7, NEW)
    assert failed.value.code == ResultCode.REPLACE_WRITE_FAILED
    ReplaceLock(paths.lock).acquire(9)


def test_a_missing_config_or_binary_is_0x200a(paths):
    paths.config.unlink()
    tx, _ = make(paths)
    with pytest.raises(ReplaceFailed) as failed:
        tx.prepare(7, NEW)
    assert failed.value.code == ResultCode.REPLACE_PATH_NOT_FOUND
    assert "config" in failed.value.message
