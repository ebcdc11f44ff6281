"""Pure parts of the replacer: discovery, the lock, config reading, helper spec, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from collectd_monitor.cli.replace import exit_status
from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.outbox import Outbox
from collectd_monitor.commands.protocol import Result
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.helper import HelperSpec, interpreter
from collectd_monitor.replacer.lock import ReplaceLock
from collectd_monitor.replacer.paths import ReplacerPaths, Timing, discover
from collectd_monitor.replacer.procfs import parse_cmdline
from collectd_monitor.replacer.report import OutboxTarget, read_report, write_report
from collectd_monitor.replacer.validate import (
    error_lines,
    loads_module,
    logfile_paths,
    module_options,
)

# --------------------------------------------------------------------------- discovery


def fake_proc(root: Path, pid: int, argv: list[str], cgroup: str = "0::/user.slice\n") -> None:
    entry = root / str(pid)
    entry.mkdir(parents=True)
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (entry / "cgroup").write_text(cgroup)
    os.symlink(argv[0], entry / "exe")


def test_parse_cmdline_both_spellings():
    assert parse_cmdline(["-C", "/a.conf", "-P/b.pid", "-f"]) == {"-C": "/a.conf", "-P": "/b.pid"}


def test_discovery_from_the_running_daemon(tmp_path):
    fake_proc(tmp_path, 42, ["/opt/sbin/collectd", "-C", "/srv/c.conf", "-P", "/srv/run/c.pid"])
    paths = discover(
        {"SettleTime": 1.5},
        collectd_pid=42,
        proc=str(tmp_path),
        systemd_root=str(tmp_path / "none"),
    )
    assert paths.config == Path("/srv/c.conf")
    assert paths.pid == Path("/srv/run/c.pid")
    assert paths.binary == "/opt/sbin/collectd"
    assert paths.report == Path("/srv/run/collectd-monitor-replace.json")
    assert paths.mode == "pidfile"
    assert paths.timing.settle == 1.5


def test_options_win_over_discovery_and_commands_select_commands_mode(tmp_path):
    fake_proc(tmp_path, 42, ["/usr/sbin/collectd", "-C", "/srv/c.conf"])
    options = {
        "configpath": "/etc/x.conf",
        "PIDPath": "/run/x.pid",
        "ReplacerReportPath": "/var/lib/x/r.json",
        "commands": {"start": "service collectd start", "stop": "service collectd stop"},
    }
    paths = discover(options, collectd_pid=42, proc=str(tmp_path))
    assert (paths.config, paths.pid) == (Path("/etc/x.conf"), Path("/run/x.pid"))
    assert paths.report == Path("/var/lib/x/r.json")
    assert paths.mode == "commands" and paths.start_command == "service collectd start"


def test_systemd_is_detected_from_the_cgroup(tmp_path):
    fake_proc(tmp_path, 42, ["/usr/sbin/collectd"], "0::/system.slice/collectd.service\n")
    (tmp_path / "systemd").mkdir()
    paths = discover(
        {}, collectd_pid=42, proc=str(tmp_path), systemd_root=str(tmp_path / "systemd")
    )
    assert (paths.mode, paths.unit) == ("systemd", "collectd.service")
    assert paths.config == Path("/etc/collectd/collectd.conf")


def test_a_foreground_daemon_without_manager_is_0x200a(tmp_path):
    fake_proc(tmp_path, 42, ["/usr/sbin/collectd", "-C", "/srv/c.conf", "-f"])
    with pytest.raises(ReplaceFailed) as failed:
        discover({}, collectd_pid=42, proc=str(tmp_path), systemd_root=str(tmp_path / "none"))
    assert failed.value.code == ResultCode.REPLACE_PATH_NOT_FOUND


def test_bad_timing_option_is_0x200a(tmp_path):
    with pytest.raises(ReplaceFailed):
        discover({"SettleTime": -1}, collectd_pid=None, proc=str(tmp_path))


@pytest.mark.parametrize(
    "options", [{"commands": "service collectd restart"}, {"SettleTime": "soon"}, {"unit": 5}]
)
def test_malformed_collectd_options_are_0x200a(tmp_path, options):
    with pytest.raises(ReplaceFailed) as failed:
        discover(options, collectd_pid=None, proc=str(tmp_path))
    assert failed.value.code == ResultCode.REPLACE_PATH_NOT_FOUND
    assert "Services.collectd." in failed.value.message


def test_timing_reads_collectd_block_floats_and_any_spelling():
    timing = Timing.from_options({"settletime": 2.0, "ValidateTimeout": "90", "Other": 1})
    assert (timing.settle, timing.validate, timing.connect) == (2.0, 90.0, 30.0)


def test_paths_round_trip_through_the_helper_spec(tmp_path):
    paths = ReplacerPaths(
        config=tmp_path / "c.conf",
        binary="/usr/sbin/collectd",
        pid=tmp_path / "c.pid",
        report=tmp_path / "r.json",
        timing=Timing(settle=0.5),
    )
    spec = HelperSpec(
        task_id=3,
        paths=paths,
        loads_remote=True,
        new_outbox=OutboxTarget(tmp_path / "new-outbox", "t/new"),
        old_outbox=OutboxTarget(tmp_path / "old-outbox", "t/old"),
        local_report=tmp_path / "local",
        expected_broker="127.0.0.1:1883",
        was_running=False,
    )
    assert HelperSpec.decode(spec.encode()) == spec
    assert os.access(interpreter(), os.X_OK)


# --------------------------------------------------------------------------- the lock


def test_the_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    first = ReplaceLock(tmp_path / "l")
    first.acquire(1)
    with pytest.raises(ReplaceFailed) as busy:
        ReplaceLock(tmp_path / "l").acquire(2)
    assert busy.value.code == ResultCode.REPLACE_IN_PROGRESS
    assert "task 1" in busy.value.message and f"pid {os.getpid()}" in busy.value.message
    first.release()
    ReplaceLock(tmp_path / "l").acquire(2)


def test_a_dead_holder_leaves_no_stale_lock(tmp_path):
    pid = os.fork()
    if pid == 0:  # the child takes the lock and dies without releasing it
        ReplaceLock(tmp_path / "l").acquire(1)
        os._exit(0)
    os.waitpid(pid, 0)
    ReplaceLock(tmp_path / "l").acquire(2)


def test_hand_off_reserves_the_lock_for_its_task_until_it_expires(tmp_path):
    now = [1000.0]
    plugin = ReplaceLock(tmp_path / "l", now=lambda: now[0])
    plugin.acquire(5)
    plugin.hand_off(5, seconds=30)
    with pytest.raises(ReplaceFailed):
        ReplaceLock(tmp_path / "l", now=lambda: now[0]).acquire(6)
    with pytest.raises(ReplaceFailed):  # another task's helper cannot claim it
        ReplaceLock(tmp_path / "l", now=lambda: now[0]).acquire(6, claim_handoff=True)
    helper = ReplaceLock(tmp_path / "l", now=lambda: now[0])
    helper.acquire(5, claim_handoff=True)
    helper.release()
    plugin.acquire(7)
    plugin.hand_off(7, seconds=30)
    now[0] += 31  # the helper never came
    ReplaceLock(tmp_path / "l", now=lambda: now[0]).acquire(8)


# --------------------------------------------------------------------------- reading configs

CONF = """
LoadPlugin logfile
<Plugin logfile>
  File "/var/log/collectd.log"   # comment
