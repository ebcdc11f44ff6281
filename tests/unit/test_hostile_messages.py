"""Hostile messages and corrupt state on the agent's message path (fake link, real executor).

Bounded results, cheap and rate-limited refusals, reply-to only for signed
messages when signatures are required, the outbox entry the broker will not
take, corrupt outbox files, and replay protection that cannot persist.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectd_monitor import fsutil
from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.agent import RemoteAgent
from collectd_monitor.commands.limits import StuckResults, fit_result, payload_limit
from collectd_monitor.commands.outbox import QUARANTINE
from collectd_monitor.commands.protocol import Result
from collectd_monitor.commands.refusals import RefusalGate
from collectd_monitor.commands.security import Signer
from collectd_monitor.executor import CommandExecutor
from collectd_monitor.logsetup import clip

from .test_agent import (
    COMMAND_TOPIC,
    HMAC_SECRET,
    RESULT_TOPIC,
    STATUS_TOPIC,
    Agents,
    FakeLink,
    command,
    config_for,
    message,
    outbox_files,
)

DEL_NAME = "\x7f" * 30_000


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    pool = CommandExecutor(max_concurrent=2, max_queued=2)
    made = Agents(tmp_path, pool)
    yield made
    for agent in made.made:
        agent.stop()
    pool.shutdown(timeout=2)


SIGNED = {"Security": {"HmacKeys": {"central": HMAC_SECRET}}}


def signed(body: dict[str, Any]) -> dict[str, Any]:
    return Signer("hmac-sha256", "central", HMAC_SECRET.encode()).sign(COMMAND_TOPIC, body)


# --------------------------------------------------------------------------- bounded


def test_clip_escapes_compactly_and_cuts() -> None:
    assert clip("a\nb\x7f") == "a\\nb\\x7f"
    long = clip(DEL_NAME)
    assert len(long) < 150 and long.endswith("...[30000 chars]")
    assert "\\x7" not in long.removesuffix("...[30000 chars]")[-3:]  # never half an escape
    assert clip("\ud800x") == "\\ud800x"


def test_fit_result_cuts_the_message_and_stays_valid_json() -> None:
    result = Result(task_id="\ud800\n" * 40, code=0, message="\x01" * 200_000)
    payload = fit_result(result, 4096)
    assert payload is not None and len(payload) <= 4096
    body = json.loads(payload)
    assert "result cut at 4096 bytes" in body["message"]
    assert "\n" not in body["task_id"] and len(body["task_id"]) < 100
    assert fit_result(Result(task_id=10**2000, code=1, message="x"), 1024) is None


def test_payload_limit_honours_the_brokers_packet_size() -> None:
    assert payload_limit(65536, None, "t") == 65536
    assert payload_limit(65536, 2000, "a/b") == 2000 - 3 - 64
    assert payload_limit(65536, 10, "a/b") == 512


def test_a_30kb_unknown_service_of_del_characters_gets_a_short_refusal(
    agents: Agents,
) -> None:
    agent, link = agents()
    agent.handle_message(message(command(service=DEL_NAME, task_id=5)))
    (result,) = link.wait_for(RESULT_TOPIC)
    assert len(result.payload) < 400
    assert result.body["code"] == ResultCode.UNKNOWN_SERVICE


def test_command_output_is_cut_to_max_result_bytes(agents: Agents) -> None:
    agent, link = agents(
        MaxResultBytes=2048,
        Services={"big": {"commands": {"out": "head -c 50000 /dev/zero | tr '\\0' x"}}},
    )
    agent.handle_message(message(command(service="big", name="out", task_id=6)))
    (result,) = link.wait_for(RESULT_TOPIC)
    assert len(result.payload) <= 2048
    assert result.body["code"] == 0 and "result cut at 2048 bytes" in result.body["message"]


def test_the_brokers_maximum_packet_size_bounds_results(agents: Agents) -> None:
    agent, link = agents(Services={"big": {"commands": {"out": "seq 1 20000"}}})
    link.max_packet_size = 3000
    agent.handle_message(message(command(service="big", name="out", task_id=8)))
    (result,) = link.wait_for(RESULT_TOPIC)
    assert len(result.payload) + len(RESULT_TOPIC) + 64 <= 3000


# --------------------------------------------------------------------------- quarantine


def test_stuck_results_strike_only_the_oldest() -> None:
    stuck = StuckResults(strikes=3)
    assert stuck.connected(["b", "a"]) is None
    assert stuck.connected(["b", "a"]) is None
    assert stuck.connected(["a", "b"]) == "a"
    stuck.settled("a")
    assert stuck.connected(["b"]) is None  # a network blip, once


def test_a_result_the_broker_keeps_dropping_us_over_is_quarantined(
    agents: Agents, caplog: pytest.LogCaptureFixture
) -> None:
    agent, link = agents()
    agent.handle_message(message(command(task_id=9)))
    link.wait_for(RESULT_TOPIC)
    (payload,) = outbox_files(agent)
    for _ in range(2):  # the connection drops with it in flight; paho sends it again
        agent.handle_connected()
        assert link.discarded == 0
    with caplog.at_level(logging.ERROR):
        agent.handle_connected()
    assert link.discarded == 1
    assert outbox_files(agent) == []
    assert agent.outbox.directory is not None
    (kept,) = (agent.outbox.directory / QUARANTINE).iterdir()
    assert json.loads(kept.read_text())["payload"] == payload.decode()
    assert [r.levelname for r in caplog.records if "moved it to" in r.getMessage()] == ["ERROR"]
    agent.handle_connected()  # the next connection works: the host answers again
    agent.handle_message(message(command(task_id=10)))
    assert link.wait_for(RESULT_TOPIC, 2)[-1].body["task_id"] == 10


def write_entry(agent: RemoteAgent, name: str, body: Any) -> None:
    assert agent.outbox.directory is not None
    text = body if isinstance(body, str) else json.dumps(body)
    (agent.outbox.directory / name).write_text(text)


@pytest.mark.parametrize(
    "corrupt",
    [
        {"topic": RESULT_TOPIC, "payload": 12},
        {"topic": ["x"], "payload": "{}"},
        [1, 2],
        "{not json",
        {"payload": "{}"},
    ],
    ids=["int-payload", "list-topic", "array", "not-json", "no-topic"],
)
def test_a_corrupt_outbox_entry_is_quarantined_and_the_rest_published(
    agents: Agents, corrupt: Any
) -> None:
    agent, link = agents()
    write_entry(agent, "00000000000000000001-1-000001.json", corrupt)
    write_entry(
        agent, "00000000000000000002-1-000002.json", {"topic": RESULT_TOPIC, "payload": "{}"}
    )
    agent.handle_connected()
    assert [s.payload for s in link.on(RESULT_TOPIC)] == [b"{}"]
    assert link.on(STATUS_TOPIC), "the status was published"
    assert agent.outbox.directory is not None
    assert (agent.outbox.directory / QUARANTINE / "00000000000000000001-1-000001.json").exists()


# --------------------------------------------------------------------------- cheap refusals


def test_refusals_are_not_fsynced(agents: Agents, monkeypatch: pytest.MonkeyPatch) -> None:
    agent, link = agents()
    synced: list[int] = []
    real = fsutil.os.fsync
    monkeypatch.setattr(fsutil.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    for n in range(10):
        agent.handle_message(message(command(service="nosuch", task_id=100 + n)))
    assert len(link.wait_for(RESULT_TOPIC, 10)) == 10
    assert synced == []


def test_refusals_past_the_rate_are_only_counted(
    agents: Agents, caplog: pytest.LogCaptureFixture
) -> None:
    agent, link = agents(MaxRefusalsPerSecond=5)
    with caplog.at_level(logging.WARNING):
        for n in range(200):
            agent.handle_message(message(command(service="nosuch", task_id=200 + n)))
    answered = len(link.on(RESULT_TOPIC))
    assert 5 <= answered < 20
    assert agent.refusals.suppressed_total == 200 - answered
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == answered
    agent.refusals.flush()
    assert f"{200 - answered} refusal(s)" in caplog.text


def test_the_refusal_gate_refills_and_summarises_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    gate = RefusalGate(2, interval=60, clock=lambda: now[0])
    assert [gate.admit(1) for _ in range(4)] == [True, True, False, False]
    now[0] = 1.0
    assert gate.admit(1) and gate.admit(1) and not gate.admit(1)
    assert "refusal(s)" not in caplog.text
    with caplog.at_level(logging.WARNING):
        now[0] = 61.0
        gate.tick()
    assert "3 refusal(s) in the last 61 s" in caplog.text


def test_unsigned_and_badly_signed_get_no_answer_when_signatures_are_required(
    agents: Agents,
) -> None:
    agent, link = agents(**SIGNED)
    agent.handle_message(message(command(task_id=301)))
    forged = Signer("hmac-sha256", "central", b"wrong-secret-wrong-secret").sign(
        COMMAND_TOPIC, command(task_id=302)
    )
    agent.handle_message(message(forged))
    agent.handle_message(message(b'{"task_id": 303, "service": '))
    agent.handle_message(message(signed(command(task_id=304))))
    results = link.wait_for(RESULT_TOPIC)
    assert [r.body["task_id"] for r in results] == [304]


def test_an_unsigned_message_never_chooses_where_refusals_go(agents: Agents) -> None:
    agent, link = agents(Security={**SIGNED["Security"], "AnswerUnsigned": True})
    agent.handle_message(message(command(task_id=311), response_topic="attacker/topic"))
    (refusal,) = link.wait_for(RESULT_TOPIC)
    assert refusal.body["code"] == ResultCode.SIGNATURE_MISSING
    agent.handle_message(message(signed(command(task_id=312)), response_topic="ops/replies"))
    link.wait_for("ops/replies")
    assert link.on("attacker/topic") == []


def test_without_required_signatures_the_reply_to_still_works(agents: Agents) -> None:
    agent, link = agents()
    agent.handle_message(message(command(service="nosuch", task_id=321), response_topic="r/t"))
    assert link.wait_for("r/t")[0].body["code"] == ResultCode.UNKNOWN_SERVICE


# --------------------------------------------------------------------------- replay protection


def test_replay_protection_that_cannot_persist_says_so(
    agents: Agents, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")
    with caplog.at_level(logging.ERROR):
        agent, link = agents(state="a-file/state")
    assert "replay protection is memory-only" in caplog.text
    agent.handle_connected()
    status = json.loads(link.on(STATUS_TOPIC)[0].payload)
    assert status["replay_protection"] == "memory-only"


def test_replay_protection_on_disk_is_reported_as_persistent(agents: Agents) -> None:
    agent, link = agents()
    agent.handle_connected()
    assert json.loads(link.on(STATUS_TOPIC)[0].payload)["replay_protection"] == "persistent"


# --------------------------------------------------------------------------- fuzz


NASTY = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\n", "\r", "\x00", "\x7f", "\u2028", "\ud800", "\udfff", "'", '"']),
    ),
    max_size=300,
)
VALUES = st.one_of(
    NASTY,
    st.integers(min_value=-(10**30), max_value=10**30),
    st.none(),
    st.booleans(),
    st.floats(),
    st.lists(st.integers(), max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    task_id=VALUES,
    service=VALUES,
    name=VALUES,
    signature=st.one_of(
        st.none(),
        st.fixed_dictionaries({"alg": VALUES, "key_id": VALUES, "value": VALUES}),
        VALUES,
    ),
)
def test_no_message_makes_a_traceback(
    fuzz_agent: tuple[RemoteAgent, Any],
    task_id: Any,
    service: Any,
    name: Any,
    signature: Any,
) -> None:
    agent, link = fuzz_agent
    body: dict[str, Any] = {"task_id": task_id, "timestamp": "2026-01-01T00:00:00Z"}
    body.update(service=service, command=name)
    if signature is not None:
        body["signature"] = signature
    payload = json.dumps(body, ensure_ascii=True).encode()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("collectd_monitor")
    logger.addHandler(handler)
    try:
        agent.handle_payload(payload)
        agent.handle_payload(payload[: len(payload) // 2])
    finally:
        logger.removeHandler(handler)
    assert [r for r in records if r.exc_info] == []
    for sent in link.sent:
        assert len(sent.payload) <= agent.config.max_result_bytes
        json.loads(sent.payload)


def test_huge_integers_and_deep_nesting_are_refused_cleanly(agents: Agents) -> None:
    agent, link = agents()
    agent.handle_payload(b'{"task_id": 77, "x": ' + b"1" * 5000 + b"}")
    agent.handle_payload(b"[" * 100_000)
    agent.handle_payload(b'{"task_id": 78, "service": "' + b"\xff" * 10 + b'"}')
    codes = {r.body["task_id"]: r.body["code"] for r in link.wait_for(RESULT_TOPIC, 2)}
    assert codes == {77: ResultCode.MALFORMED_JSON, 78: ResultCode.MALFORMED_JSON}


@pytest.fixture(scope="module")
def fuzz_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RemoteAgent, Any]]:
    pool = CommandExecutor(max_concurrent=1, max_queued=1)
    link = FakeLink()
    config = config_for(
        tmp_path_factory.mktemp("fuzz"),
        MaxResultBytes=2048,
        MaxRefusalsPerSecond=1_000_000,
        Security={
            "HmacKeys": {"central": HMAC_SECRET},
            "RequireSignature": False,
            "MaxMessageAge": 0,
        },
    )
    agent = RemoteAgent(config, executor=pool, link=link)
    yield agent, link
    agent.stop()
    pool.shutdown(timeout=2)


def test_a_rate_below_one_per_second_still_admits_now_and_then() -> None:
    now = [0.0]
    gate = RefusalGate(0.5, clock=lambda: now[0])
    assert gate.admit(1) and not gate.admit(1)
    now[0] = 2.0
    assert gate.admit(1)
