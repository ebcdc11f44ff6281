"""collectd.conf replacement against a real collectd (daemonized, pid file) and mosquitto.

Every test pushes a config to a running collectd and checks the host's state
afterwards: which config is live, which pid runs, what the result said. The
detached helper is waited for (or ended) before the fixtures stop collectd, so
no process outlives a test.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.outbox import waiting
from collectd_monitor.commands.protocol import format_timestamp
from collectd_monitor.replacer.paths import REPORT_NAME, lock_path_for
from collectd_monitor.replacer.validate import validate
from collectd_monitor.testing.sandbox import Broker, process_alive, wait_for

from ..conftest import HELLO_SERVICES, Monitor, helpers_of, next_task_id, pids_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_helper_left")]

CLI = [sys.executable, "-m", "collectd_monitor"]

# Short waits keep the suite fast; the helper's checks stay the real ones.
TIMING = {
    "SettleTime": 0.5,
    "WatchTime": 1,
    "ConnectTimeout": 4,
    "StopTimeout": 15,
    "StartTimeout": 15,
}
RESULT_WAIT = 60.0


ALLOW = {"AllowConfigReplace": True}


def start(monitor: Any, *, services: dict[str, Any] | None = None, **kwargs: Any) -> Monitor:
    collectd_service = {**TIMING, **(services or {})}
    return monitor(
        ALLOW,
        services={**HELLO_SERVICES, "collectd": collectd_service},
        daemon=True,
        **kwargs,
    )


def outbox_entries(m: Monitor) -> list[dict[str, Any]]:
    """The results waiting in the plugin's outbox (where the helper leaves its outcome):
    entry files and the running plugin's journal."""
    found = []
    for directory in sorted(m.collectd.directory.glob("state/*/outbox")):
        for _, payload in waiting(directory):
            found.append(json.loads(payload))
    return found


def new_config(m: Monitor, **changes: Any) -> str:
    return dataclasses.replace(m.collectd, **changes).render_config()


def push(peer: Any, m: Monitor, text: str) -> int:
    task_id = next_task_id()
    peer.send(
        m.command_topic, {"task_id": task_id, "timestamp": format_timestamp(), "config": text}
    )
    return task_id


def live_pid(m: Monitor) -> int:
    pid = m.collectd.pid()
    assert pid is not None, m.log()[-3000:]
    return pid


def with_python_module(text: str, directory: Path, name: str, source: str) -> str:
    """Add a python module of our own to a rendered config (a test stand-in for a bad plugin)."""
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return text.replace(
        "<Plugin python>\n", f'<Plugin python>\n  ModulePath "{directory}"\n  Import "{name}"\n', 1
    )


# --------------------------------------------------------------------------- success


def test_push_applies_the_new_config_and_reports_success_after_the_restart(monitor, peer):
    m = start(monitor)
    p = peer(m)
    old_pid, old_text = live_pid(m), m.collectd.conf_path.read_text()
    csv = m.collectd.directory / "csv"
    text = new_config(
        m,
        hostname="replaced-host",
        extra_conf=f'LoadPlugin load\nLoadPlugin csv\n<Plugin csv>\n  DataDir "{csv}"\n</Plugin>\n',
    )
    secret = f"# secret-{next_task_id()}-never-logged"
    text += secret + "\n"
    task_id = push(p, m, text)
    result = p.result_for(m.result_topic, task_id, timeout=RESULT_WAIT)
    assert result["code"] == 0, result["message"] + m.log()[-3000:]
    new_pid = live_pid(m)
    assert new_pid != old_pid and not process_alive(old_pid)
    assert f"pid {new_pid}" in result["message"]
    # The new config is live: its Hostname shows in what collectd writes.
    wait_for(lambda: (csv / "replaced-host").is_dir(), 20, what="values under the new hostname")
    assert m.collectd.conf_path.read_text() == text
    assert m.collectd.conf_path.stat().st_mode & 0o777 == 0o600
    assert (m.collectd.directory / "collectd.conf.bak").read_text() == old_text
    assert not (m.collectd.directory / "collectd.conf.new").exists()
    wait_for(lambda: not outbox_entries(m), 10, what="the delivered outcome to be removed")
    assert [r["task_id"] for r in p.results(m.result_topic)] == [task_id]
    helper_log = m.collectd.directory / f"{REPORT_NAME}.log"
    assert "helper started" in helper_log.read_text()
    assert secret not in m.log() + helper_log.read_text()  # LogLevel is info


