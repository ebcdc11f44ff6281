"""RemoteAgent in-process: decode -> verify -> dedupe -> dispatch -> outbox -> reply-to.

A fake link stands in for MQTT: it records what the agent publishes and lets
the test say when the broker acknowledged a message (or paho dropped it).
Commands really run, on a real executor.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collectd_monitor import process as process_module
from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.acks import Done
from collectd_monitor.commands.agent import RemoteAgent
from collectd_monitor.commands.flusher import Flusher
from collectd_monitor.commands.outbox import waiting
from collectd_monitor.commands.protocol import ConfigRequest, Result, format_timestamp
from collectd_monitor.commands.security import Signer
from collectd_monitor.commands.transport import MqttLink
from collectd_monitor.config import MonitorConfig, load_config, lookup_command
from collectd_monitor.executor import CommandExecutor, Job, Outcome
from collectd_monitor.runtime import SharedExecutor
from collectd_monitor.testing.sandbox import wait_for

COMMAND_TOPIC = "cm/test/command"
RESULT_TOPIC = "cm/test/result"
STATUS_TOPIC = "cm/test/status"
HMAC_SECRET = "a-shared-secret-of-32-characters"


@dataclass
class Sent:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None
    on_done: Done | None
    settled: bool = False

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.payload)
        return data


@dataclass
class FakeLink:
    """The part of MqttLink the agent uses; acknowledgements are the test's to give."""

    connected: bool = False
    carries: bool = True
    """What publish() answers: False plays paho refusing (QoS 0 while offline)."""
    error: Exception | None = None
    """Raised by publish() when set: plays paho refusing a message outright."""
    last_error: str | None = None
    max_packet_size: int | None = None
    discarded: int = 0
    """How often the agent asked to drop what the link still carries."""
    sent: list[Sent] = field(default_factory=list)
    started: bool = False
    stopped: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 0.5) -> None:
        self.stopped = True

    def discard_unsent(self) -> None:
        self.discarded += 1
        for sent in list(self.sent):
            if sent.on_done and not sent.settled:
                self.settle(sent, delivered=False)

    def flush(self, timeout: float) -> bool:
        with self._cond:
            return not any(s.on_done and not s.settled for s in self.sent)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
        on_done: Done | None = None,
    ) -> bool:
        with self._cond:
            self.sent.append(Sent(topic, payload, qos, retain, properties, on_done))
            self._cond.notify_all()
        if self.error is not None:
            raise self.error
        return self.carries

    # -- the test's side -------------------------------------------------------------

    def settle(self, sent: Sent, delivered: bool = True) -> None:
        assert not sent.settled and sent.on_done is not None
        sent.settled = True
        sent.on_done(delivered)

    def on(self, topic: str) -> list[Sent]:
        with self._cond:
            return [s for s in self.sent if s.topic == topic]

    def wait_for(self, topic: str, count: int = 1, timeout: float = 10.0) -> list[Sent]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.on(topic)) >= count, timeout), (
                f"{count} message(s) on {topic}; got {[s.payload for s in self.sent]}"
            )
            return self.on(topic)


def config_for(tmp_path: Path, **extra: Any) -> MonitorConfig:
    data = {
        "CommandTopic": COMMAND_TOPIC,
        "CommandResultTopic": RESULT_TOPIC,
        "StatusTopic": STATUS_TOPIC,
        "ClientId": "agent-test",
        "QoS": 1,
        "StateDir": str(tmp_path / "state"),
        "Services": {
            "hello": {"commands": {"exec": 'echo "Hello World!"', "slow": "sleep 30"}},
        },
        **extra,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return load_config({"MonitorConfigPath": str(path)}, hostname="test")


@pytest.fixture
def executor() -> Iterator[CommandExecutor]:
    pool = CommandExecutor(max_concurrent=2, max_queued=2)
    yield pool
    pool.shutdown(timeout=2)


class Agents:
    """Makes agents on fake links and stops them all at the end of a test."""

    def __init__(self, tmp_path: Path, executor: CommandExecutor) -> None:
        self.tmp_path = tmp_path
        self.executor = executor
        self.made: list[RemoteAgent] = []

    def __call__(
        self, executor: CommandExecutor | None = None, *, state: str = "state", **extra: Any
    ) -> tuple[RemoteAgent, FakeLink]:
        link = FakeLink()
        config = config_for(self.tmp_path, StateDir=str(self.tmp_path / state), **extra)
        agent = RemoteAgent(config, executor=executor or self.executor, link=link)
        self.made.append(agent)
        return agent, link


@pytest.fixture
def make_agent(tmp_path: Path, executor: CommandExecutor) -> Iterator[Agents]:
    agents = Agents(tmp_path, executor)
    yield agents
    for agent in agents.made:
        agent.stop()


def command(service: str = "hello", name: str = "exec", task_id: int = 1001) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "timestamp": format_timestamp(),
        "service": service,
        "command": name,
    }


