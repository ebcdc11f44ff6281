"""Central detection: a real central collectd watching real host collectds.

The hosts (collectd with the remote plugin, requiring signed commands) get
values through their unixsock plugin and forward them to the central collectd
with the network plugin (or collectd's own mqtt plugin); the central plugin
judges them and sends signed commands back over the test mosquitto; the hosts
run them (a marker file). What the central decided comes out as notifications
in the central collectd's log.
"""

from __future__ import annotations

import json
import socket
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.fleet.history import open_history
from collectd_monitor.fleetrules.notes import PLUGIN_NAME
from collectd_monitor.rules.declarative import parse_rules
from collectd_monitor.rules.threshold import compile_rules, read_types_db_ranges
from collectd_monitor.testing.sandbox import TYPES_DB, Broker, Collectd, free_port, wait_for

from ..conftest import Peer, command_message
from .test_local import NOTE

pytestmark = pytest.mark.integration

SLOW = 15.0
SECRET = "central signing secret, long enough"


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


@dataclass
class Node:
    """A collectd (host or central) with a unixsock to put values in."""

    name: str
    collectd: Collectd
    directory: Path
    clock: float = field(default_factory=lambda: float(int(time.time())) - 5000)

    @property
    def socket_path(self) -> Path:
        return self.directory / "sock"

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode())
            reply = sock.makefile().readline()
        assert reply.startswith("0 ") or reply.startswith("1 "), f"{line.strip()} -> {reply}"
        return reply

    def putval(self, identifier: str, value: float, host: str | None = None) -> None:
        """One value one second after the previous one, then flush the network plugin."""
        self.clock += 1
        self.command(f"PUTVAL {host or self.name}/{identifier} interval=1 {self.clock}:{value}\n")

    def marker(self, name: str) -> Path:
        return self.directory / f"{name}.marker"

    def log(self) -> str:
        return self.collectd.log_text()


def unixsock(directory: Path) -> str:
    return textwrap.dedent(f"""
        WriteThreads 1
        LoadPlugin unixsock
        <Plugin unixsock>
          SocketFile "{directory / "sock"}"
          SocketPerms "0600"
        </Plugin>
    """)


def host_services(directory: Path) -> dict[str, Any]:
    names = ("app", "hits", "wide", "mq", "hot")
    touch = {name: f"touch {directory}/{name}.marker" for name in names}
    return {
        "marker": {"Commands": {**touch, "sync": "true"}},
        "broken": {"Commands": {"fail": "false"}},
    }


RULES = {
    "Defaults": {"Cooldown": 3600, "MaxRuns": 10},
    "Values": [
        {"Name": "app", "Plugin": "app", "Above": 5,
         "Action": {"Service": "marker", "Command": "app"}},
        {"Name": "hits", "Plugin": "hits", "Above": 5, "Hits": 3,
         "Action": {"Service": "marker", "Command": "hits"}},
        # "sync" repairs only alpha and beta: fleet limits hold for every rule (2 hosts)
        {"Name": "sync", "Plugin": "sync", "Above": 5, "Cooldown": 0,
         "Action": {"Service": "marker", "Command": "sync"}},
        {"Name": "wide", "Plugin": "wide", "Above": 5,
         "Action": {"Service": "marker", "Command": "wide"}},
        {"Name": "failing", "Plugin": "failing", "Above": 5,
         "Action": {"Service": "broken", "Command": "fail"}},
        {"Name": "beat", "Plugin": "beat", "Host": "quiet-*", "Missing": 2, "Interval": 1,
         "Action": {"Service": "marker", "Command": "app"}},
        {"Name": "mq", "Plugin": "mq", "Above": 5,
         "Action": {"Service": "marker", "Command": "mq"}},
    ],
}  # fmt: skip


