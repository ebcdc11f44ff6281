"""A drop-in for lua-collectd-monitor's users, against real mosquitto and collectd.

The original's Lua senders are not available here; their behaviour is played
by a plain paho client: MQTT 3.1.1, clean session off, QoS 2, task_ids that
repeat, and (for the plugin's side) results without a ``code``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import format_timestamp
from collectd_monitor.testing.sandbox import (
    LOOPBACK,
    MOSQUITTO_PASSWD,
    Broker,
    Collectd,
    free_port,
    wait_for,
)
from tests.conftest import command_message

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CLI = [sys.executable, "-m", "collectd_monitor"]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- duplicates


def test_a_reused_task_id_runs_and_an_identical_redelivery_does_not(monitor, peer, tmp_path):
    counter = tmp_path / "runs.txt"
    m = monitor(services={"svc": {"commands": {"count": f"echo run >> {counter}; echo ok"}}})
    p = peer(m)
    first = command_message("svc", "count", task_id=4242)
    p.send(m.command_topic, first)
    assert p.result_for(m.result_topic, 4242)["code"] == 0
    p.send(m.command_topic, first)  # a redelivery or replay: the same message
    wait_for(lambda: len(p.results(m.result_topic)) == 2, 10, what="the duplicate's answer")
    # the original sender seeds its random ids with os.clock(): a new command, an old id
    reused = {**first, "timestamp": format_timestamp(), "command": "count", "note": "new"}
    p.send(m.command_topic, reused)
    wait_for(lambda: len(p.results(m.result_topic)) == 3, 10, what="the reused id's answer")
    assert [r["code"] for r in p.results(m.result_topic)] == [0, ResultCode.DUPLICATE_TASK, 0]
    assert counter.read_text() == "run\nrun\n"


# --------------------------------------------------------------------------- migration


def test_a_service_added_to_config_json_is_served_without_a_restart(monitor, peer):
    m = monitor()
    p = peer(m)
    before = command_message("added", "now")
    p.send(m.command_topic, before)
    assert p.result_for(m.result_topic, before["task_id"])["code"] == ResultCode.UNKNOWN_SERVICE
    config = json.loads(m.config_path.read_text())
    config["Services"]["added"] = {"commands": {"now": "echo served"}}
    m.config_path.write_text(json.dumps(config))
    after = command_message("added", "now")
    p.send(m.command_topic, after)
    result = p.result_for(m.result_topic, after["task_id"])
    assert (result["code"], result["message"]) == (0, "served")
    assert "config reloaded; services now: added, hello" in m.log()
    m.config_path.write_text("{ broken")
    wait_for(lambda: "keeping the running config" in m.log(), 20, what="the timer's check")
    again = command_message("added", "now")
    p.send(m.command_topic, again)
    assert p.result_for(m.result_topic, again["task_id"])["code"] == 0


def test_stderr_travels_beside_stdout(monitor, peer):
    m = monitor(services={"nginx": {"commands": {"status": "echo inactive >&2; exit 3"}}})
    p = peer(m)
    message = command_message("nginx", "status")
    p.send(m.command_topic, message)
    result = p.result_for(m.result_topic, message["task_id"])
    assert (result["code"], result["message"], result["stderr"]) == (3, "", "inactive")


def test_log_device_console_and_lua_leftovers(monitor, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "disk.lua").write_text("return {}\n")
    m = monitor(
        {"LogDevice": "console", "LocalMonitorConfigDir": str(rules)},
        plugins=("collectd_monitor.remote", "collectd_monitor.local"),
        wait_connected=False,  # the log goes to stdout, not to collectd's log file
    )
    stdout = m.collectd.directory / "collectd.stdout"
    wait_for(lambda: "disk.lua" in stdout.read_text(), 15, what="the *.lua warning on stdout")
    wait_for(lambda: "connected to" in stdout.read_text(), 15, what="'connected' on stdout")


class CodelessHost:
    """Plays the original Lua plugin: answers without a ``code``."""

    def __init__(self, broker: Broker, topic: str, result_topic: str) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"lua-{uuid.uuid4().hex}")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.client.publish(
            result_topic,
            json.dumps(
                {
                    "task_id": json.loads(msg.payload)["task_id"],
                    "timestamp": format_timestamp(),
                    "message": "exit 3",
                }
            ),
            qos=2,
        )
        self.client.connect(LOOPBACK, broker.port)
        self.client.loop_start()
        self.client.subscribe(topic, 2)
        assert subscribed.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_result_without_code_is_printed_and_exits_1(broker):
    unique = uuid.uuid4().hex[:8]
    topic, result_topic = f"lua/{unique}/command", f"lua/{unique}/result"
    host = CodelessHost(broker, topic, result_topic)
    try:
        done = cli(
            "send-command", "svc", "cmd", "-h", broker.host, "-t", topic, "-r", result_topic,
            "-q", "0", "--timeout", "20", "--no-history",
        )  # fmt: skip
    finally:
        host.close()
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["message"] == "exit 3"
    assert "without a result code" in done.stderr


# --------------------------------------------------------------------------- the examples


def test_the_examples_work_together(tmp_path):
    """examples/config.json's user and topics fit examples/mosquitto/acl: one user per host."""
    example = json.loads((EXAMPLES / "config.json").read_text())
    host = example["User"]
    assert example["CommandTopic"] == f"collectd-monitor/{host}/command"
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    for user, password in ((host, example["Password"]), ("ops", "ops-secret")):
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, password], check=True)
    passwd.chmod(0o600)
    acl_port = free_port()
    broker = Broker(
        tmp_path / "broker",
        extra_conf="\n".join(
            [
                f"listener {acl_port} {LOOPBACK}",
                "allow_anonymous false",
                f"password_file {passwd}",
                f"acl_file {EXAMPLES / 'mosquitto' / 'acl'}",
            ]
        ),
    ).start()
    collectd = None
    try:
        config = {
            **example,
            "Host": f"{LOOPBACK}:{acl_port}",
            "StateDir": str(tmp_path / "st"),
            "ClientId": f"collectd-monitor-{host}",
        }
        config_path = tmp_path / "config.json"
        config_path.write_text(json.dumps(config))
        config_path.chmod(0o600)
        checked = cli("check-config", "--config", str(config_path))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        collectd = Collectd(
            tmp_path / "collectd",
            modules={"collectd_monitor.remote": {"MonitorConfigPath": str(config_path)}},
            hostname=host,
        ).start(wait_log="connected to")
        broker.wait_subscribed(config["ClientId"], example["CommandTopic"])
        done = cli(
            "send-command", "hello", "exec", "-h", f"{LOOPBACK}:{acl_port}", "-u", "ops",
            "-p", "ops-secret", "--to", host, "--timeout", "20", "--no-history",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr + collectd.log_text()
        assert json.loads(done.stdout)["message"] == "Hello World!"
    finally:
        if collectd is not None:
            collectd.stop()
        broker.stop()


# --------------------------------------------------------------------------- install


def test_run_sh_install_makes_a_production_venv(tmp_path):
    prefix = tmp_path / "opt"
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    done = subprocess.run(
        [str(ROOT / "run.sh"), "install", str(prefix)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "check-config" in done.stdout and "collectd-conf" in done.stdout
    version = subprocess.run(
        [str(prefix / "bin" / "collectd-monitor"), "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("collectd-monitor ")
    python = str(prefix / "bin" / "python")
    probe = "import importlib.util as u; print([m for m in ('pytest', 'ruff', 'mypy', "
    probe += "'cryptography', 'paho') if u.find_spec(m)])"
    found = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "['cryptography', 'paho']"
    where = subprocess.run(
        [python, "-c", "import collectd_monitor; print(collectd_monitor.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(prefix)), "not a copy: tied to the checkout"
