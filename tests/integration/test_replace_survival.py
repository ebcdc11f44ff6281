"""The host always ends up with a running collectd: faults during a replacement.

Real collectd and mosquitto, as in test_replace.py: a foreign python3 first on
PATH, a daemon that dies after it was reported healthy (WatchTime), the
helper SIGKILLed after each step (its guardian brings collectd back),
collectd under Debian's collectdmon (supervision kept), and an admin's
SIGTERM during the validation (the admin's stop wins).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.replacer.environment import PAUSE_ENV
from collectd_monitor.replacer.manager import read_pid_file
from collectd_monitor.replacer.paths import REPORT_NAME
from collectd_monitor.replacer.procfs import is_collectd, parent_of
from collectd_monitor.testing.sandbox import COLLECTD, process_alive, wait_for

from ..conftest import HELLO_SERVICES, Monitor, pids_of
from .test_replace import (
    CLI,
    RESULT_WAIT,
    TIMING,
    live_pid,
    new_config,
    outbox_entries,
    push,
    with_python_module,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_helper_left")]

COLLECTDMON = "/usr/sbin/collectdmon"
RECOVERY_LIMIT = 30.0
"""The promise: within this long after the helper died, a collectd runs again."""


def start(
    monitor: Any, *, collectd: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> Monitor:
    return monitor(
        {"AllowConfigReplace": True},
        services={**HELLO_SERVICES, "collectd": {**TIMING, **(collectd or {})}},
        daemon=True,
        env=env,
    )


def helper_log(m: Monitor) -> str:
    try:
        return (m.collectd.directory / f"{REPORT_NAME}.log").read_text()
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------- environment


def foreign_python(root: Path) -> Path:
    """A python3 whose standard library cannot load ssl: what a foreign pyenv/conda looks like
    to collectd's embedded interpreter, which finds its stdlib from the python3 on PATH."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (root / "bin").mkdir(parents=True)
    lib = root / "lib" / version
    lib.mkdir(parents=True)
    python = root / "bin" / "python3"
    python.write_text(f'#!/bin/sh\nexec /usr/bin/{version} "$@"\n')
    python.chmod(0o755)
    for entry in Path(f"/usr/lib/{version}").iterdir():
        if entry.name != "ssl.py":
            (lib / entry.name).symlink_to(entry)
    (lib / "ssl.py").write_text('raise ImportError("the standard library of a foreign python3")\n')
    return root / "bin"


