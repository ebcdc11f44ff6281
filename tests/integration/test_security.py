"""A trustworthy command channel: signatures, freshness, least privilege,
results that survive faults, MQTT 5, presence and broker ACLs."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.outbox import waiting
from collectd_monitor.commands.protocol import format_timestamp
from collectd_monitor.commands.security import Signer, generate_keypair
from collectd_monitor.testing.sandbox import MOSQUITTO_PASSWD, Broker, free_port, wait_for

from ..conftest import command_message, pids_of

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "collectd_monitor"]
HMAC_SECRET = "a-shared-secret-of-enough-length"
ACL_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mosquitto" / "acl"


def waiting_in(state: Path) -> list[tuple[str, bytes]]:
    """What the plugins under ``state`` keep in their outboxes (journals and entry files)."""
    return [item for outbox in sorted(state.glob("*/outbox")) for item in waiting(outbox)]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def send_args(m: Any) -> list[str]:
    return ["--host", m.broker.host, "--topic", m.command_topic, "--result-topic", m.result_topic]


def restart(m: Any) -> None:
    """Stop and start the same collectd (same files, same state directory)."""
    m.collectd.stop()
    offset = len(m.log())
    m.collectd.start()
    m.collectd.wait_log("connected to", start=offset)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    private, public = generate_keypair(tmp_path / "ops")
    other, _ = generate_keypair(tmp_path / "intruder")
    hmac_file = tmp_path / "central.secret"
    hmac_file.write_text(HMAC_SECRET)
    return {"private": private, "public": public, "other": other, "hmac": hmac_file}


def signed_monitor(
    monitor: Any, keys: dict[str, Path], *, answer_unsigned: bool = False, **settings: Any
) -> Any:
    security = {
        "Ed25519Keys": {"ops": {"File": str(keys["public"])}},
        "HmacKeys": {"central": HMAC_SECRET},
        "AnswerUnsigned": answer_unsigned,
    }
    return monitor({"Security": security, **settings})


# --------------------------------------------------------------------------- signatures


def test_signed_commands_from_the_cli_run(monitor, keys):
    m = signed_monitor(monitor, keys)
    ed = cli("send-command", "hello", "exec", *send_args(m), "--sign-key", str(keys["private"]))
    assert ed.returncode == 0, ed.stderr
    assert json.loads(ed.stdout)["message"] == "Hello World!"
    mac = cli("send-command", "hello", "exec", *send_args(m), "--sign-key", str(keys["hmac"]))
    assert mac.returncode == 0, mac.stderr
    assert HMAC_SECRET not in m.log()


def test_unsigned_wrong_key_and_tampered_messages_run_nothing(monitor, peer, keys, tmp_path):
    m = signed_monitor(  # answered (not dropped silently) so that the codes show
        monitor,
        keys,
        answer_unsigned=True,
        Services={"svc": {"commands": {"touch": "touch ran-it"}}},
    )
    p = peer(m)
    unsigned = command_message("svc", "touch")
    intruder = Signer.from_file(str(keys["other"]), "ops").sign(
        m.command_topic, command_message("svc", "touch")
    )
    unknown_key = Signer.from_file(str(keys["other"]), "nobody").sign(
        m.command_topic, command_message("svc", "touch")
    )
    tampered = Signer.from_file(str(keys["private"]), "ops").sign(
        m.command_topic, command_message("hello", "exec")
    )
    tampered["service"], tampered["command"] = "svc", "touch"
    other_host = Signer.from_file(str(keys["private"]), "ops").sign(
        "collectd-monitor/another-host/command", command_message("svc", "touch")
    )
    cases = [
        (unsigned, ResultCode.SIGNATURE_MISSING),
        (intruder, ResultCode.SIGNATURE_INVALID),
        (unknown_key, ResultCode.SIGNATURE_INVALID),
        (tampered, ResultCode.SIGNATURE_INVALID),
        (other_host, ResultCode.SIGNATURE_INVALID),
    ]
    for message, _ in cases:
        p.send(m.command_topic, message)
    for message, code in cases:
        assert p.result_for(m.result_topic, message["task_id"])["code"] == code
    assert not list(m.collectd.directory.rglob("ran-it"))
    assert "bad ed25519 signature" in m.log()


# --------------------------------------------------------------------------- freshness


@pytest.mark.parametrize(
    ("shift", "code"),
    [(-3600, ResultCode.MESSAGE_EXPIRED), (3600, ResultCode.MESSAGE_FROM_FUTURE)],
    ids=["expired", "future"],
)
def test_stale_and_future_messages_are_refused(monitor, peer, shift, code):
    m = monitor(services={"svc": {"commands": {"touch": "touch ran-it"}}})
    p = peer(m)
    message = command_message("svc", "touch")
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=shift)
    message["timestamp"] = format_timestamp(when)
    p.send(m.command_topic, message)
    assert p.result_for(m.result_topic, message["task_id"])["code"] == code
    assert not list(m.collectd.directory.rglob("ran-it"))


def test_replay_is_refused_before_and_after_a_collectd_restart(monitor, peer, keys):
    m = signed_monitor(
        monitor, keys, Services={"svc": {"commands": {"count": "echo x >> /tmp/$$; echo ok"}}}
    )
    p = peer(m)
    signed = Signer.from_file(str(keys["private"]), "ops").sign(
        m.command_topic, command_message("svc", "count")
    )
    p.send(m.command_topic, signed)
    assert p.result_for(m.result_topic, signed["task_id"])["code"] == 0
    p.send(m.command_topic, signed)
    wait_for(lambda: len(p.results(m.result_topic)) == 2, 10, what="the replay's answer")
    restart(m)
    p.send(m.command_topic, signed)
    wait_for(lambda: len(p.results(m.result_topic)) == 3, 10, what="the late replay's answer")
    assert [r["code"] for r in p.results(m.result_topic)] == [
        0,
        ResultCode.DUPLICATE_TASK,
        ResultCode.DUPLICATE_TASK,
    ]


# --------------------------------------------------------------------------- least privilege


def test_argument_lists_never_meet_a_shell(monitor, peer):
    argv = ["/bin/echo", "$(touch pwned)", ";", "touch", "pwned2", "|", "`id`", "*", "&&"]
    m = monitor(services={"svc": {"commands": {"echo": argv}}})
    p = peer(m)
    message = command_message("svc", "echo")
    p.send(m.command_topic, message)
    result = p.result_for(m.result_topic, message["task_id"])
    assert result["message"] == " ".join(argv[1:])
    assert not list(m.collectd.directory.rglob("pwned*"))


def test_run_as_user_working_directory_and_environment(monitor, peer, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    commands = {
        "whoami": {"argv": ["/usr/bin/id", "-un"], "user": "nobody"},
        "where": {"command": "pwd", "cwd": str(workdir)},
        "env": {"command": "env | sort", "EnvAllow": ["PATH"], "env": {"ROLE": "web"}},
        "inherit": "env",
    }
    m = monitor(services={"svc": {"commands": commands}}, env={"CM_TEST_SECRET": "do-not-leak"})
    p = peer(m)
    messages = {name: command_message("svc", name) for name in commands}
    for message in messages.values():
        p.send(m.command_topic, message)
    out = {name: p.result_for(m.result_topic, msg["task_id"]) for name, msg in messages.items()}
    assert out["whoami"]["message"] == "nobody"
    assert out["where"]["message"] == str(workdir)
    env_lines = out["env"]["message"].splitlines()
    assert "ROLE=web" in env_lines
    assert any(line.startswith("PATH=") for line in env_lines)
    assert not any(line.startswith("CM_TEST_SECRET") for line in env_lines)
    assert "CM_TEST_SECRET=do-not-leak" in out["inherit"]["message"]


def test_readable_config_with_secrets_warns_and_strict_mode_refuses(monitor):
    loose = monitor({"Password": "pw-in-file"}, wait_connected=False)
    loose.config_path.chmod(0o644)
    loose.collectd.stop()
    loose.collectd.start(wait_log="connected to")
    assert "SECURITY WARNING" in loose.log() and "chmod 600" in loose.log()

    strict = monitor(
        {"Password": "pw-in-file", "Security": {"StrictPermissions": True}}, wait_connected=False
    )
    strict.config_path.chmod(0o640)
    strict.collectd.stop()
    strict.collectd.start(wait_log="refusing to start")
    assert "connected to" not in strict.log()
    assert strict.collectd.pid() is not None
    assert "pw-in-file" not in loose.log() + strict.log()


# --------------------------------------------------------------------------- results survive


def persistent_peer(broker: Broker, topic: str) -> tuple[mqtt.Client, list[dict[str, Any]]]:
    """A subscriber whose session (and QoS 2 subscription) outlives broker restarts."""
    got: list[dict[str, Any]] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"keeper-{uuid.uuid4().hex[:6]}", clean_session=False
    )
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, msg: got.append(json.loads(msg.payload))
    client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(topic, 2)
    client.on_subscribe = lambda *_: subscribed.set()
    client.reconnect_delay_set(1, 1)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    assert subscribed.wait(5), "no SUBACK for the keeper's subscription"
    return client, got


def test_broker_killed_while_a_command_runs(monitor, tmp_path, certs):
    broker = Broker(tmp_path / "persistent-broker", persistence=True).start()
    keeper = None
    try:
        marker = f"cm-outage-{uuid.uuid4().hex[:6]}"
        m = monitor(
            broker=broker, services={"svc": {"commands": {"slow": f"sleep 2; echo {marker}"}}}
        )
        keeper, got = persistent_peer(broker, m.result_topic)
        message = command_message("svc", "slow")
        sender = mqtt.Client(CallbackAPIVersion.VERSION2)
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        sender.publish(m.command_topic, json.dumps(message), qos=2).wait_for_publish(5)
        sender.disconnect()
        sender.loop_stop()
        wait_for(lambda: pids_of(marker), 10, what="the command to start")
        broker.stop()
        wait_for(lambda: not pids_of(marker), 10, what="the command to finish")
        broker.start()
        found = wait_for(
            lambda: [r for r in got if r["task_id"] == message["task_id"]],
            20,
            what="the result after the outage",
        )
        assert found[0]["message"] == marker and found[0]["code"] == 0
        outbox = m.collectd.directory / "state"
        wait_for(lambda: not waiting_in(outbox), 10, what="an empty outbox")
    finally:
        if keeper is not None:
            keeper.disconnect()
            keeper.loop_stop()
        broker.stop()


def strand_a_result(monitor, broker, peer, line: str):
    """Run ``line`` and stop the broker while it runs: its result waits in the outbox.

    Returns the monitor, the command message and the outbox's state directory.
    """
    m = monitor(
        {"LogLevel": "debug"},  # "task N: running" is a debug line
        broker=broker,
        services={"svc": {"commands": {"job": line}}},
    )
    p = peer(m)
    message = command_message("svc", "job")
    p.send(m.command_topic, message)
    m.collectd.wait_log(f"task {message['task_id']}: running")
    p.close()
    broker.stop()  # the result cannot be delivered: it waits in the outbox
    state = m.collectd.directory / "state"
    wait_for(lambda: waiting_in(state), 10, what="the result in the outbox")
    return m, message, state


def restart_and_receive(m, broker, peer, message, state, expected: str) -> int:
    """Start broker and collectd again; the kept result arrives. Returns the log offset."""
    broker.start()
    p2 = peer(m)
    offset = len(m.log())
    m.collectd.start()
    m.collectd.wait_log("kept in the outbox", start=offset)
    result = p2.result_for(m.result_topic, message["task_id"])
    assert (result["code"], result["message"]) == (0, expected)
    wait_for(lambda: not waiting_in(state), 10, what="an empty outbox")
    return offset


def test_a_result_in_the_outbox_is_published_after_a_collectd_restart(monitor, fresh_broker, peer):
    m, message, outbox = strand_a_result(monitor, fresh_broker, peer, "sleep 2; echo late")
    m.collectd.stop()
    assert waiting_in(outbox), "the unsent result must survive the stop"
    restart_and_receive(m, fresh_broker, peer, message, outbox, "late")


def test_a_result_survives_collectd_killed_right_after_the_command_ran(monitor, fresh_broker, peer):
    """SIGKILL, no shutdown callback: the result in the outbox (page cache) goes out on restart."""
    m, message, state = strand_a_result(monitor, fresh_broker, peer, "sleep 1; echo kept")
    pid = m.collectd.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    m.collectd.stop()  # reaps it
    offset = restart_and_receive(m, fresh_broker, peer, message, state, "kept")
    assert "unusable" not in m.log()[offset:]


def test_a_redelivered_qos1_command_runs_once(monitor, peer, tmp_path):
    counter = tmp_path / "runs.txt"
    m = monitor(
        {"QoS": 1}, services={"svc": {"commands": {"count": f"echo run >> {counter}; echo ok"}}}
    )
    p = peer(m)
    message = command_message("svc", "count")
    p.send(m.command_topic, message, qos=1)
    p.send(m.command_topic, message, qos=1)
    wait_for(lambda: len(p.results(m.result_topic)) == 2, 10, what="two answers")
    assert counter.read_text() == "run\n"
    assert sorted(r["code"] for r in p.results(m.result_topic)) == [0, ResultCode.DUPLICATE_TASK]


# --------------------------------------------------------------------------- MQTT 5


def mqtt5_client(broker: Broker) -> tuple[mqtt.Client, list[mqtt.MQTTMessage]]:
    got: list[mqtt.MQTTMessage] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, msg: got.append(msg)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client, got


def test_mqtt5_response_topic_and_correlation_data(monitor):
    m = monitor()
    client, got = mqtt5_client(m.broker)
    try:
        reply = f"test/replies/{uuid.uuid4().hex[:6]}"
        subscribed = threading.Event()
        client.on_subscribe = lambda *_: subscribed.set()
        client.subscribe(reply, 2)
        assert subscribed.wait(5)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply
        props.CorrelationData = b"corr-42"
        message = command_message("hello", "exec")
        client.publish(m.command_topic, json.dumps(message), qos=2, properties=props)
        answer = wait_for(lambda: got, 10, what="the answer on the response topic")[0]
        assert answer.topic == reply
        assert answer.properties.CorrelationData == b"corr-42"
        assert json.loads(answer.payload)["message"] == "Hello World!"
    finally:
        client.disconnect()
        client.loop_stop()


def test_mqtt311_only_plugin_still_works(monitor):
    m = monitor({"MqttVersion": "3.1.1"})
    assert "(MQTT 3.1.1)" in m.log()
    done = cli("send-command", "hello", "exec", *send_args(m), "--mqtt-version", "3.1.1")
    assert done.returncode == 0, done.stderr


def test_expired_commands_are_not_run_by_a_host_that_comes_back(monitor, tmp_path):
    counter = tmp_path / "runs.txt"
    m = monitor(
        services={"svc": {"commands": {"a": f"echo a >> {counter}", "b": f"echo b >> {counter}"}}}
    )
    m.collectd.stop()  # its persistent session stays on the broker and queues for it
    client, _ = mqtt5_client(m.broker)
    try:
        short = Properties(PacketTypes.PUBLISH)
        short.MessageExpiryInterval = 1
        stale, fresh = command_message("svc", "a"), command_message("svc", "b")
        client.publish(
            m.command_topic, json.dumps(stale), qos=1, properties=short
        ).wait_for_publish(5)
        client.publish(m.command_topic, json.dumps(fresh), qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    time.sleep(2.2)  # let the first message's expiry pass while the host is away
    offset = len(m.log())
    m.collectd.start()
    m.collectd.wait_log(f"task {fresh['task_id']}: svc/b ended", start=offset)
    assert counter.read_text() == "b\n"
    assert f"task {stale['task_id']}" not in m.log()


# --------------------------------------------------------------------------- presence


def test_retained_presence_and_last_will(monitor):
    status_topic = f"test/{uuid.uuid4().hex[:8]}/status"
    m = monitor({"StatusTopic": status_topic})
    seen: list[dict[str, Any]] = []

    def watcher() -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.on_message = lambda _c, _u, msg: seen.append(
            {**json.loads(msg.payload), "retained": msg.retain}
        )
        client.connect("127.0.0.1", m.broker.port)
        client.subscribe(status_topic, 1)
        client.loop_start()
        return client

    late = watcher()  # subscribes after the fact: gets the retained "online"
    try:
        first = wait_for(lambda: seen, 5, what="retained presence")[0]
        assert first["status"] == "online" and first["retained"]
        pid = m.collectd.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # no DISCONNECT: the broker publishes the will
        will = wait_for(lambda: [s for s in seen if s["status"] == "offline"], 10, what="last will")
        assert will[0]["reason"] == "connection lost"
    finally:
        late.disconnect()
        late.loop_stop()
    seen.clear()
    again = watcher()
    try:
        assert wait_for(lambda: seen, 5, what="retained will")[0]["status"] == "offline"
    finally:
        again.disconnect()
        again.loop_stop()


def test_clean_shutdown_publishes_offline(monitor):
    status_topic = f"test/{uuid.uuid4().hex[:8]}/status"
    m = monitor({"StatusTopic": status_topic})
    m.collectd.stop()
    seen: list[dict[str, Any]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, msg: seen.append(json.loads(msg.payload))
    client.connect("127.0.0.1", m.broker.port)
    client.subscribe(status_topic, 1)
    client.loop_start()
    try:
        status = wait_for(lambda: seen, 5, what="retained status")[0]
        assert (status["status"], status["reason"]) == ("offline", "shutdown")
    finally:
        client.disconnect()
        client.loop_stop()


# --------------------------------------------------------------------------- broker ACL


def test_example_acl_confines_each_host_to_its_own_topics(monitor, tmp_path):
    passwd = tmp_path / "acl-passwd"
    passwd.write_text("")
    for user in ("web1", "web2", "ops"):
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, f"{user}-pw"], check=True)
    port = free_port()
    broker = Broker(
        tmp_path / "acl-broker",
        extra_conf=f"listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {ACL_EXAMPLE}\n",
    ).start()
    try:
        acl_host = f"127.0.0.1:{port}"
        web1 = monitor(
            {
                "Host": acl_host,
                "User": "web1",
                "Password": "web1-pw",
                "CommandTopic": "collectd-monitor/web1/command",
                "CommandResultTopic": "collectd-monitor/web1/result",
                "StatusTopic": "collectd-monitor/web1/status",
            },
            broker=broker,
        )
        ops = ["--host", acl_host, "--user", "ops", "--password", "ops-pw"]
        ok = cli("send-command", "hello", "exec", *ops, "--to", "web1", "--timeout", "10")
        assert ok.returncode == 0, ok.stderr + web1.log()

        # web1 tries to listen to web2's commands and to forge web2's results.
        spy_got: list[bytes] = []
        spy = mqtt.Client(CallbackAPIVersion.VERSION2)
        spy.username_pw_set("web1", "web1-pw")
        spy.on_message = lambda _c, _u, msg: spy_got.append(msg.payload)
        spy.connect("127.0.0.1", port)
        spy.loop_start()
        watcher_got: list[bytes] = []
        watcher = mqtt.Client(CallbackAPIVersion.VERSION2)
        watcher.username_pw_set("ops", "ops-pw")
        watcher.on_message = lambda _c, _u, msg: watcher_got.append(msg.payload)
        watcher.connect("127.0.0.1", port)
        watcher.loop_start()
        acked: set[tuple[str, int]] = set()
        spy.on_subscribe = lambda _c, _u, mid, _rc, _p: acked.add(("spy", mid))
        watcher.on_subscribe = lambda _c, _u, mid, _rc, _p: acked.add(("watcher", mid))
        try:
            wait_for(lambda: spy.is_connected() and watcher.is_connected(), 5, what="clients")
            asked = {
                ("spy", spy.subscribe("collectd-monitor/web2/command", 1)[1]),
                ("watcher", watcher.subscribe("collectd-monitor/web2/result", 1)[1]),
                ("watcher", watcher.subscribe("collectd-monitor/web1/result", 1)[1]),
            }
            wait_for(lambda: asked <= acked, 5, what="SUBACKs")
            watcher.publish("collectd-monitor/web2/command", b"for web2 only", qos=1)
            spy.publish("collectd-monitor/web2/result", b"forged", qos=1)
            spy.publish("collectd-monitor/web1/result", b"own result", qos=1)
            wait_for(lambda: b"own result" in watcher_got, 5, what="web1's own result")
            assert spy_got == []
            assert b"forged" not in watcher_got
        finally:
            for client in (spy, watcher):
                client.disconnect()
                client.loop_stop()
    finally:
        broker.stop()