@dataclass
class Fleet:
    prefix: str
    broker: Broker
    central: Node
    hosts: dict[str, Node]
    history: Path

    def topic(self, host: str, kind: str) -> str:
        return f"{self.prefix}/{host}/{kind}"

    def notes(self, rule: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
        found = []
        for match in NOTE.finditer(self.central.log()):
            note = {k: v or "" for k, v in match.groupdict().items()}
            if note["plugin"] != PLUGIN_NAME:
                continue
            name = note["type_instance"]
            if rule is not None and name != rule and not name.endswith(f"::{rule}"):
                continue
            if host is not None and note["host"] != host:
                continue
            note["json"] = json.loads(note["message"])
            found.append(note)
        return found

    def wait_note(self, rule: str, host: str, code: int, count: int = 1) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            notes = [n for n in self.notes(rule, host) if n["json"]["code"] == code]
            return notes if len(notes) >= count else None

        try:
            return wait_for(enough, SLOW, what=f"{rule} note {code:#x} for {host}")  # type: ignore[no-any-return]
        except TimeoutError as exc:
            raise AssertionError(
                f"{exc}\n--- central log ---\n{self.central.log()[-5000:]}"
            ) from None

    def codes(self, rule: str, host: str) -> list[int]:
        return [n["json"]["code"] for n in self.notes(rule, host)]


def _start(
    node: Node, wait: str, broker: Broker | None = None, client: str = "", topic: str = ""
) -> None:
    node.collectd.start(wait_log=wait, timeout=30)
    wait_for(lambda: _listening(node.socket_path), SLOW, what="unixsock socket")
    if broker is not None:
        broker.wait_subscribed(client, topic)


def start_host(base: Path, broker: Broker, prefix: str, name: str, forward: str) -> Node:
    directory = base / name
    directory.mkdir(parents=True)
    config = {
        "Host": broker.host,
        "ClientId": f"{prefix}-{name}",
        "CommandTopic": f"{prefix}/{name}/command",
        "CommandResultTopic": f"{prefix}/{name}/result",
        "StatusTopic": f"{prefix}/{name}/status",
        "ReconnectInterval": 0.2,
        "StateDir": str(directory / "state"),
        "Services": host_services(directory),
        # answered, not dropped: the test below checks the refusal of an unsigned command
        "Security": {"HmacKeys": {"central": SECRET}, "AnswerUnsigned": True},
    }
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    collectd = Collectd(
        directory,
        modules={"collectd_monitor.remote": {"MonitorConfigPath": str(path)}},
        hostname=name,
        interval=1.0,
        extra_conf=unixsock(directory) + forward,
    )
    node = Node(name, collectd, directory)
    _start(node, "connected to", broker, config["ClientId"], config["CommandTopic"])
    return node


def start_central(
    base: Path,
    broker: Broker,
    prefix: str,
    receive: str,
    rules: dict[str, Any] = RULES,
    compiled: tuple[str, ...] = (),
) -> tuple[Node, Path]:
    """A central collectd; ``compiled`` names the rules its threshold plugin judges."""
    directory = base / "central"
    directory.mkdir(parents=True)
    (directory / "central.secret").write_text(SECRET)
    history = directory / "history.sqlite3"
    config = {
        "Host": broker.host,
        "ClientId": f"{prefix}-central",
        "ReconnectInterval": 0.2,
        "CommandTopicTemplate": f"{prefix}/{{host}}/command",
        "ResultTopicTemplate": f"{prefix}/{{host}}/result",
        "StatusTopicTemplate": f"{prefix}/{{host}}/status",
        "ResultTimeout": 10,
        "History": str(history),
        "Fleet": {"MaxHostsPerWindow": 2, "Window": 3600, "AbortFailureRatio": 0.5,
                  "AbortMinRepairs": 2, "ResumeAfter": 3600},
        "Security": {"SigningKey": {"File": "central.secret"}, "KeyId": "central"},
        "Rules": rules,
    }  # fmt: skip
    path = directory / "central.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    options = {"MonitorConfigPath": str(path)}
    threshold = ""
    if compiled:
        parsed = parse_rules(rules, None)
        plan = compile_rules(parsed.values, read_types_db_ranges(TYPES_DB).get, central=True)
        assert tuple(c.rule.name for c in plan.compiled) == compiled
        threshold, options["ThresholdRules"] = plan.block, plan.digest
    collectd = Collectd(
        directory,
        modules={PLUGIN_NAME: options},
        hostname="central",
        interval=1.0,
        extra_conf=unixsock(directory) + receive + threshold,
    )
    node = Node("central", collectd, directory)
    _start(node, "connected to", broker, config["ClientId"], f"{prefix}/+/status")
    return node, history


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, broker: Broker) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("central")
    prefix = f"central-{uuid.uuid4().hex[:8]}"
    port = free_port()
    nodes: list[Node] = []
    try:
        receive = (
            f'LoadPlugin network\n<Plugin network>\n  Listen "127.0.0.1" "{port}"\n</Plugin>\n'
        )
        central, history = start_central(base, broker, prefix, receive)
        nodes.append(central)
        forward = (
            "<LoadPlugin network>\n  FlushInterval 1\n</LoadPlugin>\n"
            f'<Plugin network>\n  Server "127.0.0.1" "{port}"\n</Plugin>\n'
        )
        hosts = {}
        for name in ("alpha", "beta", "gamma"):
            hosts[name] = start_host(base, broker, prefix, name, forward)
            nodes.append(hosts[name])
        yield Fleet(prefix, broker, central, hosts, history)
    finally:
        for node in nodes:
            node.collectd.stop()