def message(
    body: dict[str, Any] | bytes,
    *,
    response_topic: str | None = None,
    correlation: bytes | None = None,
) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=COMMAND_TOPIC.encode())
    msg.payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    if response_topic is not None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = response_topic
        if correlation is not None:
            props.CorrelationData = correlation
        msg.properties = props
    return msg


def outbox_files(agent: RemoteAgent) -> list[bytes]:
    """The payloads the outbox keeps on disk (its journal and entry files), read as a
    later run would find them."""
    assert agent.outbox.directory is not None
    return sorted(payload for _, payload in waiting(agent.outbox.directory))


# --------------------------------------------------------------------------- the happy path


def test_a_command_runs_and_its_result_waits_in_the_outbox_until_acknowledged(
    make_agent: Agents,
) -> None:
    agent, link = make_agent()
    agent.handle_message(message(command(task_id=7)))
    (result,) = link.wait_for(RESULT_TOPIC)
    assert result.body["task_id"] == 7
    assert result.body["code"] == 0
    assert result.body["message"] == "Hello World!"
    assert result.qos == 1
    assert len(outbox_files(agent)) == 1  # written before it was published
    link.settle(result)
    assert outbox_files(agent) == []


def test_a_result_is_fsynced_after_its_publish_and_a_refusal_never(make_agent: Agents) -> None:
    agent, link = make_agent()
    syncs: list[int] = []

    def sync(fd: int) -> None:  # how many results had been published when this one was synced
        syncs.append(len(link.on(RESULT_TOPIC)))
        os.fsync(fd)

    agent.outbox.flusher = Flusher(sync=sync)
    agent.handle_message(message(command(service="nope", task_id=70)))  # refused
    agent.handle_message(message(command(task_id=71)))
    link.wait_for(RESULT_TOPIC, 2)
    assert len(outbox_files(agent)) == 2  # both kept on disk (page cache) before the publish
    assert agent.outbox.flusher.wait(10)
    assert syncs == [2]


def test_a_result_paho_dropped_is_published_again_on_connect(
    make_agent: Agents,
) -> None:
    agent, link = make_agent()
    agent.handle_message(message(command(task_id=8)))
    (first,) = link.wait_for(RESULT_TOPIC)
    agent.handle_connected()  # paho still carries it: not sent twice
    assert len(link.on(RESULT_TOPIC)) == 1
    link.settle(first, delivered=False)  # e.g. QoS 0 unsent when the link broke
    assert len(outbox_files(agent)) == 1
    agent.handle_connected()
    second = link.on(RESULT_TOPIC)[1]
    assert second.payload == first.payload
    link.settle(second)
    assert outbox_files(agent) == []


def test_a_result_paho_refused_stays_in_the_outbox_for_the_next_connect(
    make_agent: Agents,
) -> None:
    agent, link = make_agent()
    link.carries = False
    agent.handle_message(message(command(task_id=9)))
    link.wait_for(RESULT_TOPIC)
    assert len(outbox_files(agent)) == 1
    link.carries = True
    agent.handle_connected()
    retry = link.on(RESULT_TOPIC)[-1]
    assert retry.body["task_id"] == 9
    link.settle(retry)
    assert outbox_files(agent) == []


def test_a_publish_that_raised_leaves_the_result_for_the_next_connect(make_agent: Agents) -> None:
    agent, link = make_agent()
    link.error = ValueError("refused")
    with pytest.raises(ValueError):
        agent.publish(Result(task_id=13, code=0, message="done"))
    link.error = None
    agent.handle_connected()
    retry = link.on(RESULT_TOPIC)[-1]
    assert retry.body["task_id"] == 13
    link.settle(retry)
    assert outbox_files(agent) == []


def test_results_of_a_former_run_are_published_on_connect(
    make_agent: Agents,
) -> None:
    first, first_link = make_agent()
    first.handle_message(message(command(task_id=10)))
    first_link.wait_for(RESULT_TOPIC)
    first.stop()  # never acknowledged: stays on disk
    assert first_link.stopped

    agent, link = make_agent()
    agent.handle_connected()
    (presence,) = link.on(STATUS_TOPIC)
    assert presence.body["status"] == "online" and presence.retain
    (again,) = link.on(RESULT_TOPIC)
    assert again.body["task_id"] == 10
    link.settle(again)
    assert outbox_files(agent) == []


