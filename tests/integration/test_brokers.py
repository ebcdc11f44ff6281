"""Other brokers and broker faults: amqtt with MqttVersion auto, ACL refusals,
a client id taken over, defaults from collectd's Hostname."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from collectd_monitor.commands.transport import MqttLink
from collectd_monitor.config import BrokerSettings
from collectd_monitor.testing.sandbox import (
    LOOPBACK,
    MOSQUITTO_PASSWD,
    Broker,
    Collectd,
    free_port,
    port_open,
    wait_for,
)

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "collectd_monitor"]
AMQTT = Path(sys.executable).with_name("amqtt")
ACL_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mosquitto" / "acl"


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@dataclass
class Amqtt:
    """amqtt's broker with its default settings, on a free loopback port."""

    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> Amqtt:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "amqtt.yaml"
        conf.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: {LOOPBACK}:{self.port}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        with open(self.directory / "amqtt.log", "ab") as out:
            self.proc = subprocess.Popen(
                [str(AMQTT), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(
            lambda: port_open(self.port) or self.proc is None or self.proc.poll() is not None,
            20,
            what="amqtt",
        )
        if self.proc.poll() is not None:
            raise RuntimeError((self.directory / "amqtt.log").read_text()[-2000:])
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def amqtt(tmp_path: Path) -> Iterator[Amqtt]:
    server = Amqtt(tmp_path / "amqtt", free_port()).start()
    yield server
    server.stop()


def online_hosts(host: str) -> dict[str, dict[str, object]]:
    listed = cli("hosts", "--host", host, "--json", "--quiet")
    assert listed.returncode == 0, listed.stderr
    return {
        status["host"]: status
        for status in map(json.loads, listed.stdout.splitlines())
        if status["status"] == "online"
    }


# --------------------------------------------------------------------------- amqtt


def test_plugin_and_every_sender_work_with_amqtt_on_mqtt_version_auto(monitor, amqtt, tmp_path):
    name = f"amq-{uuid.uuid4().hex[:8]}"
    m = monitor(
        {"Host": amqtt.host, "StatusTopic": f"collectd-monitor/{name}/status"},
        broker=amqtt,
        wait_connected=False,
    )
    m.collectd.wait_log(r"connected to \S+ as \S+ \(MQTT 3\.1\.1\)", timeout=30)
    assert "(MQTT 5)" in m.log() and "trying MQTT 3.1.1" in m.log()

    # hosts: the retained presence; once there, the broker has our subscription too
    # (the plugin subscribes before it publishes its status).
    status = wait_for(lambda: online_hosts(amqtt.host).get(name), 30, what="presence")
    assert status["services"] == {"hello": ["exec"]}

    recording = tmp_path / "record.log"
    history = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    with open(recording, "wb") as out:
        recorder = subprocess.Popen(
            [
                *CLI,
                "record",
                "--host",
                amqtt.host,
                "--history",
                history,
                "--result-topic",
                m.result_topic,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for(
            lambda: "(MQTT 3.1.1)" in recording.read_text() or recorder.poll() is not None,
            30,
            what="the recorder's connection",
        )
        assert recorder.poll() is None, recording.read_text()

        target = [
            "--host",
            amqtt.host,
            "--topic",
            m.command_topic,
            "--result-topic",
            m.result_topic,
            "--timeout",
            "30",
        ]
        sent = cli("send-command", "hello", "exec", *target)
        assert sent.returncode == 0, sent.stderr + m.log()
        assert json.loads(sent.stdout)["message"] == "Hello World!"
        assert "trying MQTT 3.1.1" in sent.stderr

        # fan-out (one connection for many hosts) falls back the same way
        unique = m.command_topic.split("/")[1]
        hosts_file = tmp_path / "hosts"
        hosts_file.write_text(unique + "\n")
        fanned = cli(
            "send-command",
            "hello",
            "exec",
            "--host",
            amqtt.host,
            "--hosts-file",
            str(hosts_file),
            "--topic",
            "test/+/command",
            "--result-topic",
            "test/+/result",
            "--timeout",
            "30",
        )
        assert fanned.returncode == 0, fanned.stderr + m.log()
        (line,) = fanned.stdout.splitlines()
        assert json.loads(line)["host"] == unique and json.loads(line)["code"] == 0

        conf = tmp_path / "new-collectd.conf"
        conf.write_text('Hostname "x"\n')
        pushed = cli("send-config", str(conf), *target)
        assert pushed.returncode == 1, pushed.stderr
        assert json.loads(pushed.stdout)["code"] == 0x1000
    finally:
        recorder.send_signal(signal.SIGTERM)
        try:
            code = recorder.wait(15)
        except subprocess.TimeoutExpired:
            recorder.kill()
            code = recorder.wait()
    assert code == 0, recording.read_text()
    rows = cli("history", "--history", history, "--json")
    assert rows.returncode == 0, rows.stderr
    assert any(json.loads(line).get("code") == 0 for line in rows.stdout.splitlines()), rows.stdout


# --------------------------------------------------------------------------- ACL refusals


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[str]:
    passwd = tmp_path / "acl-passwd"
    passwd.write_text("")
    for user in ("web1", "ops"):
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, f"{user}-pw"], check=True)
    port = free_port()
    broker = Broker(
        tmp_path / "acl-broker",
        extra_conf=f"listener {port} {LOOPBACK}\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {ACL_EXAMPLE}\n",
    ).start()
    yield f"{LOOPBACK}:{port}"
    broker.stop()


def test_acl_refusals_are_logged_by_the_plugin_and_end_the_sender(monitor, acl_broker):
    # web1's credentials on host web9's topics: the example ACL refuses them.
    m = monitor(
        {
            "Host": acl_broker,
            "User": "web1",
            "Password": "web1-pw",
            "CommandTopic": "collectd-monitor/web9/command",
            "CommandResultTopic": "collectd-monitor/web9/result",
            "StatusTopic": "collectd-monitor/web9/status",
        },
        wait_connected=False,
    )
    line = m.collectd.wait_log(r"\[error\].*refused.*", timeout=30).group(0)
    assert "publish to collectd-monitor/web9/status refused: not authorized" in line
    assert "user 'web1'" in line

    # A sender with a host's account may not send commands: told at once, exit 4.
    own = ["--host", acl_broker, "--user", "web1", "--password", "web1-pw", "--to", "web9"]
    sent = cli("send-command", "hello", "exec", *own, "--qos", "1", "--timeout", "60")
    assert sent.returncode == 4, sent.stderr
    assert (
        "the broker refused the publish to collectd-monitor/web9/command: not authorized"
        in sent.stderr
    )


# --------------------------------------------------------------------------- client ids


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_two_clients_with_one_client_id_are_named_once_per_series(broker, caplog, protocol):
    # mosquitto 2.0.11 closes the older connection without DISCONNECT 0x8E even
    # with MQTT 5, so this is the series-of-short-connections path; the 0x8E
    # path is tested in tests/unit/test_brokerfaults.py.
    phrase = "another client connected with our client id"
    client_id = f"cm-twin-{uuid.uuid4().hex[:8]}"
    settings = BrokerSettings(
        host=LOOPBACK,
        port=broker.port,
        client_id=client_id,
        protocol=protocol,
        reconnect_interval=0.1,
        reconnect_max_interval=0.2,
    )
    links = [MqttLink(settings), MqttLink(settings)]
    caplog.set_level(logging.WARNING, logger="collectd_monitor")
    for link in links:
        link.start()
    try:
        wait_for(lambda: all(link.connect_count >= 6 for link in links), 60, what="flapping")
    finally:
        for link in links:
            link.stop(2.0)
    named = [r for r in caplog.records if phrase in r.getMessage()]
    assert named, [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.ERROR and repr(client_id) in r.getMessage() for r in named)
    assert len(named) <= len(links)  # once per series, not at every reconnect


# --------------------------------------------------------------------------- Hostname


def test_topics_and_client_id_default_from_collectds_hostname(broker, tmp_path):
    hostname = f"web-test-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "Host": broker.host,
                "StateDir": str(tmp_path / "state"),
                "Services": {"hello": {"commands": {"exec": "echo hi"}}},
            }
        )
    )
    config.chmod(0o600)
    collectd = Collectd(
        tmp_path / "collectd",
        modules={"collectd_monitor.remote": {"MonitorConfigPath": str(config)}},
        hostname=hostname,
    )
    try:
        collectd.start(wait_log="connected to")
        broker.wait_subscribed(
            f"collectd-monitor-{hostname}", f"collectd-monitor/{hostname}/command"
        )
        listed = online_hosts(broker.host)
        assert listed[hostname]["topic"] == f"collectd-monitor/{hostname}/status"
    finally:
        collectd.stop()