def send(fleet: Fleet, host: str, plugin: str, *values: float) -> None:
    node = fleet.hosts[host]
    for value in values:
        node.putval(f"{plugin}/gauge", value)
    node.command("FLUSH plugin=network\n")


def test_a_rule_repairs_the_host_whose_value_faulted_and_only_that_host(fleet: Fleet) -> None:
    send(fleet, "alpha", "app", 1)
    send(fleet, "beta", "app", 9)
    sent = fleet.wait_note("app", "beta", ResultCode.CENTRAL_SENT)[0]
    done = fleet.wait_note("app", "beta", 0)[0]  # the host ran it: code 0, severity OKAY
    assert done["severity"] == "OKAY" and done["json"]["task_id"] == sent["json"]["task_id"]
    assert fleet.hosts["beta"].marker("app").exists()
    assert not fleet.hosts["alpha"].marker("app").exists()
    assert fleet.codes("app", "alpha") == []
    assert sent["type"] == "commands" and sent["type_instance"] == "central.json::metric::app"
    history = open_history(str(fleet.history))
    try:
        entries = wait_for(
            lambda: [e for e in history.entries(host="beta") if e.code == 0 and e.command == "app"],
            SLOW,
            what="history entry",
        )
    finally:
        history.close()
    assert entries[0].task_id == sent["json"]["task_id"] and entries[0].service == "marker"


def test_hits_and_cooldown_are_per_host(fleet: Fleet) -> None:
    send(fleet, "alpha", "hits", 9, 9)
    send(fleet, "beta", "hits", 9, 9, 9)
    fleet.wait_note("hits", "beta", 0)
    assert fleet.hosts["beta"].marker("hits").exists()
    send(fleet, "alpha", "sync", 9)  # alpha's values so far have been judged once this runs
    fleet.wait_note("sync", "alpha", 0)
    assert fleet.codes("hits", "alpha") == [] and not fleet.hosts["alpha"].marker("hits").exists()
    send(fleet, "alpha", "hits", 9)  # the third hit, on alpha's own count
    fleet.wait_note("hits", "alpha", 0)
    # beta keeps faulting, recovers, faults again: its cooldown (3600 s) holds
    send(fleet, "beta", "hits", 9, 1, 9, 9, 9)
    send(fleet, "beta", "sync", 9)
    fleet.wait_note("sync", "beta", 0)
    assert fleet.codes("hits", "beta").count(ResultCode.CENTRAL_SENT) == 1


