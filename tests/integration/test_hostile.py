"""Hostile messages and local faults against real mosquitto and real collectd.

No single message cuts a host off (bounded results, quarantine of what the
broker will not take), a junk flood costs little, an unsigned message never
chooses where answers go, corrupt state is skipped, replay protection that
cannot persist says so, and no input breaks collectd's log.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.security import Signer
from collectd_monitor.testing.flood import junk_flood
from collectd_monitor.testing.sandbox import Broker, wait_for

from ..conftest import command_message

pytestmark = pytest.mark.integration

HMAC_SECRET = "a-shared-secret-of-enough-length"
PACKET_LIMIT = 40_000
"""Takes the 30 kB hostile message itself; not a 150 kB refusal nor a 64 kB output."""


@pytest.fixture
def small_broker(tmp_path: Path) -> Any:
    broker = Broker(tmp_path / "small-broker", max_packet_size=PACKET_LIMIT).start()
    yield broker
    broker.stop()


def restart(m: Any) -> None:
    m.collectd.stop()
    offset = len(m.log())
    m.collectd.start()
    m.collectd.wait_log("connected to", start=offset)
    client_id = json.loads(m.config_path.read_text())["ClientId"]
    m.broker.wait_subscribed(client_id, m.command_topic)


def assert_answers(m: Any, p: Any) -> None:
    message = command_message("hello", "exec")
    p.send(m.command_topic, message)
    assert p.result_for(m.result_topic, message["task_id"])["message"] == "Hello World!"


# --------------------------------------------------------------------------- cut off


def test_a_30kb_name_of_del_characters_does_not_cut_the_host_off(monitor, peer, small_broker):
    m = monitor(broker=small_broker)
    p = peer(m)
    hostile = command_message("\x7f" * 30_000, "x")
    p.send(m.command_topic, json.dumps(hostile, ensure_ascii=False))  # raw DEL bytes: 30 kB
    refusal = p.result_for(m.result_topic, hostile["task_id"])
    assert refusal["code"] == ResultCode.UNKNOWN_SERVICE
    assert len(json.dumps(refusal)) < 1000
    assert_answers(m, p)
    restart(m)
    assert_answers(m, p)


def test_output_too_large_for_the_broker_is_cut_under_mqtt5(monitor, peer, small_broker):
    m = monitor(broker=small_broker, services={"big": {"commands": {"out": "seq 1 20000"}}})
    p = peer(m)
    message = command_message("big", "out")
    p.send(m.command_topic, message)
    result = p.result_for(m.result_topic, message["task_id"])
    assert result["code"] == 0 and "result cut at" in result["message"]
    assert result["message"].startswith("1\n2\n3\n")


def test_a_result_the_broker_rejects_is_quarantined_under_mqtt311(monitor, peer, small_broker):
    services = {"big": {"commands": {"out": "seq 1 20000"}}, **hello_services()}
    m = monitor({"MqttVersion": "3.1.1"}, broker=small_broker, services=services)
    p = peer(m)
    big = command_message("big", "out")
    p.send(m.command_topic, big)
    m.collectd.wait_log("moved it to .*quarantine", timeout=30)
    assert_answers(m, p)
    quarantined = list((m.collectd.directory / "state").rglob("outbox/quarantine/*.json"))
    assert len(quarantined) == 1
    assert (
        json.loads(json.loads(quarantined[0].read_text())["payload"])["task_id"] == big["task_id"]
    )
    restart(m)
    assert_answers(m, p)
    assert "Traceback" not in m.log()


def hello_services() -> dict[str, Any]:
    return {"hello": {"commands": {"exec": 'echo "Hello World!"'}}}


# --------------------------------------------------------------------------- junk flood


def test_a_signed_command_behind_20000_unsigned_junk_messages_is_answered(monitor, peer):
    m = monitor({"Security": {"HmacKeys": {"central": HMAC_SECRET}}})
    p = peer(m)
    signer = Signer("hmac-sha256", "central", HMAC_SECRET.encode())
    report = junk_flood(m.broker.port, m.command_topic, m.result_topic, signer, total=20_000)
    assert report.answered, "the signed command behind the junk was answered"
    assert report.junk_results == 0
    assert [r for r in p.results(m.result_topic) if r["code"] != 0] == []
    assert "Traceback" not in m.log()


# --------------------------------------------------------------------------- reply-to


def test_an_unsigned_mqtt5_message_gets_no_reply_on_its_response_topic(monitor):
    m = monitor({"Security": {"HmacKeys": {"central": HMAC_SECRET}, "AnswerUnsigned": True}})
    got: list[mqtt.MQTTMessage] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, msg: got.append(msg)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", m.broker.port)
    client.loop_start()
    try:
        victim = f"test/victim/{uuid.uuid4().hex[:6]}"
        client.subscribe([(victim, 1), (m.result_topic, 1)])
        assert subscribed.wait(5)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = victim
        props.CorrelationData = b"x"
        unsigned = command_message("hello", "exec")
        client.publish(m.command_topic, json.dumps(unsigned), qos=1, properties=props)
        signed = Signer("hmac-sha256", "central", HMAC_SECRET.encode()).sign(
            m.command_topic, command_message("hello", "exec")
        )
        client.publish(m.command_topic, json.dumps(signed), qos=1, properties=props)
        wait_for(lambda: [g for g in got if g.topic == victim], 10, what="the signed reply")
        on_victim = [json.loads(g.payload)["task_id"] for g in got if g.topic == victim]
        assert on_victim == [signed["task_id"]]
        refusal = wait_for(
            lambda: [g for g in got if json.loads(g.payload)["task_id"] == unsigned["task_id"]],
            10,
            what="the refusal on the result topic",
        )
        assert [g.topic for g in refusal] == [m.result_topic]
    finally:
        client.disconnect()
        client.loop_stop()


# --------------------------------------------------------------------------- corrupt state


def test_corrupt_outbox_entries_are_skipped_and_the_host_answers(monitor, peer):
    m = monitor()
    outbox = next((m.collectd.directory / "state").rglob("outbox"))
    m.collectd.stop()
    corrupt = ['{"topic": 1, "payload": 2}', json.dumps({"topic": m.result_topic, "payload": 7})]
    corrupt.append("\x00garbage")
    for n, text in enumerate(corrupt, 1):
        (outbox / f"0000000000000000000{n}-1-00000{n}.json").write_text(text)
    restart(m)
    p = peer(m)
    assert_answers(m, p)
    names = [f"0000000000000000000{n}-1-00000{n}.json" for n in (1, 2, 3)]
    assert sorted(q.name for q in (outbox / "quarantine").iterdir()) == names
    assert m.log().count("is unusable") == 3
    assert "Traceback" not in m.log()


def test_unwritable_state_dir_is_an_error_and_shows_in_the_status(monitor, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    status_topic = f"test/{uuid.uuid4().hex[:8]}/status"
    m = monitor({"StateDir": str(blocker / "state"), "StatusTopic": status_topic})
    assert re.search(r"\[error\].*replay protection is memory-only", m.log())
    seen: list[dict[str, Any]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, msg: seen.append(json.loads(msg.payload))
    client.connect("127.0.0.1", m.broker.port)
    client.subscribe(status_topic, 1)
    client.loop_start()
    try:
        status = wait_for(lambda: seen, 5, what="retained status")[0]
        assert status["replay_protection"] == "memory-only"
    finally:
        client.disconnect()
        client.loop_stop()


# --------------------------------------------------------------------------- the log


FUZZ = [
    "line1\nforged: [error] fake line",
    "\r\x00\x1b[31mred\x7f",
    "\ud800lone",
    "x\udfff\u2028\u2029y",
    "tab\there\n\n",
]


def test_fuzzed_strings_keep_the_log_one_line_per_event(monitor, peer):
    m = monitor({"MaxRefusalsPerSecond": 1000})
    p = peer(m)
    offset = len(m.log())
    sent: list[dict[str, Any]] = []
    for n, text in enumerate(FUZZ):
        for field in ("service", "command"):
            message = command_message("hello", "exec")
            message[field] = text
            sent.append(message)
        sent.append({**command_message("hello", "exec"), "task_id": text})
        sent.append({**command_message("hello", "exec"), "timestamp": text})
        sent.append({**command_message(text, text), "task_id": 9_000_000 + n})
    for message in sent:
        p.send(m.command_topic, json.dumps(message, ensure_ascii=True))
    int_ids = [s["task_id"] for s in sent if isinstance(s["task_id"], int)]
    for task_id in int_ids:
        assert p.result_for(m.result_topic, task_id)["code"] != 0
    wait_for(lambda: len(p.results(m.result_topic)) == len(sent), 20, what="every answer")
    text = m.log()[offset:]
    assert "Traceback" not in text
    for line in text.splitlines():
        assert re.match(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] \[\w+\] ", line), line
    assert "forged: [error]" not in "".join(
        line for line in text.splitlines() if line.startswith("forged")
    )