def test_replace_config_from_a_shell_with_a_foreign_python3_first_on_path(monitor, tmp_path):
    m = start(monitor)
    old_pid = live_pid(m)
    conf = tmp_path / "new.conf"
    conf.write_text(new_config(m, interval=7.0))
    env = {
        **os.environ,
        "PATH": f"{foreign_python(tmp_path / 'pyenv')}:{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(tmp_path / "pyenv"),
    }
    done = subprocess.run(
        [
            *CLI,
            "replace-config",
            str(conf),
            "--config-path",
            str(m.collectd.conf_path),
            "--pid-path",
            str(m.collectd.pid_path),
            "--monitor-config",
            str(m.config_path),
            "--timeout",
            "60",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr + m.log()[-3000:]
    new_pid = live_pid(m)
    assert new_pid != old_pid
    # The new daemon's plugin imported (ssl included) and connected: the health check saw it.
    assert "foreign python3" not in m.log()
    environ = Path(f"/proc/{new_pid}/environ").read_bytes().split(b"\0")
    assert b"VIRTUAL_ENV=" + str(tmp_path / "pyenv").encode() not in environ
    assert not any(item.startswith(b"PATH=" + str(tmp_path).encode()) for item in environ)


# --------------------------------------------------------------------------- late death

DIE_AFTER_SUCCESS = """
    import os, signal, threading, time
    import collectd

    HELPER_LOG = {helper_log!r}

    def _die_once_reported():
        while "outcome 0x0000" not in open(HELPER_LOG).read():
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    def _init():
        if os.environ.get("COLLECTD_MONITOR_OFFLINE"):
            return  # quiet in collectd -T
        threading.Thread(target=_die_once_reported, daemon=True).start()

    collectd.register_init(_init)
"""


def test_a_daemon_that_dies_after_success_is_rolled_back_with_a_second_result(
    monitor, peer, tmp_path
):
    m = start(monitor, collectd={"WatchTime": 30})
    p = peer(m)
    old_text = m.collectd.conf_path.read_text()
    source = DIE_AFTER_SUCCESS.format(helper_log=str(m.collectd.directory / f"{REPORT_NAME}.log"))
    text = with_python_module(new_config(m), tmp_path / "modules", "die_later", source)
    task_id = push(p, m, text)
    first = p.result_for(m.result_topic, task_id, timeout=RESULT_WAIT)
    assert first["code"] == 0, first["message"] + helper_log(m)

    def second() -> dict[str, Any] | None:
        results = [r for r in p.results(m.result_topic) if r["task_id"] == task_id]
        return results[1] if len(results) > 1 else None

    late = wait_for(second, RESULT_WAIT, what="the late-death result")
    assert late["code"] == ResultCode.REPLACE_RECOVERED, late["message"]
    assert "late death" in late["message"]
    assert m.collectd.conf_path.read_text() == old_text
    assert live_pid(m)
    assert not (m.collectd.directory / "collectd.conf.new").exists()


# --------------------------------------------------------------------------- helper killed


@pytest.mark.parametrize("step", ["stopped", "swapped", "started"])
def test_a_helper_killed_midway_leaves_collectd_running(monitor, peer, step):
    m = start(monitor, env={PAUSE_ENV: step})
    p = peer(m)
    old_text = m.collectd.conf_path.read_text()
    task_id = push(p, m, new_config(m, interval=7.0))
    marker = f"paused after step {step} (test hook), pid "
    line = wait_for(
        lambda: next((x for x in helper_log(m).splitlines() if marker in x), None),
        RESULT_WAIT,
        what=f"the helper to pause after {step}",
    )
    os.kill(int(line.rsplit(" ", 1)[1]), signal.SIGKILL)
    wait_for(lambda: m.collectd.pid(), RECOVERY_LIMIT, what="a collectd to run again")
    result = p.result_for(m.result_topic, task_id, timeout=RESULT_WAIT)
    assert result["code"] == ResultCode.REPLACE_RECOVERED, result["message"]
    assert "SIGKILL" in result["message"]
    assert m.collectd.conf_path.read_text() == old_text
    assert not (m.collectd.directory / "collectd.conf.new").exists()
    daemons = [x for x in pids_of(str(m.collectd.conf_path)) if is_collectd(x) and process_alive(x)]
    assert daemons == [live_pid(m)]


# --------------------------------------------------------------------------- collectdmon


def test_collectd_under_collectdmon_is_replaced_and_stays_supervised(monitor, peer):
    m = start(monitor)
    m.collectd.stop()
    offset = len(m.log())
    monitor_pid_file = m.collectd.directory / "collectdmon.pid"
    subprocess.run(
        [
            COLLECTDMON,
            "-c",
            COLLECTD,
            "-P",
            str(monitor_pid_file),
            "--",
            "-C",
            str(m.collectd.conf_path),
        ],
        check=True,
        timeout=15,
    )
    try:
        supervisor = wait_for(lambda: read_pid_file(monitor_pid_file), 15, what="collectdmon")

        def child() -> int | None:
            found = [
                pid
                for pid in pids_of(str(m.collectd.conf_path))
                if process_alive(pid) and parent_of(pid) == supervisor
            ]
            return found[0] if found else None

        old_child = wait_for(child, 15, what="collectd under collectdmon")
        wait_for(lambda: "collectdmon mode" in m.log()[offset:], 15, what="the plugin under it")
        wait_for(lambda: "connected to" in m.log()[offset:], 15, what="the plugin to connect")
        p = peer(m)
        task_id = push(p, m, new_config(m, interval=7.0))
        result = p.result_for(m.result_topic, task_id, timeout=RESULT_WAIT)
        assert result["code"] == 0, result["message"] + helper_log(m)
        assert "Interval 7.0" in m.collectd.conf_path.read_text()
        new_child = child()
        assert new_child is not None and new_child != old_child
        assert process_alive(supervisor)  # collectdmon was never stopped: supervision kept
        assert f"pid {new_child}" in result["message"]
    finally:
        for pid in pids_of(f"{COLLECTDMON} -c"):
            if str(monitor_pid_file) in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGTERM)  # collectdmon stops collectd, then itself
                wait_for(lambda p=pid: not process_alive(p), 15, what="collectdmon to exit")


# --------------------------------------------------------------------------- the admin's stop

SLOW_VALIDATION = """
    import os, time
    import collectd

    def _init():
        if os.environ.get("COLLECTD_MONITOR_OFFLINE"):
            time.sleep(20)  # only in collectd -T: a validation that takes a while

    collectd.register_init(_init)
"""


def test_sigterm_to_collectd_during_validation_wins(monitor, peer, tmp_path):
    m = start(monitor)
    p = peer(m)
    old_pid, old_text = live_pid(m), m.collectd.conf_path.read_text()
    new = m.collectd.directory / "collectd.conf.new"
    text = with_python_module(new_config(m), tmp_path / "modules", "slow_check", SLOW_VALIDATION)
    task_id = push(p, m, text)
    wait_for(lambda: pids_of(f"-T -C {new}"), 30, what="the validation run")
    os.kill(old_pid, signal.SIGTERM)
    wait_for(lambda: not process_alive(old_pid), 30, what="collectd to stop")
    assert not new.exists()
    assert not pids_of(f"-T -C {new}")
    assert m.collectd.conf_path.read_text() == old_text
    assert m.collectd.pid() is None  # stopped, and nothing started it again
    assert not helper_log(m)
    # Its result went out before the plugin disconnected, or waits in the outbox.
    told = [r for r in outbox_entries(m) + p.results(m.result_topic) if r["task_id"] == task_id]
    assert told and {r["code"] for r in told} == {ResultCode.REPLACE_STOPPED_OUTSIDE}
