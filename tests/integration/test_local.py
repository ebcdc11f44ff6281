"""The local plugin inside a real collectd, fed with real values and notifications.

Values go in through collectd's ``unixsock`` plugin (PUTVAL with explicit
timestamps, one per "interval"); what the plugin did comes out as
notifications, which collectd's ``logfile`` plugin prints line by line.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.rules import notify
from collectd_monitor.sandbox import Collectd, wait_for

pytestmark = pytest.mark.integration

NOTE = re.compile(
    r"Notification: severity = (?P<severity>\w+), host = (?P<host>[^,]*), "
    r"plugin = (?P<plugin>[^,]*), (?:plugin_instance = (?P<plugin_instance>[^,]*), )?"
    r"type = (?P<type>[^,]*), (?:type_instance = (?P<type_instance>[^,]*), )?"
    r"message = (?P<message>.*)$",
    re.M,
)
SLOW = 8.0
"""Deadline for anything a test waits for (generous: never a timing assertion)."""


@dataclass
class Local:
    collectd: Collectd
    config_path: Path
    rules_dir: Path
    socket_path: Path
    hostname: str
    clock: float = field(default_factory=lambda: float(int(time.time())) - 1000)

    def log(self) -> str:
        return self.collectd.log_text()

    def putval(self, identifier: str, *values: float, interval: float = 1.0) -> None:
        """One PUTVAL, one interval later than the previous one."""
        self.clock += interval
        joined = ":".join(repr(v) for v in values)
        line = f"PUTVAL {self.hostname}/{identifier} interval={interval} {self.clock}:{joined}\n"
        self.command(line)

    def putnotif(self, severity: str, message: str, **fields: str) -> None:
        parts = " ".join(f"{k}={v}" for k, v in fields.items())
        self.command(f"PUTNOTIF severity={severity} time={time.time():.3f} "
                     f"host={self.hostname} {parts} message=\"{message}\"\n")

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode())
            reply = sock.makefile().readline()
        assert reply.startswith("0 "), f"{line.strip()} -> {reply.strip()}"
        return reply

    def ours(self) -> list[dict[str, Any]]:
        """Notifications the local plugin dispatched, oldest first, message decoded."""
        found = []
        for match in NOTE.finditer(self.log()):
            note = {k: v or "" for k, v in match.groupdict().items()}
            if note["plugin"] == notify.PLUGIN_NAME:
                note["json"] = json.loads(note["message"])
                found.append(note)
        return found

    def wait_ours(self, count: int = 1, type_instance: str | None = None,
                  timeout: float = SLOW) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            notes = [n for n in self.ours()
                     if type_instance is None or n["type_instance"] == type_instance]
            return notes if len(notes) >= count else None

        try:
            return wait_for(enough, timeout, what=f"{count} notification(s)")  # type: ignore[no-any-return]
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- log ---\n{self.log()[-4000:]}") from None


@dataclass
class LocalFactory:
    tmp_path: Path
    started: list[Collectd] = field(default_factory=list)

    def __call__(
        self,
        *,
        rules: dict[str, Any] | None = None,
        files: dict[str, str] | None = None,
        services: dict[str, Any] | None = None,
        extra_conf: str = "",
        settings: dict[str, Any] | None = None,
        wait: str | None = "Initialization complete",
    ) -> Local:
        directory = self.tmp_path / f"collectd-{len(self.started)}"
        rules_dir = directory / "local"
        rules_dir.mkdir(parents=True)
        for name, text in (files or {}).items():
            (rules_dir / name).write_text(textwrap.dedent(text))
        config: dict[str, Any] = {
            "Services": services if services is not None else {
                "hello": {"Commands": {"exec": 'echo "Hello World!"'}},
            },
            "LocalMonitorConfigDir": str(rules_dir),
            **(settings or {}),
        }
        if rules is not None:
            config["Rules"] = rules
        config_path = directory / "config.json"
        config_path.write_text(json.dumps(config, indent=2))
        socket_path = directory / "sock"
        hostname = f"local-{len(self.started)}"
        conf = textwrap.dedent(f"""
            LoadPlugin unixsock
            <Plugin unixsock>
              SocketFile "{socket_path}"
              SocketPerms "0600"
            </Plugin>
        """) + extra_conf
        collectd = Collectd(
            directory,
            modules={"collectd_monitor.local": {"MonitorConfigPath": str(config_path)}},
            hostname=hostname,
            interval=1.0,
            extra_conf=conf,
        )
        self.started.append(collectd)
        collectd.start(wait_log=wait)
        wait_for(socket_path.exists, SLOW, what="unixsock socket")
        return Local(collectd, config_path, rules_dir, socket_path, hostname)

    def stop_all(self) -> None:
        for collectd in self.started:
            collectd.stop()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalFactory]:
    factory = LocalFactory(tmp_path)
    yield factory
    factory.stop_all()


def value_rule(name: str, **fields: Any) -> dict[str, Any]:
    rule = {"Name": name, "Plugin": "app", "Type": "gauge",
            "Action": {"Service": "hello", "Command": "exec"}, "Cooldown": 0}
    rule.update(fields)
    return rule


# --------------------------------------------------------------------------- rule files


HELLO_FILE = """
    def memory_free_is_low(metric):
        if metric.plugin == "app" and metric.type == "gauge" and metric.values[0] < 10:
            assert metric.dsnames == ("value",) and metric.dstypes == ("gauge",)
            assert metric.host.startswith("local-") and metric.interval == 1.0
            return {"service": "hello", "command": "exec"}

    metric_handlers = memory_free_is_low
"""


def test_python_handler_fires_and_notifies_with_the_documented_fields(local):
    m = local(files={"example.py": HELLO_FILE})
    m.putval("app-x/gauge-free", 50)
    m.putval("app-x/gauge-free", 5)
    note = m.wait_ours()[0]
    assert note["severity"] == "OKAY"
    assert note["plugin"] == "collectd_monitor.local"
    assert note["type"] == "commands"
    assert note["type_instance"] == "example.py::metric::memory_free_is_low"
    assert note["host"] == m.hostname
    assert set(note["json"]) == {"task_id", "code", "message"}
    assert note["json"]["code"] == 0
    assert note["json"]["message"] == "Hello World!"
    assert isinstance(note["json"]["task_id"], int)
