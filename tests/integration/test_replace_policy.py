"""Who may replace collectd.conf, what of a pushed config may run, and on which daemon.

Real collectd (daemonized, pid file) and mosquitto. A pushed config here
carries two things that would leave a mark if any of it ran:

* ``exec`` plugin lines that ``touch`` a marker as user ``nobody`` (the exec
  plugin refuses to run programs as root), in a directory ``nobody`` may write;
* a python module of our own whose import writes a second marker.

``collectd -T`` runs plugin init and a read cycle, so a config that reaches it
leaves a marker; the positive control below checks that on this machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import format_timestamp
from collectd_monitor.commands.security import Signer
from collectd_monitor.replacer.paths import REPORT_NAME
from collectd_monitor.replacer.procfs import find_collectd_pids
from collectd_monitor.testing.sandbox import COLLECTD, process_alive, wait_for

from ..conftest import (
    HELLO_SERVICES,
    Monitor,
    command_message,
    helpers_of,
    next_task_id,
    pids_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_helper_left")]

CLI = [sys.executable, "-m", "collectd_monitor"]
TIMING = {
    "SettleTime": 0.5,
    "ConnectTimeout": 4,
    "StopTimeout": 15,
    "StartTimeout": 15,
    "WatchTime": 1,  # the helper watches a new daemon this long after success
}
RESULT_WAIT = 60.0
HMAC_SECRET = "a shared secret of more than sixteen bytes"


@pytest.fixture
def marks(tmp_path: Path) -> Iterator[Marks]:
    # pytest's tmp_path is private to root; the exec plugin's program runs as nobody.
    shared = Path(tempfile.mkdtemp(prefix="cm-policy-"))
    shared.chmod(0o777)
    yield Marks(shared / "exec-ran", tmp_path / "import-ran", tmp_path / "modules")
    shutil.rmtree(shared, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Marks:
    exec_marker: Path
    import_marker: Path
    modules: Path

    def config_part(self) -> str:
        """collectd.conf lines that leave the markers if collectd runs them."""
        line = f'  Exec "nobody" "/usr/bin/touch" "{self.exec_marker}"\n'
        return "LoadPlugin exec\n<Plugin exec>\n" + line * 3 + "</Plugin>\n"

    def with_module(self, text: str) -> str:
        """Add a python module whose import writes the second marker."""
        self.modules.mkdir(exist_ok=True)
        (self.modules / "leaves_a_mark.py").write_text(
            f"open({str(self.import_marker)!r}, 'w').close()\n"
        )
        block = f'  ModulePath "{self.modules}"\n  Import "leaves_a_mark"\n'
        if "<Plugin python>\n" in text:
            return text.replace("<Plugin python>\n", "<Plugin python>\n" + block, 1)
        return text + f"LoadPlugin python\n<Plugin python>\n{block}</Plugin>\n"

    def none_left(self) -> bool:
        return not self.exec_marker.exists() and not self.import_marker.exists()


def start(
    monitor: Any,
    settings: dict[str, Any] | None = None,
    *,
    collectd: dict[str, Any] | None = None,
    allow: bool = True,
) -> Monitor:
    top = {"AllowConfigReplace": True} if allow else {}
    services = {**HELLO_SERVICES, "collectd": {**TIMING, **(collectd or {})}}
    return monitor({**top, **(settings or {})}, services=services, daemon=True)


def new_config(m: Monitor, **changes: Any) -> str:
    return dataclasses.replace(m.collectd, **changes).render_config()


def push_message(text: str) -> dict[str, Any]:
    return {"task_id": next_task_id(), "timestamp": format_timestamp(), "config": text}


def live_pid(m: Monitor) -> int:
    pid = m.collectd.pid()
    assert pid is not None, m.log()[-3000:]
    return pid


def daemons_on(conf: Path) -> list[int]:
    """Running collectd processes whose command line names ``conf``."""
    return [p for p in find_collectd_pids() if p in pids_of(str(conf)) and process_alive(p)]


# --------------------------------------------------------------------------- the control


def test_control_collectd_T_runs_the_exec_plugin_and_the_import(monitor, marks, tmp_path):
    """The markers do appear when collectd -T runs the config: the other tests mean something."""
    m = start(monitor)
    conf = tmp_path / "control.conf"
    text = marks.with_module(new_config(m, extra_conf=marks.config_part()))
    conf.write_text(text)
    # The exec plugin's child may be stopped by collectd's shutdown before it ran: retry.
    for _ in range(10):
        subprocess.run([COLLECTD, "-T", "-C", str(conf)], capture_output=True, timeout=60)
        try:
            wait_for(marks.exec_marker.exists, 2, what="the exec plugin's marker")
            break
        except TimeoutError:
            continue
    assert marks.exec_marker.exists()
    assert marks.import_marker.exists()


# --------------------------------------------------------------------------- trust


def test_a_push_on_a_default_host_is_refused_and_nothing_of_it_runs(monitor, peer, marks):
    m = start(monitor, allow=False)
    p = peer(m)
    old_pid, old_text = live_pid(m), m.collectd.conf_path.read_text()
    message = push_message(marks.with_module(new_config(m, extra_conf=marks.config_part())))
    p.send(m.command_topic, message)
    result = p.result_for(m.result_topic, message["task_id"], timeout=RESULT_WAIT)
    assert result["code"] == ResultCode.NOT_IMPLEMENTED, result["message"]
    assert "AllowConfigReplace" in result["message"]
    assert marks.none_left()
    assert live_pid(m) == old_pid
    assert m.collectd.conf_path.read_text() == old_text
    assert not (m.collectd.directory / "collectd.conf.new").exists()


def test_with_signing_keys_an_unsigned_push_is_refused_and_a_signed_one_applies(
    monitor, peer, marks
):
    # RequireSignature false: unsigned commands still run, config pushes never do.
    m = start(
        monitor,
        {"Security": {"HmacKeys": {"central": HMAC_SECRET}, "RequireSignature": False}},
    )
    p = peer(m)
    old_pid = live_pid(m)
    unsigned = push_message(marks.with_module(new_config(m, extra_conf=marks.config_part())))
    p.send(m.command_topic, unsigned)
    result = p.result_for(m.result_topic, unsigned["task_id"], timeout=RESULT_WAIT)
    assert result["code"] == ResultCode.SIGNATURE_MISSING, result["message"]
    assert "config push" in result["message"]
    assert marks.none_left()
    assert live_pid(m) == old_pid
    command = command_message("hello", "exec")
    p.send(m.command_topic, command)
    assert p.result_for(m.result_topic, command["task_id"])["code"] == 0

    key = m.collectd.directory / "central.secret"
    key.write_text(HMAC_SECRET)
    signed = Signer.from_file(str(key), "central").sign(
        m.command_topic, push_message(new_config(m, interval=7.0))
    )
    p.send(m.command_topic, signed)
    result = p.result_for(m.result_topic, signed["task_id"], timeout=RESULT_WAIT)
    assert result["code"] == 0, result["message"] + m.log()[-3000:]
    assert "Interval 7.0" in m.collectd.conf_path.read_text()


# --------------------------------------------------------------------------- static checks


def test_a_config_without_the_remote_plugin_is_refused_before_any_of_it_runs(monitor, peer, marks):
    m = start(monitor)
    p = peer(m)
    old_pid = live_pid(m)
    text = new_config(m, modules={}, extra_conf=marks.config_part())
    message = push_message(marks.with_module(text))
    p.send(m.command_topic, message)
    result = p.result_for(m.result_topic, message["task_id"], timeout=RESULT_WAIT)
    assert result["code"] == ResultCode.REPLACE_CONFIG_BROKEN, result["message"]
    assert "collectd_monitor.remote" in result["message"]
    assert "collectd -T" not in result["message"]
    assert marks.none_left()
    assert live_pid(m) == old_pid


def test_a_syntax_error_is_refused_before_any_of_it_runs(monitor, peer, marks):
    m = start(monitor)
    p = peer(m)
    text = marks.with_module(new_config(m, extra_conf=marks.config_part())) + "<Plugin cpu>\n"
    message = push_message(text)
    p.send(m.command_topic, message)
    result = p.result_for(m.result_topic, message["task_id"], timeout=RESULT_WAIT)
    assert result["code"] == ResultCode.REPLACE_CONFIG_BROKEN, result["message"]
    assert "<Plugin cpu>" in result["message"] and "never closed" in result["message"]
    assert marks.none_left()


# --------------------------------------------------------------------------- the service


def test_the_replacers_start_and_stop_lines_are_not_remote_commands(monitor, peer):
    pid_file = "PIDFILE"
    lines = {
        "start": f"{COLLECTD} -C CONF -P {pid_file}",
        "stop": f"kill $(cat {pid_file})",
        "status": f"test -s {pid_file} && echo running",
    }
    m = start(monitor)
    pid_path = m.collectd.pid_path
    commands = {
        name: line.replace("PIDFILE", str(pid_path)).replace("CONF", str(m.collectd.conf_path))
        for name, line in lines.items()
    }
    config = json.loads(m.config_path.read_text())
    config["Services"]["collectd"]["commands"] = commands
    m.config_path.write_text(json.dumps(config))
    m.collectd.stop()
    m.collectd.start(daemon=True, wait_log="connected to", timeout=20)
    p = peer(m)
    pid = live_pid(m)
    for name in ("stop", "Stop", "start"):
        request = command_message("collectd", name)
        p.send(m.command_topic, request)
        result = p.result_for(m.result_topic, request["task_id"])
        assert result["code"] == ResultCode.UNKNOWN_COMMAND, result
        assert "reserved for the config replacer" in result["message"]
    status = command_message("collectd", "status")
    p.send(m.command_topic, status)
    assert p.result_for(m.result_topic, status["task_id"])["message"] == "running"
    assert live_pid(m) == pid


# --------------------------------------------------------------------------- paths


def replace_cli(
    m: Monitor, conf: Path, *extra: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *CLI,
            "replace-config",
            str(conf),
            "--settle-time",
            "0.5",
            "--watch-time",
            "1",
            "--connect-timeout",
            "4",
            "--timeout",
            "60",
            "--monitor-config",
            str(m.config_path),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cwd,
    )


def test_replace_config_with_relative_paths(monitor, tmp_path):
    m = start(monitor)
    old_pid = live_pid(m)
    conf = tmp_path / "new.conf"
    conf.write_text(new_config(m, interval=7.0))
    directory = m.collectd.directory
    done = replace_cli(
        m,
        conf,
        "--config-path",
        os.path.relpath(m.collectd.conf_path, tmp_path),
        "--pid-path",
        os.path.relpath(m.collectd.pid_path, tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr + m.log()[-3000:]
    assert f"working directory {tmp_path}" in done.stderr
    new_pid = live_pid(m)
    assert new_pid != old_pid and not process_alive(old_pid)
    assert "Interval 7.0" in m.collectd.conf_path.read_text()
    assert daemons_on(m.collectd.conf_path) == [new_pid]
    assert (directory / f"{REPORT_NAME}.log").exists()


def test_a_wrong_pid_path_with_collectd_running_is_refused(monitor, tmp_path):
    m = start(monitor)
    old_pid = live_pid(m)
    conf = tmp_path / "new.conf"
    conf.write_text(new_config(m, interval=7.0))
    wrong = tmp_path / "elsewhere.pid"
    try:
        done = replace_cli(
            m,
            conf,
            "--config-path",
            str(m.collectd.conf_path),
            "--pid-path",
            str(wrong),
        )
        daemons = daemons_on(m.collectd.conf_path)
    finally:
        for pid in daemons_on(m.collectd.conf_path):
            if pid != old_pid:
                os.kill(pid, 9)
    assert done.returncode == 21, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["code"] == ResultCode.REPLACE_PID_FILE_MISMATCH
    assert f"pid {old_pid}" in result["message"] and str(wrong) in result["message"]
    assert daemons == [old_pid]
    assert live_pid(m) == old_pid
    assert "Interval 7.0" not in m.collectd.conf_path.read_text()
    assert not (m.collectd.directory / "collectd.conf.new").exists()


def test_a_wrong_pid_path_in_config_json_refuses_pushes(monitor, peer, tmp_path):
    m = start(monitor, collectd={"PIDPath": str(tmp_path / "elsewhere.pid")})
    p = peer(m)
    old_pid = live_pid(m)
    message = push_message(new_config(m, interval=7.0))
    try:
        p.send(m.command_topic, message)
        result = p.result_for(m.result_topic, message["task_id"], timeout=RESULT_WAIT)
        daemons = daemons_on(m.collectd.conf_path)
    finally:
        for pid in daemons_on(m.collectd.conf_path):
            if pid != old_pid:
                os.kill(pid, 9)
    assert result["code"] == ResultCode.REPLACE_PID_FILE_MISMATCH, result["message"]
    assert daemons == [old_pid]


def test_two_replacements_of_one_config_are_refused_whatever_the_report_path(monitor, tmp_path):
    m = start(monitor)
    conf = tmp_path / "new.conf"
    conf.write_text(new_config(m, interval=7.0))
    common = ("--config-path", str(m.collectd.conf_path), "--pid-path", str(m.collectd.pid_path))
    argv = [*CLI, "replace-config", str(conf), *common, "--settle-time", "0.5", "--watch-time", "1"]
    argv += ["--connect-timeout", "4", "--monitor-config", str(m.config_path)]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Its helper holds the lock from validation to the outcome.
        wait_for(
            lambda: helpers_of(tmp_path),
            60,
            interval=0.005,
            what="the first replacement's helper",
        )
        second = subprocess.run(
            [*argv, "--report-path", str(tmp_path / "another-report.json")],
            capture_output=True,
            text=True,
            timeout=90,
        )
        out, err = first.communicate(timeout=90)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert json.loads(out)["code"] == 0, err
    assert second.returncode == 10, second.stdout + second.stderr
    assert "already running" in json.loads(second.stdout)["message"]
    assert len(daemons_on(m.collectd.conf_path)) == 1
