"""Fan-out (``--to PATTERN``) against real mosquitto and real collectd hosts.

Every host runs a command that leaves a marker file named after the host, so
the tests see which hosts really ran it, not only what the sender printed.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.cli import main
from collectd_monitor.codes import ResultCode
from collectd_monitor.fleet.history import open_history
from collectd_monitor.testing.sandbox import Broker

from ..conftest import Monitor, MonitorFactory

pytestmark = pytest.mark.integration

# Short waits keep the suite fast; the helper's checks stay the real ones.
TIMING = {"SettleTime": 0.5, "ConnectTimeout": 4, "StopTimeout": 15, "StartTimeout": 15}


@dataclass
class Fleet:
    prefix: str
    hosts: dict[str, Monitor]
    marks: Path

    def args(self, broker: Broker) -> list[str]:
        return [
            "--host", broker.host,
            "--status-topic", f"{self.prefix}/+/status",
            "--topic", f"{self.prefix}/+/command",
            "--result-topic", f"{self.prefix}/+/result",
        ]  # fmt: skip

    def marked(self) -> list[str]:
        return sorted(path.name for path in self.marks.iterdir())


def start_fleet(
    monitor: MonitorFactory,
    tmp_path: Path,
    names: list[str],
    *,
    settings: dict[str, Any] | None = None,
    extra_services: dict[str, Any] | None = None,
    daemon: bool = False,
) -> Fleet:
    """collectd hosts on ``PREFIX/NAME/{command,result,status}``, each with ``mark`` commands."""
    prefix = f"fanout-{uuid.uuid4().hex[:8]}"
    marks = tmp_path / "marks"
    marks.mkdir()
    hosts = {}
    for name in names:
        mark = str(marks / name)
        services = {
            "mark": {
                "commands": {
                    "touch": ["/usr/bin/touch", mark],
                    "fail": ["/bin/sh", "-c", f'touch "{mark}"; exit 3'],
                }
            },
            **(extra_services or {}),
        }
        topics = {
            "CommandTopic": f"{prefix}/{name}/command",
            "CommandResultTopic": f"{prefix}/{name}/result",
            "StatusTopic": f"{prefix}/{name}/status",
        }
        hosts[name] = monitor({**topics, **(settings or {})}, services=services, daemon=daemon)
    return Fleet(prefix, hosts, marks)


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def results(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_a_glob_reaches_exactly_the_matching_online_hosts(monitor, broker, cli, tmp_path):
    fleet = start_fleet(monitor, tmp_path, ["web-1", "web-2", "web-3", "db-1"])
    fleet.hosts["web-3"].collectd.stop()  # its retained status says offline now
    history = str(tmp_path / "history.sqlite3")
    base = [*fleet.args(broker), "--history", history]

    code, out, err = cli("send-command", "mark", "touch", "--to", "web-*", *base)
    assert code == 0, err
    got = results(out)
    assert sorted(r["host"] for r in got) == ["web-1", "web-2"]
    assert all(r["code"] == 0 and isinstance(r["task_id"], int) for r in got)
    assert fleet.marked() == ["web-1", "web-2"]  # not db-1, not the offline web-3
    assert "left out 1 offline host(s): web-3" in err
    assert err.splitlines()[-1].startswith("collectd-monitor: 2 host(s): 2 ok;")

    # the history has each request with its result, task_ids as printed
    store = open_history(history)
    try:
        entries = store.entries()
    finally:
        store.close()
    assert sorted((e.host, e.task_id, e.kind, e.service, e.command, e.code) for e in entries) == (
        sorted((r["host"], r["task_id"], "command", "mark", "touch", 0) for r in got)
    )
    assert all(e.sender and "@" in e.sender and e.duration is not None for e in entries)
    code, out, err = cli("history", "--history", history, "--host", "web-*", "--json")
    assert code == 0 and len(out.splitlines()) == 2

    # an offline host, asked for explicitly, times out; the others still answer
    code, out, err = cli(
        "send-command", "mark", "touch", "--to", "web-3", "--to", "db-1", "--include-offline",
        "--timeout", "2", *base,
    )  # fmt: skip
    assert code == 1
    assert [r["host"] for r in results(out)] == ["db-1"]
    assert "1 timed out: web-3" in err.splitlines()[-1]
    assert fleet.marked() == ["db-1", "web-1", "web-2"]


def test_a_pattern_that_matches_no_host_is_refused(monitor, broker, cli, tmp_path):
    fleet = start_fleet(monitor, tmp_path, ["web-1", "web-2"])
    fleet.hosts["web-2"].collectd.stop()
    for pattern, words in (
        ("mail-*", "no online host matches 'mail-*': 2 host(s) known"),
        ("web-2", "offline hosts match with --include-offline"),
    ):
        code, out, err = cli("send-command", "mark", "touch", "--to", "web-1", "--to", pattern,
                             *fleet.args(broker), "--no-history")  # fmt: skip
        assert (code, out) == (1, "")
        assert len(err.splitlines()) == 1 and words in err, err
    assert fleet.marked() == []  # nothing is sent when any pattern matches nothing


def test_abort_after_stops_sending_new_requests(monitor, broker, cli, tmp_path):
    fleet = start_fleet(monitor, tmp_path, ["f-1", "f-2", "f-3", "f-4"])
    code, out, err = cli(
        "send-command", "mark", "fail", "--to", "f-*", "--parallel", "1", "--abort-after", "2",
        *fleet.args(broker), "--no-history",
    )  # fmt: skip
    assert code == 1
    assert [(r["host"], r["code"]) for r in results(out)] == [("f-1", 3), ("f-2", 3)]
    assert fleet.marked() == ["f-1", "f-2"]
    last = err.splitlines()[-1]
    assert (
        "2 failed: f-1 (3), f-2 (3)" in last and "2 not sent (aborted after 2 failure(s))" in last
    )


def test_a_rolling_push_stops_after_a_failed_canary(monitor, broker, peer, cli, tmp_path):
    fleet = start_fleet(
        monitor,
        tmp_path,
        ["c-1", "c-2", "c-3"],
        settings={"AllowConfigReplace": True},
        extra_services={"collectd": TIMING},
        daemon=True,
    )
    watcher = peer()
    watcher.subscribe(f"{fleet.prefix}/+/command")
    canary = fleet.hosts["c-1"]
    before = {name: m.collectd.conf_path.read_text() for name, m in fleet.hosts.items()}
    broken = tmp_path / "broken.conf"
    broken.write_text(dataclasses.replace(canary.collectd).render_config() + "<Plugin cpu>\n")
    history = str(tmp_path / "history.sqlite3")

    code, out, err = cli(
        "send-config", str(broken), "--to", "c-*", "--timeout", "60", *fleet.args(broker),
        "--history", history,
    )  # fmt: skip
    assert code == 1, err
    (result,) = results(out)
    assert (result["host"], result["code"]) == ("c-1", ResultCode.REPLACE_CONFIG_BROKEN)
    assert "2 not sent (aborted after 1 failure(s))" in err.splitlines()[-1]
    assert [topic for topic, _ in watcher.messages] == [f"{fleet.prefix}/c-1/command"]
    assert {name: m.collectd.conf_path.read_text() for name, m in fleet.hosts.items()} == before
    store = open_history(history)
    try:
        (entry,) = store.entries()
    finally:
        store.close()
    assert (entry.host, entry.kind, entry.code) == (
        "c-1",
        "config",
        ResultCode.REPLACE_CONFIG_BROKEN,
    )


def test_presence_of_more_hosts_than_the_broker_queues_per_client(broker, peer):
    """mosquitto queues 1000 QoS 1 messages per client by default and drops the rest."""
    from collectd_monitor.config import BrokerSettings
    from collectd_monitor.fleet.presence import read_statuses

    prefix = f"many-{uuid.uuid4().hex[:8]}"
    publisher = peer()
    for n in range(1500):
        info = publisher.client.publish(
            f"{prefix}/h{n:04d}/status", json.dumps({"status": "online"}), qos=1, retain=True
        )
    info.wait_for_publish(30)
    settings = BrokerSettings(host="127.0.0.1", port=broker.port)
    statuses = read_statuses(settings, f"{prefix}/+/status")
    assert len(statuses) == 1500
