"""A bounded flood of mixed messages against a live remote plugin (loopback only).

Used by the test suite and by ``bench/bench_flood.py``. A third of the messages
are valid commands, a third are invalid but carry a task_id (each must get
exactly one refusal), a third carry no usable task_id (only logged). Messages
go out in batches; each batch waits for its answers (bounded), so the broker's
per-client queue limit is never the thing measured.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collectd_monitor.commands.protocol import format_timestamp


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class FloodReport:
    sent: int = 0
    valid: int = 0
    invalid_with_id: int = 0
    without_id: int = 0
    answered: int = 0
    """Valid commands answered exactly once."""
    rejected: int = 0
    """Invalid messages with a task_id refused exactly once."""
    duplicated: int = 0
    """Task ids answered more than once."""
    lost: int = 0
    """Messages with a task_id that got no answer at all."""
    codes: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0


def _invalid(task_id: int, rng: random.Random) -> bytes:
    now = format_timestamp()
    kind = rng.randrange(4)
    if kind == 0:
        return json.dumps(
            {"task_id": task_id, "timestamp": now, "service": "nosuch", "command": "x"}
        ).encode()
    if kind == 1:
        return json.dumps({"task_id": task_id, "timestamp": now, "service": "svc"}).encode()
    if kind == 2:
        return f'{{"task_id": {task_id}, "timestamp": "{now}", "service": '.encode()
    return json.dumps(
        {"task_id": task_id, "timestamp": now, "service": ["svc"], "command": "true"}
    ).encode()


def _junk(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 200))
    fixed = [b"[1, 2, 3]", b"null", b'{"service": "svc", "command": "true"}', b""]
    return fixed[kind - 1]


def run_flood(
    port: int,
    command_topic: str,
    result_topic: str,
    *,
    total: int = 3000,
    batch: int = 300,
    service: str = "svc",
    command: str = "true",
    seed: int = 1,
    batch_timeout: float = 30.0,
) -> FloodReport:
    rng = random.Random(seed)
    answers: Counter[Any] = Counter()
    codes: dict[Any, int] = {}
    lock = threading.Lock()
    arrived = threading.Condition(lock)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            result = json.loads(msg.payload)
        except ValueError:
            return
        with arrived:
            answers[result.get("task_id")] += 1
            codes[result.get("task_id")] = result.get("code")
            arrived.notify_all()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-{uuid.uuid4().hex[:8]}")
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(result_topic, 1)
    if not subscribed.wait(5):
        raise RuntimeError("no SUBACK")
    report = FloodReport()
    valid_ids: list[int] = []
    invalid_ids: list[int] = []
    base = rng.randrange(10**9, 2 * 10**9)
    started = time.monotonic()
    try:
        for first in range(0, total, batch):
            expected = []
            for n in range(first, min(first + batch, total)):
                task_id = base + n
                kind = n % 3
                if kind == 0:
                    payload = json.dumps(
                        {
                            "task_id": task_id,
                            "timestamp": format_timestamp(),
                            "service": service,
                            "command": command,
                        }
                    ).encode()
                    valid_ids.append(task_id)
                    expected.append(task_id)
                elif kind == 1:
                    payload = _invalid(task_id, rng)
                    invalid_ids.append(task_id)
                    expected.append(task_id)
                else:
                    payload = _junk(rng)
                    report.without_id += 1
                client.publish(command_topic, payload, qos=1)
                report.sent += 1
            deadline = time.monotonic() + batch_timeout
            with arrived:
                while not all(answers[t] for t in expected):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    arrived.wait(remaining)
        time.sleep(0.5)  # late duplicates, if any, would show up here
    finally:
        client.disconnect()
        client.loop_stop()
    report.seconds = time.monotonic() - started
    with lock:
        report.valid, report.invalid_with_id = len(valid_ids), len(invalid_ids)
        report.answered = sum(1 for t in valid_ids if answers[t] == 1)
        report.rejected = sum(1 for t in invalid_ids if answers[t] == 1)
        report.duplicated = sum(1 for t in valid_ids + invalid_ids if answers[t] > 1)
        report.lost = sum(1 for t in valid_ids + invalid_ids if answers[t] == 0)
        report.codes = Counter(codes[t] for t in valid_ids + invalid_ids if t in codes)
    return report


@dataclass
class JunkReport:
    sent: int = 0
    """Junk messages published (unsigned, each with a task_id)."""
    send_seconds: float = 0.0
    answered: bool = False
    """The signed command published after the junk got its result."""
    latency: float = 0.0
    """Seconds from publishing the signed command to its result."""
    junk_results: int = 0
    """Results that answered junk (with signatures required: refusals that got out)."""


def junk_flood(
    port: int,
    command_topic: str,
    result_topic: str,
    signer: Any,
    *,
    total: int = 20_000,
    service: str = "hello",
    command: str = "exec",
    timeout: float = 60.0,
    seed: int = 1,
) -> JunkReport:
    """``total`` unsigned junk commands (QoS 0), then one signed command (QoS 1).

    ``signer`` is a :class:`collectd_monitor.commands.security.Signer` whose key
    the host trusts. The junk carries task_ids, so a host that answers unsigned
    messages shows it in ``junk_results``.
    """
    rng = random.Random(seed)
    base = rng.randrange(10**9, 2 * 10**9)
    signed_id = base + total
    results: list[Any] = []
    answered = threading.Event()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            task_id = json.loads(msg.payload).get("task_id")
        except (ValueError, AttributeError):
            return
        results.append(task_id)
        if task_id == signed_id:
            answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"junk-{uuid.uuid4().hex[:8]}")
    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    report = JunkReport()
    try:
        client.subscribe(result_topic, 1)
        if not subscribed.wait(5):
            raise RuntimeError("no SUBACK")
        started = time.monotonic()
        for n in range(total):
            body = {
                "task_id": base + n,
                "timestamp": format_timestamp(),
                "service": rng.choice([service, "nosuch", "x" * rng.randrange(1, 300)]),
                "command": command,
            }
            client.publish(command_topic, json.dumps(body), qos=0)
            report.sent += 1
        signed = signer.sign(
            command_topic,
            {
                "task_id": signed_id,
                "timestamp": format_timestamp(),
                "service": service,
                "command": command,
            },
        )
        info = client.publish(command_topic, json.dumps(signed), qos=1)
        sent_at = time.monotonic()
        report.send_seconds = sent_at - started
        info.wait_for_publish(timeout)
        report.answered = answered.wait(timeout)
        report.latency = time.monotonic() - sent_at
        time.sleep(0.5)  # refusals of junk, if any, would still be arriving
    finally:
        client.disconnect()
        client.loop_stop()
    report.junk_results = sum(1 for task_id in results if task_id != signed_id)
    return report
