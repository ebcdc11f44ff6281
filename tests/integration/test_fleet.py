"""Fleet view and history against real mosquitto, real collectd and real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor import __version__
from collectd_monitor.cli import main
from collectd_monitor.fleet.history import Entry, open_history
from collectd_monitor.testing.sandbox import wait_for

from ..conftest import Monitor, MonitorFactory, command_message, next_task_id
from .conftest_fleet import PG_PASSWORD

pytestmark = pytest.mark.integration


@dataclass
class Fleet:
    prefix: str
    hosts: dict[str, Monitor]

    def topic(self, host: str, kind: str) -> str:
        return f"{self.prefix}/{host}/{kind}"

    def template(self, kind: str) -> str:
        return f"{self.prefix}/+/{kind}"


def start_fleet(monitor: MonitorFactory, specs: dict[str, dict[str, Any]]) -> Fleet:
    """collectd hosts whose topics follow ``PREFIX/HOST/{command,result,status}``."""
    prefix = f"fleet-{uuid.uuid4().hex[:8]}"
    hosts = {}
    for name, spec in specs.items():
        settings = {
            "CommandTopic": f"{prefix}/{name}/command",
            "CommandResultTopic": f"{prefix}/{name}/result",
            "StatusTopic": f"{prefix}/{name}/status",
            **spec.get("settings", {}),
        }
        hosts[name] = monitor(settings, services=spec["services"])
    return Fleet(prefix, hosts)


SERVICES_A = {"hello": {"commands": {"exec": 'echo "Hello World!"'}}}
SERVICES_B = {
    "nginx": {"commands": {"restart": "echo restarted", "reload": ["/bin/echo", "reloaded"]}},
    "hello": {"commands": {"exec": "echo hi from b"}},
}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def hosts_json(capsys: pytest.CaptureFixture[str], fleet: Fleet, broker_host: str) -> list[Any]:
    code, out, _ = cli(
        capsys, "hosts", "--host", broker_host, "--status-topic", fleet.template("status"), "--json"
    )
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_hosts_lists_the_fleet_and_sees_a_host_go_offline(monitor, broker, capsys):
    fleet = start_fleet(
        monitor,
        {
            "alpha": {"services": SERVICES_A, "settings": {"AllowConfigReplace": True}},
            "beta": {"services": SERVICES_B, "settings": {"AllowConfigReplace": False}},
        },
    )
    listed = hosts_json(capsys, fleet, broker.host)
    assert [h["host"] for h in listed] == ["alpha", "beta"]
    alpha, beta = listed
    assert alpha["status"] == beta["status"] == "online"
    assert alpha["services"] == {"hello": ["exec"]}
    assert beta["services"] == {"hello": ["exec"], "nginx": ["reload", "restart"]}
    assert alpha["version"] == __version__ and alpha["since"].endswith("Z")
    assert alpha["config_push"] is True and beta["config_push"] is False
    assert "echo" not in json.dumps(listed)  # command names only, never command lines

    code, out, _ = cli(
        capsys, "hosts", "--host", broker.host, "--status-topic", fleet.template("status")
    )
    assert code == 0
    assert out.splitlines()[0].split() == ["HOST", "STATUS", "SINCE", "VERSION", "SERVICES"]
    assert "nginx(reload,restart)" in out

    fleet.hosts["beta"].collectd.stop()
    listed = hosts_json(capsys, fleet, broker.host)
    assert [(h["host"], h["status"]) for h in listed] == [("alpha", "online"), ("beta", "offline")]
    assert listed[1]["reason"] == "shutdown"


def test_hosts_without_a_broker_exits_4(capsys, fresh_broker):
    address = fresh_broker.host
    fresh_broker.stop()
    code, out, err = cli(capsys, "hosts", "--host", address)
    assert (code, out) == (4, "")
    assert address in err and len(err.splitlines()) == 1


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite3")
    url: str = request.getfixturevalue("postgres_url")
    return url


def entries(url: str, **filters: Any) -> list[Entry]:
    history = open_history(url)
    try:
        return history.entries(**filters)
    finally:
        history.close()


def test_history_shows_what_senders_sent_and_got_back(monitor, broker, capsys, history_url):
    fleet = start_fleet(
        monitor,
        {
            "alpha": {"services": SERVICES_A},
            "beta": {"services": SERVICES_B, "settings": {"AllowConfigReplace": False}},
        },
    )
    base = ["--host", broker.host, "--history", history_url, "--quiet"]
    for host, service, command in (("alpha", "hello", "exec"), ("beta", "nginx", "restart")):
        code, out, err = cli(
            capsys,
            "send-command",
            service,
            command,
            "--topic",
            fleet.topic(host, "command"),
            "--result-topic",
            fleet.topic(host, "result"),
            *base,
        )
        assert code == 0, err
    conf = fleet.hosts["beta"].collectd.conf_path
    code, out, err = cli(
        capsys,
        "send-config",
        str(conf),
        "--topic",
        fleet.topic("beta", "command"),
        "--result-topic",
        fleet.topic("beta", "result"),
        *base,
    )
    assert code == 1 and json.loads(out)["code"] == 0x1000  # pushes are off on beta
    code, _, err = cli(
        capsys, "send-command", "hello", "exec", "--to", f"nobody-{uuid.uuid4().hex[:6]}",
        "--timeout", "0.5", *base,
    )  # fmt: skip
    assert code == 3

    code, out, err = cli(capsys, "history", "--history", history_url, "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["host"], r["kind"], r["service"], r["command"], r["code"]) for r in rows] == [
        ("alpha", "command", "hello", "exec", 0),
        ("beta", "command", "nginx", "restart", 0),
        ("beta", "config", None, None, 0x1000),
        (rows[3]["host"], "command", "hello", "exec", None),
    ]
    assert rows[0]["message"] == "Hello World!\n" or rows[0]["message"] == "Hello World!"
    assert rows[2]["config_sha256"] == hashlib.sha256(conf.read_bytes()).hexdigest()
    assert rows[3]["host"].startswith("nobody-") and "no result for task" in rows[3]["message"]
    me = rows[0]["sender"]
    assert "@" in me and all(r["sender"] == me for r in rows)
    assert all(r["duration"] > 0 for r in rows[:3])

    code, out, _ = cli(capsys, "history", "--history", history_url, "--host", "b*", "--json")
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["command", "config"]
    code, out, _ = cli(capsys, "history", "--history", history_url, "--service", "nginx")
    assert code == 0 and "nginx/restart" in out and "hello/exec" not in out
    code, out, _ = cli(capsys, "history", "--history", history_url, "--limit", "1", "--json")
    assert [json.loads(line)["host"] for line in out.splitlines()] == [rows[3]["host"]]


def test_an_unwritable_history_only_warns_the_sender(monitor, broker, capsys, postgres_server):
    m = monitor()
    url = postgres_server.url().replace(f":{postgres_server.port}/", ":1/")
    code, out, err = cli(
        capsys, "send-command", "hello", "exec", "--host", broker.host, "--topic",
        m.command_topic, "--result-topic", m.result_topic, "--history", url,
    )  # fmt: skip
    assert code == 0 and json.loads(out)["code"] == 0
    assert "warning: history not recorded" in err and PG_PASSWORD not in err


def test_an_unreachable_history_exits_4_without_the_password(capsys, postgres_server):
    url = postgres_server.url().replace(f":{postgres_server.port}/", ":1/")
    for argv in (["history", "--history", url], ["record", "--history", url, "--host", "x"]):
        code, out, err = cli(capsys, *argv)
        assert code == 4 and out == ""
        assert len(err.strip().splitlines()) == 1
        assert PG_PASSWORD not in err and "postgresql://cmtest@127.0.0.1:1/postgres" in err


class Recording:
    """``collectd-monitor record`` as a process of its own."""

    def __init__(self, fleet: Fleet, broker_host: str, url: str, log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "collectd_monitor",
                    "record",
                    "--host",
                    broker_host,
                    "--history",
                    url,
                    "--topic",
                    fleet.template("command"),
                    "--result-topic",
                    fleet.template("result"),
                    "--status-topic",
                    fleet.template("status"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, self.log.read_text()


@pytest.fixture
def recordings() -> Iterator[list[Recording]]:
    started: list[Recording] = []
    yield started
    for recording in started:
        recording.stop()


def test_recorders_record_commands_from_any_client_once(
    monitor, broker, peer, history_url, recordings, tmp_path
):
    fleet = start_fleet(
        monitor, {"alpha": {"services": SERVICES_A}, "beta": {"services": SERVICES_B}}
    )
    for n in range(2):  # two recorders on one history, as two team members might run
        recordings.append(Recording(fleet, broker.host, history_url, tmp_path / f"rec{n}.log"))

    def presence_of_both() -> bool:
        history = open_history(history_url)
        try:
            return {h for h, s, _ in history.presence_changes() if s == "online"} == {
                "alpha",
                "beta",
            }
        finally:
            history.close()

    wait_for(presence_of_both, 20, interval=0.1, what="presence in the history")
    for recording in recordings:  # both subscribed: each has logged its start
        wait_for(lambda r=recording: "recording" in r.log.read_text(), 10, what="recorder")

    client = peer()
    client.subscribe(fleet.template("result"))
    sent = []
    for host, service, command in (
        ("alpha", "hello", "exec"),
        ("beta", "nginx", "reload"),
        ("beta", "nginx", "nope"),
    ):
        message = command_message(service, command, task_id=next_task_id() + 10**9)
        client.send(fleet.topic(host, "command"), message)
        client.result_for(fleet.topic(host, "result"), message["task_id"])
        sent.append((message["task_id"], host, service, command))
    # a result whose request nobody saw: published straight on a result topic
    orphan = next_task_id() + 2 * 10**9
    client.send(
        fleet.topic("gamma", "result"),
        {"task_id": orphan, "timestamp": "2026-01-01T00:00:00Z", "message": "x", "code": 3},
    )

    def all_recorded() -> list[Entry] | None:
        found = entries(history_url)
        done = [e for e in found if e.code is not None]
        return found if len(done) == 4 else None

    found = wait_for(all_recorded, 20, interval=0.1, what="four results in the history")
    by_id = {e.task_id: e for e in found}
    assert len(found) == 4  # each (task_id, host) once, though two recorders saw it all
    for task_id, host, service, command in sent:
        entry = by_id[task_id]
        assert (entry.host, entry.service, entry.command, entry.sender) == (
            host,
            service,
            command,
            None,
        )
        assert entry.sent_at is not None and entry.received_at is not None
    assert by_id[sent[0][0]].code == 0 and by_id[sent[1][0]].message.strip() == "reloaded"
    assert by_id[sent[2][0]].code == 0x1003
    assert (by_id[orphan].host, by_id[orphan].code, by_id[orphan].kind) == ("gamma", 3, None)

    fleet.hosts["alpha"].collectd.stop()

    def offline_recorded() -> bool:
        history = open_history(history_url)
        try:
            return ("alpha", "offline") in {(h, s) for h, s, _ in history.presence_changes()}
        finally:
            history.close()

    wait_for(offline_recorded, 20, interval=0.1, what="alpha offline in the history")
    history = open_history(history_url)
    changes = history.presence_changes()
    history.close()
    assert len(changes) == len(set(changes)) == 3  # alpha on, alpha off, beta on: once each
    for recording in recordings:
        code, log = recording.stop()
        assert code == 0, log
        assert "stopped: recorded" in log and "Traceback" not in log


def test_the_recorder_rides_out_a_broker_restart(monitor, fresh_broker, peer, tmp_path, recordings):
    fleet = start_fleet(monitor, {"alpha": {"services": SERVICES_A, "settings": {}}})
    # the fleet above is on the session broker; this one is on a broker we restart
    m = monitor(
        {
            "CommandTopic": fleet.topic("solo", "command"),
            "CommandResultTopic": fleet.topic("solo", "result"),
            "StatusTopic": fleet.topic("solo", "status"),
        },
        broker=fresh_broker,
    )
    url = str(tmp_path / "history.sqlite3")
    recording = Recording(fleet, fresh_broker.host, url, tmp_path / "rec.log")
    recordings.append(recording)
    wait_for(lambda: "connected to" in recording.log.read_text(), 15, what="recorder connected")
    fresh_broker.restart(down_for=0.5)
    m.collectd.wait_log("connected to .* \\(again\\)", 20)
    wait_for(lambda: recording.log.read_text().count("connected to") >= 2, 20, what="reconnect")
    client = peer(m)
    message = command_message("hello", "exec")
    client.send(m.command_topic, message)
    client.result_for(m.result_topic, message["task_id"])
    wait_for(
        lambda: any(e.code == 0 for e in entries(url, host="solo")),
        20,
        interval=0.1,
        what="the result after the restart",
    )
    code, log = recording.stop()
    assert code == 0, log


def test_the_recorder_survives_losing_its_database_connection(
    monitor, broker, peer, postgres_url, recordings, tmp_path
):
    import psycopg

    fleet = start_fleet(monitor, {"alpha": {"services": SERVICES_A}})
    recording = Recording(fleet, broker.host, postgres_url, tmp_path / "rec.log")
    recordings.append(recording)
    wait_for(lambda: entries_presence(postgres_url), 20, interval=0.1, what="presence")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    assert killed  # the recorder's connection is gone
    client = peer()
    message = command_message("hello", "exec")
    client.subscribe(fleet.topic("alpha", "result"))
    client.send(fleet.topic("alpha", "command"), message)
    client.result_for(fleet.topic("alpha", "result"), message["task_id"])
    wait_for(
        lambda: [e.code for e in entries(postgres_url)] == [0],
        30,
        interval=0.1,
        what="the result, written after the database came back",
    )
    code, log = recording.stop()
    assert code == 0, log
    assert "retrying in" in log and "is back" in log and PG_PASSWORD not in log


def entries_presence(url: str) -> bool:
    history = open_history(url)
    try:
        return bool(history.presence_changes())
    finally:
        history.close()