def test_send_config_exit_status_tells_a_remote_failure(monitor, tmp_path):
    m = start(monitor)
    conf = tmp_path / "broken.conf"
    conf.write_text(new_config(m) + "<Plugin cpu>\n")
    args = ["--host", m.broker.host, "--topic", m.command_topic, "--result-topic", m.result_topic]
    done = subprocess.run(
        [*CLI, "send-config", str(conf), *args, "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["code"] == ResultCode.REPLACE_CONFIG_BROKEN


def test_the_validation_run_stays_offline(monitor, peer, broker):
    """collectd -T on a config loading our plugin, beside the live daemon with the same ClientId."""
    m = start(monitor)
    p = peer()
    p.subscribe(m.command_topic.rsplit("/", 1)[0] + "/#")
    copy = m.collectd.directory / "copy.conf"
    copy.write_text(m.collectd.conf_path.read_text())
    checked = validate("/usr/sbin/collectd", str(copy), copy.read_text())
    assert checked.loads_remote
    # Our plugin did run inside collectd -T, in offline mode (it logs to the same file)...
    m.collectd.wait_log(r"offline mode \(config validation run\)")
    # ...and never took the live session over or published anything.
    client_id = json.loads(m.config_path.read_text())["ClientId"]
    assert f"Client {client_id} already connected" not in broker.log_path.read_text()
    assert "lost connection" not in m.log()
    assert p.messages == []
    assert m.collectd.pid() is not None


# --------------------------------------------------------------------------- refused early


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("<Plugin cpu>\n", "syntax error"),
        ('LoadPlugin "no_such_plugin_here"\n', 'Could not find plugin "no_such_plugin_here"'),
    ],
    ids=["syntax-error", "unknown-plugin"],
)
def test_a_broken_config_is_refused_and_nothing_changes(monitor, peer, breakage, expected):
    m = start(monitor)
    p = peer(m)
    old_pid, old_text = live_pid(m), m.collectd.conf_path.read_text()
    task_id = push(p, m, new_config(m) + breakage)
    result = p.result_for(m.result_topic, task_id, timeout=RESULT_WAIT)
    assert result["code"] == ResultCode.REPLACE_CONFIG_BROKEN
    assert expected in result["message"]
    assert live_pid(m) == old_pid
    assert m.collectd.conf_path.read_text() == old_text
    assert not (m.collectd.directory / "collectd.conf.new").exists()
    assert not (m.collectd.directory / "collectd.conf.bak").exists()


def test_a_config_without_the_remote_plugin_is_refused(monitor, peer):
    m = start(monitor)
    p = peer(m)
    task_id = push(p, m, dataclasses.replace(m.collectd, modules={}).render_config())
    result = p.result_for(m.result_topic, task_id, timeout=RESULT_WAIT)
    assert result["code"] == ResultCode.REPLACE_CONFIG_BROKEN
    assert "does not load collectd_monitor.remote" in result["message"]


def test_a_foreground_collectd_without_pid_file_cannot_be_replaced(monitor, peer):
    m = monitor(ALLOW, services={**HELLO_SERVICES, "collectd": TIMING})  # -f: no pid file
    p = peer(m)
    task_id = push(p, m, new_config(m, interval=7.0))
    result = p.result_for(m.result_topic, task_id, timeout=RESULT_WAIT)
    assert result["code"] == ResultCode.REPLACE_PATH_NOT_FOUND
    assert "foreground" in result["message"]
    assert m.collectd.proc is not None and m.collectd.proc.poll() is None