def test_mqtt5_reply_to_gets_the_result_with_the_correlation_data(
    make_agent: Agents,
) -> None:
    agent, link = make_agent()
    agent.handle_message(message(command(task_id=11), response_topic="me/inbox", correlation=b"c1"))
    (reply,) = link.wait_for("me/inbox")
    (result,) = link.on(RESULT_TOPIC)
    assert reply.payload == result.payload
    assert reply.properties is not None and reply.properties.CorrelationData == b"c1"
    assert reply.on_done is None  # the outbox copy is the one kept until acknowledged


def test_a_reply_to_the_result_topic_is_not_sent_twice(
    make_agent: Agents,
) -> None:
    agent, link = make_agent()
    agent.handle_message(message(command(task_id=12), response_topic=RESULT_TOPIC))
    link.wait_for(RESULT_TOPIC)
    assert len(link.sent) == 1


# --------------------------------------------------------------------------- refusals


def refusal(link: FakeLink) -> dict[str, Any]:
    (result,) = link.on(RESULT_TOPIC)
    return result.body


@pytest.mark.parametrize(
    ("make_body", "code"),
    [  # bodies are made when the test runs: a timestamp taken at collection may be stale
        (lambda: command(service="nope"), ResultCode.UNKNOWN_SERVICE),
        (lambda: command(name="nope"), ResultCode.UNKNOWN_COMMAND),
        (lambda: {"task_id": 5, "service": "hello", "command": "exec"}, ResultCode.MISSING_FIELD),
        (lambda: b'{"task_id": 5, "service": ', ResultCode.MALFORMED_JSON),
        (
            lambda: {**command(), "timestamp": "2001-01-01T00:00:00Z"},
            ResultCode.MESSAGE_EXPIRED,
        ),
    ],
)
def test_bad_requests_are_refused_with_their_code_and_run_nothing(
    make_agent: Agents,
    executor: CommandExecutor,
    make_body: Callable[[], dict[str, Any] | bytes],
    code: int,
) -> None:
    agent, link = make_agent()
    agent.handle_message(message(make_body()))
    assert refusal(link)["code"] == code
    assert executor.running == 0


def test_a_message_without_a_task_id_is_only_logged(
    make_agent: Agents, caplog: pytest.LogCaptureFixture
) -> None:
    agent, link = make_agent()
    agent.handle_message(message(b"not json at all"))
    assert link.sent == []
    assert "without a usable task_id" in caplog.text


def test_a_duplicate_task_id_is_refused_and_survives_a_restart(
    make_agent: Agents,
) -> None:
    agent, link = make_agent()
    agent.handle_message(message(command(task_id=21)))
    agent.handle_message(message(command(task_id=21)))
    results = link.wait_for(RESULT_TOPIC, 2)
    assert sorted(r.body["code"] for r in results) == [0, ResultCode.DUPLICATE_TASK]
    agent.stop()

    again, again_link = make_agent()
    again.handle_message(message(command(task_id=21)))
    assert refusal(again_link)["code"] == ResultCode.DUPLICATE_TASK


def test_a_reused_task_id_with_new_content_runs_but_a_redelivery_does_not(
    make_agent: Agents,
) -> None:
    agent, link = make_agent()
    first = command(task_id=22)
    agent.handle_message(message(first))
    link.wait_for(RESULT_TOPIC, 1)
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    reused = {**command(task_id=22), "timestamp": format_timestamp(earlier)}
    agent.handle_message(message(reused))
    agent.handle_message(message(first))  # the very same message again: refused
    results = link.wait_for(RESULT_TOPIC, 3)
    assert sorted(r.body["code"] for r in results) == [0, 0, ResultCode.DUPLICATE_TASK]


def test_the_brokers_redelivery_of_a_message_already_received_is_not_answered(
    make_agent: Agents, caplog: pytest.LogCaptureFixture
) -> None:
    agent, link = make_agent()
    first = command(task_id=23)
    agent.handle_message(message(first))
    (result,) = link.wait_for(RESULT_TOPIC)
    again = message(first)
    again.dup = True  # a QoS 1 message the broker sends again after a reconnect
    with caplog.at_level(logging.INFO, logger="collectd_monitor"):
        agent.handle_message(again)
    assert "task 23: delivered again by the broker" in caplog.text
    assert link.on(RESULT_TOPIC) == [result]  # not run again, and no 0x1100 to the sender
    agent.handle_message(message(first))  # the same without DUP: a replay, answered
    assert link.wait_for(RESULT_TOPIC, 2)[1].body["code"] == ResultCode.DUPLICATE_TASK