def test_max_hosts_per_window_and_the_abort_threshold(fleet: Fleet) -> None:
    for host in ("alpha", "beta", "gamma"):
        send(fleet, host, "wide", 9)
    wait_for(
        lambda: (
            len([n for n in fleet.notes("wide") if n["json"]["code"] == 0]) == 2
            and len(
                [n for n in fleet.notes("wide") if n["json"]["code"] == ResultCode.CENTRAL_HELD]
            )
            == 1
        ),
        SLOW,
        what="two repairs and one held",
    )
    held = next(n for n in fleet.notes("wide") if n["json"]["code"] == ResultCode.CENTRAL_HELD)
    assert "MaxHostsPerWindow" in held["json"]["message"] and held["severity"] == "WARNING"
    markers = [fleet.hosts[h].marker("wide").exists() for h in ("alpha", "beta", "gamma")]
    assert sorted(markers) == [False, True, True]
    assert not fleet.hosts[held["host"]].marker("wide").exists()

    # a fleet-wide fault whose repairs fail: two of two fail, the rule aborts
    for host in ("alpha", "beta", "gamma"):
        send(fleet, host, "failing", 9)
    aborted = fleet.wait_note("failing", "central", ResultCode.CENTRAL_ABORTED)[0]
    assert (
        aborted["severity"] == "FAILURE" and "2 of 2 repairs failed" in aborted["json"]["message"]
    )
    failed = [n for n in fleet.notes("failing") if n["json"]["code"] == 1]
    assert len(failed) == 2
    for host in ("alpha", "beta", "gamma"):
        send(fleet, host, "failing", 9)
    wait_for(
        lambda: any(
            n["json"]["code"] == ResultCode.CENTRAL_ABORTED
            for n in fleet.notes("failing")
            if n["host"] != "central"
        ),
        SLOW,
        what="a refusal because the rule aborted",
    )
    sent = [n for n in fleet.notes("failing") if n["json"]["code"] == ResultCode.CENTRAL_SENT]
    assert len(sent) == 2  # nothing more was sent


