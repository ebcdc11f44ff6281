"""The remote and local plugins loaded together in one collectd."""

from __future__ import annotations

import socket
import textwrap
import time

import pytest

from collectd_monitor.testing.sandbox import wait_for

from ..conftest import command_message

pytestmark = pytest.mark.integration


def putval(path: str, line: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(line.encode())
        assert sock.makefile().readline().startswith("0 ")


def test_both_plugins_share_one_executor(monitor, peer, tmp_path):
    """With one command slot for the host, a local repair waits for a remote command."""
    sock = tmp_path / "both.sock"
    slow_end, fix_start = tmp_path / "slow-end", tmp_path / "fix-start"
    services = {
        "svc": {
            "commands": {
                "slow": f"sleep 1.5; date +%s.%N > {slow_end}; echo remote-done",
                "fix": f"date +%s.%N > {fix_start}; echo local-fix",
            }
        }
    }
    rules = {
        "Values": [
            {
                "Name": "app_low",
                "Plugin": "app",
                "Type": "gauge",
                "Below": 10,
                "Hits": 1,
                "Cooldown": 0,
                "Action": {"Service": "svc", "Command": "fix"},
            }
        ]
    }
    config = {"MaxConcurrentCommands": 1, "Rules": rules, "LogLevel": "debug"}  # "running"
    m = monitor(
        config,
        services=services,
        plugins=("collectd_monitor.remote", "collectd_monitor.local"),
        extra_conf=textwrap.dedent(f"""
            WriteThreads 1
            LoadPlugin unixsock
            <Plugin unixsock>
              SocketFile "{sock}"
            </Plugin>
        """),
    )
    wait_for(sock.exists, 10, what="unixsock")
    p = peer(m)
    message = command_message("svc", "slow")
    p.send(m.command_topic, message)
    m.collectd.wait_log(f"task {message['task_id']}: running svc/slow")
    putval(str(sock), f"PUTVAL {m.collectd.hostname}/app/gauge interval=1 {time.time():.0f}:5\n")
    assert p.result_for(m.result_topic, message["task_id"])["message"] == "remote-done"
    m.collectd.wait_log("local-fix")
    assert float(fix_start.read_text()) >= float(slow_end.read_text())  # it waited for the slot