def test_a_redelivered_message_never_received_before_runs(make_agent: Agents) -> None:
    agent, link = make_agent()
    lost = message(command(task_id=24))
    lost.dup = True  # paho took it, collectd died before it was recorded: sent again
    agent.handle_message(lost)
    (result,) = link.wait_for(RESULT_TOPIC)
    assert result.body["code"] == 0


def test_commands_are_subscribed_at_qos_1_at_most(tmp_path: Path, executor: CommandExecutor):
    for qos, asked in ((2, 1), (1, 1), (0, 0)):
        config = config_for(tmp_path, StateDir=str(tmp_path / "state"), QoS=qos)
        agent = RemoteAgent(config, executor=executor)
        assert isinstance(agent.link, MqttLink)
        assert agent.link.subscriptions == [(config.command_topic, asked)]
        agent.stop()


def test_unsigned_and_forged_messages_are_refused_when_signatures_are_required(
    make_agent: Agents,
) -> None:
    security = {"Security": {"HmacKeys": {"central": HMAC_SECRET}, "AnswerUnsigned": True}}
    agent, link = make_agent(**security)
    agent.handle_message(message(command(task_id=31)))
    forged = Signer("hmac-sha256", "central", b"not-the-right-secret").sign(
        COMMAND_TOPIC, command(task_id=32)
    )
    agent.handle_message(message(forged))
    signed = Signer("hmac-sha256", "central", HMAC_SECRET.encode()).sign(
        COMMAND_TOPIC, command(task_id=33)
    )
    agent.handle_message(message(signed))
    results = {r.body["task_id"]: r.body["code"] for r in link.wait_for(RESULT_TOPIC, 3)}
    assert results[31] == ResultCode.SIGNATURE_MISSING
    assert results[32] == ResultCode.SIGNATURE_INVALID
    assert results[33] == 0


def test_a_full_queue_answers_busy(make_agent: Agents) -> None:
    pool = CommandExecutor(max_concurrent=1, max_queued=1)
    try:
        agent, link = make_agent(pool)
        agent.handle_message(message(command(name="slow", task_id=41)))
        wait_for(lambda: pool.running == 1, 10, what="the first command to start")
        agent.handle_message(message(command(name="slow", task_id=42)))  # waits in the queue
        agent.handle_message(message(command(name="slow", task_id=43)))
        (busy,) = link.wait_for(RESULT_TOPIC)
        assert busy.body["task_id"] == 43
        assert busy.body["code"] == ResultCode.BUSY
    finally:
        pool.shutdown(timeout=2)
    codes = {r.body["task_id"]: r.body["code"] for r in link.wait_for(RESULT_TOPIC, 3)}
    assert codes == {
        41: ResultCode.COMMAND_ABORTED,
        42: ResultCode.COMMAND_ABORTED,
        43: ResultCode.BUSY,
    }


def test_config_pushes_go_to_the_config_handler_or_are_not_implemented(
    make_agent: Agents,
) -> None:
    push = {"task_id": 51, "timestamp": format_timestamp(), "config": "Interval 10\n"}
    agent, link = make_agent()
    agent.handle_message(message(push))
    assert refusal(link)["code"] == ResultCode.NOT_IMPLEMENTED

    other, other_link = make_agent(state="other")
    seen: list[ConfigRequest] = []

    def handler(request: ConfigRequest, publish: Any) -> None:
        seen.append(request)
        publish(Result(request.task_id, 0, "applied"))

    other.config_handler = handler
    other.handle_message(message({**push, "task_id": 52}))
    assert [r.config for r in seen] == ["Interval 10\n"]
    answer = refusal(other_link)
    assert (answer["task_id"], answer["code"], answer["message"]) == (52, 0, "applied")


# --------------------------------------------------------------------------- life cycle


def test_stop_runs_hooks_publishes_offline_and_stops_the_link(
    make_agent: Agents,
) -> None:
    agent, link = make_agent()
    calls: list[str] = []
    agent.add_stop_hook(lambda: calls.append("hook"))
    agent.start()
    assert link.started
    link.connected = True
    agent.stop()
    assert calls == ["hook"]
    (offline,) = link.on(STATUS_TOPIC)
    assert offline.body["status"] == "offline" and offline.body["reason"] == "shutdown"
    assert link.stopped