def test_an_offline_host_gets_no_command(fleet: Fleet, broker: Broker) -> None:
    peer = Peer(broker)
    try:
        peer.subscribe(fleet.topic("delta", "command"))
        status = {"status": "offline", "reason": "connection lost", "host": "delta"}
        peer.client.publish(
            fleet.topic("delta", "status"), json.dumps(status), qos=1, retain=True
        ).wait_for_publish(5)
        fleet.wait_note("presence", "delta", ResultCode.CENTRAL_HOST_OFFLINE)
        fleet.central.putval("app/gauge", 9, host="delta")
        refused = fleet.wait_note("app", "delta", ResultCode.CENTRAL_HOST_OFFLINE)[0]
        assert "delta is offline" in refused["json"]["message"] and refused["severity"] == "FAILURE"
        before = len(fleet.notes("sync", "alpha"))
        send(fleet, "alpha", "sync", 9)  # a repair sent after the refusal arrives...
        fleet.wait_note("sync", "alpha", 0, count=before // 2 + 1)
        assert peer.results(fleet.topic("delta", "command")) == []  # ...none went to delta
    finally:
        peer.client.publish(
            fleet.topic("delta", "status"), b"", qos=1, retain=True
        ).wait_for_publish(5)
        peer.close()


def test_a_silent_host_is_reported(fleet: Fleet) -> None:
    for _ in range(3):
        fleet.central.putval("beat/gauge", 1, host="quiet-1")
    silent = fleet.wait_note("beat", "quiet-1", ResultCode.CENTRAL_HOST_SILENT)[0]
    assert "host silent" in silent["json"]["message"] and silent["severity"] == "WARNING"


def test_hosts_refuse_unsigned_commands_and_ran_the_signed_ones(
    fleet: Fleet, broker: Broker
) -> None:
    peer = Peer(broker)
    try:
        peer.subscribe(fleet.topic("alpha", "result"))
        message = command_message("marker", "sync")
        peer.send(fleet.topic("alpha", "command"), message)
        result = peer.result_for(fleet.topic("alpha", "result"), message["task_id"])
        assert result["code"] == ResultCode.SIGNATURE_MISSING
    finally:
        peer.close()
    send(fleet, "alpha", "app", 9)
    fleet.wait_note("app", "alpha", 0)  # the central's signed command ran
    assert fleet.hosts["alpha"].marker("app").exists()


def test_values_through_collectds_mqtt_plugin(tmp_path: Path, broker: Broker) -> None:
    prefix = f"central-{uuid.uuid4().hex[:8]}"
    values = f"values-{prefix}"
    port = broker.port
    receive = textwrap.dedent(f"""
        LoadPlugin mqtt
        <Plugin mqtt>
          <Subscribe "central">
            Host "127.0.0.1"
            Port "{port}"
            ClientId "{prefix}-values-in"
            Topic "{values}/#"
          </Subscribe>
        </Plugin>
    """)
    central, _ = start_central(tmp_path, broker, prefix, receive)
    broker.wait_subscribed(f"{prefix}-values-in", f"{values}/#")
    publish = textwrap.dedent(f"""
        LoadPlugin mqtt
        <Plugin mqtt>
          <Publish "out">
            Host "127.0.0.1"
            Port "{port}"
            ClientId "{prefix}-values-out"
            Prefix "{values}"
          </Publish>
        </Plugin>
    """)
    host = start_host(tmp_path, broker, prefix, "mqhost", publish)
    try:
        host.putval("mq/gauge", 9)
        fleet = Fleet(prefix, broker, central, {"mqhost": host}, tmp_path)
        fleet.wait_note("mq", "mqhost", 0)
        assert host.marker("mq").exists()
    finally:
        host.collectd.stop()
        central.collectd.stop()


COMPILED = {
    "Defaults": {"Cooldown": 3600},
    "Values": [
        {"Name": "hot", "Host": "solo", "Plugin": "hot", "Type": "gauge", "Above": 5,
         "Action": {"Service": "marker", "Command": "hot"}},
        {"Name": "any-host", "Plugin": "cold", "Type": "gauge", "Below": -100,
         "Action": {"Service": "marker", "Command": "app"}},
    ],
}  # fmt: skip


def test_a_compiled_rule_fires_in_the_threshold_plugin_and_repairs_its_host(
    tmp_path: Path, broker: Broker
) -> None:
    prefix = f"central-{uuid.uuid4().hex[:8]}"
    port = free_port()
    receive = f'LoadPlugin network\n<Plugin network>\n  Listen "127.0.0.1" "{port}"\n</Plugin>\n'
    central, _ = start_central(
        tmp_path, broker, prefix, receive, COMPILED, compiled=("hot", "any-host")
    )
    forward = (
        "<LoadPlugin network>\n  FlushInterval 1\n</LoadPlugin>\n"
        f'<Plugin network>\n  Server "127.0.0.1" "{port}"\n</Plugin>\n'
    )
    host = start_host(tmp_path, broker, prefix, "solo", forward)
    try:
        log = central.log()
        assert "value rule hot: judged by collectd's threshold plugin" in log
        assert "every value rule is judged by the threshold plugin: no write callback" in log
        fleet = Fleet(prefix, broker, central, {"solo": host}, tmp_path)
        central.putval("hot/gauge", 9, host="other")  # Host "solo" only: not this one
        host.putval("hot/gauge", 1)
        host.putval("hot/gauge", 9)
        host.command("FLUSH plugin=network\n")
        sent = fleet.wait_note("hot", "solo", ResultCode.CENTRAL_SENT)[0]
        fleet.wait_note("hot", "solo", 0)
        assert host.marker("hot").exists()
        assert sent["type_instance"] == "central.json::metric::hot"
        assert "solo/hot/gauge value=9" in sent["json"]["message"]
        # the verdict was the threshold plugin's: its own FAILURE notification for solo
        threshold = [
            n for n in NOTE.finditer(central.log())
            if n["plugin"] == "hot" and n["host"] == "solo" and n["severity"] == "FAILURE"
        ]  # fmt: skip
        assert threshold, central.log()[-3000:]
        assert fleet.notes("hot", "other") == []
    finally:
        host.collectd.stop()
        central.collectd.stop()