def test_a_second_push_while_one_runs_is_refused(monitor, peer):
    m = start(monitor)
    p = peer(m)
    text = new_config(m, interval=7.0)
    first, second = push(p, m, text), push(p, m, text)
    results = [p.result_for(m.result_topic, t, timeout=RESULT_WAIT) for t in (first, second)]
    assert sorted(r["code"] for r in results) == [0, ResultCode.REPLACE_IN_PROGRESS]
    refused = next(r for r in results if r["code"] == ResultCode.REPLACE_IN_PROGRESS)
    assert "already running" in refused["message"]
    assert "Interval 7.0" in m.collectd.conf_path.read_text()


def test_an_unwritable_config_directory_is_reported(monitor, peer, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    m = start(monitor, services={"ReplacerReportPath": str(run_dir / REPORT_NAME)})
    p = peer(m)
    old_pid, old_text = live_pid(m), m.collectd.conf_path.read_text()
    directory = m.collectd.directory
    # Root ignores mode bits; the immutable flag stops even root from adding a file.
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        task_id = push(p, m, new_config(m, interval=7.0))
        result = p.result_for(m.result_topic, task_id, timeout=RESULT_WAIT)
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    assert result["code"] == ResultCode.REPLACE_WRITE_FAILED
    assert "collectd.conf.new" in result["message"]
    assert live_pid(m) == old_pid
    assert m.collectd.conf_path.read_text() == old_text


# --------------------------------------------------------------------------- rollback


DIE_SOON = """
    import os, signal
    import collectd

    def _init():
        if os.environ.get("COLLECTD_MONITOR_OFFLINE"):
            return  # stays quiet in collectd -T
        os.kill(os.getpid(), signal.SIGKILL)  # dies in init, before any settle time

    collectd.register_init(_init)
"""


def test_a_config_that_kills_collectd_after_start_is_rolled_back(monitor, peer, tmp_path):
    m = start(monitor)
    p = peer(m)
    old_pid, old_text = live_pid(m), m.collectd.conf_path.read_text()
    text = with_python_module(new_config(m), tmp_path / "modules", "die_soon", DIE_SOON)
    task_id = push(p, m, text)
    result = p.result_for(m.result_topic, task_id, timeout=RESULT_WAIT)
    assert result["code"] == ResultCode.REPLACE_RECOVERED, result["message"]
    assert "exited" in result["message"]
    assert m.collectd.conf_path.read_text() == old_text
    assert (m.collectd.directory / "collectd.conf.rejected").read_text() == text
    pid = live_pid(m)
    assert pid != old_pid
    # The recovered daemon is the old config's: its plugin still answers commands.
    command = {
        "task_id": next_task_id(),
        "timestamp": format_timestamp(),
        "service": "hello",
        "command": "exec",
    }
    p.send(m.command_topic, command)
    assert p.result_for(m.result_topic, command["task_id"])["message"] == "Hello World!"


def test_a_config_that_breaks_the_plugin_is_rolled_back(monitor, peer, broker, tmp_path):
    m = start(monitor)
    p = peer(m)
    old_text = m.collectd.conf_path.read_text()
    # Valid in every way collectd -T can see, but the plugin is refused by the broker.
    bad = json.loads(m.config_path.read_text())
    bad.update(Host=f"127.0.0.1:{broker.password_port}", User=broker.user, Password="wrong")
    bad_path = tmp_path / "wrong-password.json"
    bad_path.write_text(json.dumps(bad))
    bad_path.chmod(0o600)
    text = new_config(m, modules={"collectd_monitor.remote": {"MonitorConfigPath": str(bad_path)}})
    task_id = push(p, m, text)
    result = p.result_for(m.result_topic, task_id, timeout=RESULT_WAIT)
    assert result["code"] == ResultCode.REPLACE_RECOVERED, result["message"]
    assert "did not connect to the broker" in result["message"]
    assert m.collectd.conf_path.read_text() == old_text
    assert live_pid(m)


# --------------------------------------------------------------------------- broker down


def test_the_result_waits_for_the_broker_to_come_back(monitor, tmp_path):
    if "persistence" not in {f.name for f in dataclasses.fields(Broker)}:
        pytest.skip("sandbox.Broker has no persistence option yet")
    server = Broker(tmp_path / "persistent-broker", persistence=True).start()  # type: ignore[call-arg]
    try:
        m = start(monitor, broker=server)
        old_pid = live_pid(m)
        conf = tmp_path / "new.conf"
        conf.write_text(new_config(m, interval=7.0))
        sender = subprocess.Popen(
            [
                *CLI,
                "send-config",
                str(conf),
                "--host",
                server.host,
                "--topic",
                m.command_topic,
                "--result-topic",
                m.result_topic,
                "--timeout",
                "90",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # The helper holds the lock from validation to its report: take the broker down then.
            lock = lock_path_for(m.collectd.conf_path)
            wait_for(
                lambda: lock.exists() and b"task_id" in lock.read_bytes(),
                30,
                interval=0.005,
                what="the replacement to start",
            )
            server.stop()
            waiting = wait_for(lambda: outbox_entries(m), 60, what="the helper's outcome")
            assert [r["code"] for r in waiting] == [0]
            new_pid = live_pid(m)
            assert new_pid != old_pid
            assert outbox_entries(m)  # nobody could publish it yet
            server.start()
            out, err = sender.communicate(timeout=90)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.communicate()
        assert sender.returncode == 0, err + m.log()[-3000:]
        result = json.loads(out)
        assert result["code"] == 0
        assert "unreachable" in result["message"]
        wait_for(lambda: not outbox_entries(m), 10, what="the delivered outcome to be removed")
    finally:
        server.stop()


# --------------------------------------------------------------------------- the CLI


def replace_cli(m: Monitor, conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *CLI,
            "replace-config",
            str(conf),
            "--config-path",
            str(m.collectd.conf_path),
            "--pid-path",
            str(m.collectd.pid_path),
            "--settle-time",
            "0.5",
            "--connect-timeout",
            "4",
            "--timeout",
            "60",
            "--monitor-config",
            str(m.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_replace_config_from_the_command_line(monitor, tmp_path):
    m = start(monitor)
    old_pid = live_pid(m)
    conf = tmp_path / "new.conf"
    conf.write_text(new_config(m, interval=7.0))
    done = replace_cli(m, conf)
    assert done.returncode == 0, done.stderr + m.log()[-3000:]
    assert json.loads(done.stdout)["code"] == 0
    assert "code 0x0000" in done.stderr
    assert live_pid(m) != old_pid
    assert "Interval 7.0" in m.collectd.conf_path.read_text()

    # The first replacement lasts until its watch ends (it holds the lock until then).
    wait_for(lambda: not helpers_of(tmp_path), 30, what="the helper's watch to end")
    conf.write_text(new_config(m) + "<Plugin cpu>\n")
    broken = replace_cli(m, conf)
    assert broken.returncode == 12, broken.stderr
    assert json.loads(broken.stdout)["code"] == ResultCode.REPLACE_CONFIG_BROKEN
    assert "0x2002" in broken.stderr
    assert "Interval 7.0" in m.collectd.conf_path.read_text()


def test_helper_survives_and_leaves_no_process_behind(monitor, peer, tmp_path):
    """After a push, only the new collectd remains: no helper, no old daemon, no zombie."""
    m = start(monitor)
    p = peer(m)
    task_id = push(p, m, new_config(m, interval=7.0))
    assert p.result_for(m.result_topic, task_id, timeout=RESULT_WAIT)["code"] == 0
    wait_for(
        lambda: not helpers_of(tmp_path),
        20,
        what="the helper to exit",
    )
    daemons = [x for x in pids_of(str(m.collectd.conf_path)) if process_alive(x)]
    assert daemons == [live_pid(m)]