def test_stopping_one_plugin_does_not_abort_the_other_plugins_command(tmp_path: Path) -> None:
    """The remote agent stops first; the local plugin's command keeps running."""
    shared = SharedExecutor()
    config = config_for(tmp_path)
    remote = shared.acquire(config)
    local = shared.acquire(config)
    assert remote.executor is local.executor
    agent = RemoteAgent(config, executor=remote.executor, link=FakeLink())
    agent.add_stop_hook(remote.release)
    outcomes: list[int] = []
    done = threading.Event()

    def finished(outcome: Outcome) -> None:
        outcomes.append(outcome.code)
        done.set()

    pool = local.executor
    pool.submit(Job(lookup_command(config, "hello", "slow", 0), finished))
    wait_for(lambda: pool.running == 1, 10, what="the local command to start")
    agent.stop()
    remote.release()  # a second release of one lease changes nothing
    assert pool.running == 1 and not pool.closed and not done.is_set()
    assert shared.holders == 1
    local.release()  # the last holder shuts the pool down
    assert done.wait(10)
    assert outcomes == [ResultCode.COMMAND_ABORTED]
    assert pool.closed and shared.holders == 0
    assert shared.acquire(config).executor is not pool  # a new start gets a new pool


def test_a_result_carries_stderr_beside_stdout_and_refusals_carry_none(
    make_agent: Agents,
) -> None:
    services = {"svc": {"commands": {"both": "echo out; echo inactive >&2; exit 3"}}}
    agent, link = make_agent(Services=services)
    agent.handle_message(message(command("svc", "both", task_id=51)))
    agent.handle_message(message(command("svc", "nope", task_id=52)))
    results = {r.body["task_id"]: r.body for r in link.wait_for(RESULT_TOPIC, 2)}
    assert (results[51]["code"], results[51]["message"], results[51]["stderr"]) == (
        3,
        "out",
        "inactive",
    )
    assert "stderr" not in results[52]
    assert Result.decode(json.dumps(results[51])).stderr == "inactive"


def test_a_service_added_to_config_json_is_served_without_a_restart(
    make_agent: Agents,
) -> None:
    from collectd_monitor.configwatch import ConfigWatch
    from collectd_monitor.runtime import reload_for_plugin

    agent, link = make_agent()
    assert agent.config.source is not None
    options = {"MonitorConfigPath": agent.config.source}
    agent.watch_config(
        ConfigWatch(
            agent.config,
            load=lambda: reload_for_plugin("test", options),
            apply=agent.apply_config,
            interval=3600,
        )
    )
    agent.handle_message(message(command("added", "run", task_id=61)))
    path = Path(agent.config.source)
    data = json.loads(path.read_text())
    data["Services"]["added"] = {"commands": {"run": "echo new"}}
    path.write_text(json.dumps(data))
    agent.handle_message(message(command("added", "run", task_id=62)))
    results = {r.body["task_id"]: r.body for r in link.wait_for(RESULT_TOPIC, 2)}
    assert results[61]["code"] == ResultCode.UNKNOWN_SERVICE
    assert (results[62]["code"], results[62]["message"]) == (0, "new")


def test_a_quick_command_logs_one_line_and_a_long_one_says_it_still_runs(
    make_agent: Agents, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process_module, "RUNNING_NOTICE", 0.2)
    services = {"svc": {"commands": {"quick": "true", "long": "sleep 0.6"}}}
    agent, link = make_agent(Services=services)
    with caplog.at_level(logging.INFO, logger="collectd_monitor"):
        agent.handle_message(message(command("svc", "quick", task_id=81)))
        link.wait_for(RESULT_TOPIC)
        agent.handle_message(message(command("svc", "long", task_id=82)))
        link.wait_for(RESULT_TOPIC, 2)
        assert agent.outbox.flusher.wait(10)  # the end lines follow the results
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    (quick,) = [line for line in lines if line.startswith("task 81:")]
    assert quick.startswith("task 81: svc/quick ended with code 0 (success) in ")
    assert any(line.startswith("task 82: running svc/long (for ") for line in lines)
    assert any(line.startswith("task 82: svc/long ended with code 0") for line in lines)


def test_the_end_line_is_written_after_the_result_is_out(
    make_agent: Agents, caplog: pytest.LogCaptureFixture
) -> None:
    agent, link = make_agent()
    published_before: list[int] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "ended with code" in record.getMessage():
                published_before.append(len(link.on(RESULT_TOPIC)))

    watch = Watch()
    logging.getLogger("collectd_monitor").addHandler(watch)
    try:
        with caplog.at_level(logging.INFO, logger="collectd_monitor"):
            agent.handle_message(message(command(task_id=83)))
            link.wait_for(RESULT_TOPIC)
            assert agent.outbox.flusher.wait(10)
    finally:
        logging.getLogger("collectd_monitor").removeHandler(watch)
    assert published_before == [1]