</Plugin>
<Plugin python>
  ModulePath "/opt/x"
  # Import "collectd_monitor.remote"   (commented out: does not count)
  Import "collectd_monitor.remote"
  <Module "collectd_monitor.remote">
    MonitorConfigPath "/etc/collectd/monitor/config.json"
    QoS 1
    Secure false
    <Nested>
      Ignored 1
    </Nested>
  </Module>
</Plugin>
"""


def test_module_block_and_import_are_read():
    assert loads_module(CONF)
    assert not loads_module(CONF.replace('  Import "collectd_monitor.remote"\n', ""))
    assert module_options(CONF) == {
        "MonitorConfigPath": "/etc/collectd/monitor/config.json",
        "QoS": 1.0,
        "Secure": False,
    }
    assert module_options("LoadPlugin cpu\n") is None
    assert logfile_paths(CONF) == ["/var/log/collectd.log"]


def test_error_lines_drop_noise_and_cap():
    out = 'plugin_load: plugin "cpu" successfully loaded.\nExiting normally.\n' + "".join(
        f"error {i}\n" for i in range(50)
    )
    text = error_lines(out)
    assert "successfully" not in text and "Exiting" not in text
    assert text.splitlines()[-1] == "[20 more lines]"
    assert error_lines("[info] fine\n[error] bad\n", only_errors=True) == "[error] bad"


# --------------------------------------------------------------------------- report, exit codes


def test_local_report_is_0600_and_a_corrupt_one_reads_as_0x2008(tmp_path):
    path = tmp_path / "r.json"
    assert read_report(path) is None
    write_report(path, Result(1, 0, "ok"))
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_report(path) == Result(1, 0, "ok")
    path.write_text("{half")
    corrupt = read_report(path)
    assert corrupt is not None and corrupt.code == 0x2008


def test_the_outcome_lands_in_the_outbox_format(tmp_path):
    target = OutboxTarget(tmp_path / "state" / "outbox", "t/result")
    target.put(Result(5, 0x2007, "rolled back"))
    entries = list(Outbox(target.directory).pending())
    assert [(e.topic, json.loads(e.payload)["task_id"]) for e in entries] == [("t/result", 5)]
    assert entries[0].writer == os.getpid()
    assert (target.directory / entries[0].name).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("code", "status"),
    [(0, 0), (0x2000, 10), (0x2002, 12), (0x2007, 17), (0x200A, 20), (0x2010, 26), (0x1000, 1)],
)
def test_exit_status_mapping(code, status):
    assert exit_status(code) == status
