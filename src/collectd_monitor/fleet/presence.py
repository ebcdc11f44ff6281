"""Reading the hosts' retained status messages: who is online, since when, offering what."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion

from collectd_monitor.commands.brokerfaults import (
    CONNACK_TIMEOUT,
    NoConnack,
    connack_verdict,
    refusal_reason,
    version_name,
    versions,
)
from collectd_monitor.commands.client import connect, new_client
from collectd_monitor.config import BrokerSettings
from collectd_monitor.errors import TransportError
from collectd_monitor.fleet.topics import host_in


@dataclass(frozen=True)
class HostStatus:
    host: str
    status: str
    since: str | None = None
    version: str | None = None
    services: dict[str, list[str]] = field(default_factory=dict)
    config_push: bool | None = None
    reason: str | None = None
    timestamp: str | None = None
    topic: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "status": self.status,
            "since": self.since,
            "version": self.version,
            "services": self.services,
            "config_push": self.config_push,
            "reason": self.reason,
            "timestamp": self.timestamp,
            "topic": self.topic,
        }


def parse_status(template: str, topic: str, payload: bytes) -> HostStatus | None:
    """A status message as a :class:`HostStatus`; None for anything else (or a cleared one)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        return None
    host = data.get("host") if isinstance(data.get("host"), str) else None
    host = host or host_in(template, topic) or topic
    services: dict[str, list[str]] = {}
    if isinstance(data.get("services"), dict):
        for name, commands in data["services"].items():
            if isinstance(commands, list):
                services[str(name)] = [str(c) for c in commands]
    push = data.get("config_push")

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return HostStatus(
        host=host,
        status=data["status"],
        since=text("since") or (text("timestamp") if data["status"] != "online" else None),
        version=text("version"),
        services=services,
        config_push=push if isinstance(push, bool) else None,
        reason=text("reason"),
        timestamp=text("timestamp"),
        topic=topic,
    )


def read_statuses(
    settings: BrokerSettings,
    template: str,
    *,
    connect_timeout: float = 5.0,
    quiet: float = 1.0,
    limit: float = 30.0,
) -> list[HostStatus]:
    """The retained status of every host under ``template``, sorted by host.

    The broker sends retained messages right after our subscription; a probe
    message we publish after subscribing arrives after them, which tells us we
    have them all. Should the broker's ACL refuse the probe, ``quiet`` seconds
    without a message end the wait instead. With ``MqttVersion auto`` a
    CONNECT without CONNACK is tried again with the other MQTT version.
    """
    failures = []
    candidates = versions.candidates(settings.address, settings.protocol)
    for protocol in candidates:
        try:
            found = _read(settings, template, protocol, connect_timeout, quiet, limit)
        except NoConnack as exc:
            failures.append(f"MQTT {version_name(protocol)}: {exc}")
            continue
        versions.worked(settings.address, protocol)
        return found
    raise TransportError(
        f"no usable answer from the broker at {settings.address} ({'; '.join(failures)})"
    )


def _read(
    settings: BrokerSettings,
    template: str,
    protocol: MQTTProtocolVersion,
    connect_timeout: float,
    quiet: float,
    limit: float,
) -> list[HostStatus]:
    client_id = f"collectd-monitor-hosts-{uuid.uuid4().hex[:12]}"
    probe = f"collectd-monitor-probe/{client_id}"
    client = new_client(replace(settings, client_id=client_id), client_id, protocol)
    client.connect_timeout = connect_timeout
    found: dict[str, HostStatus] = {}
    connack: dict[str, Any] = {}
    connected, done = threading.Event(), threading.Event()
    last = [time.monotonic()]
    refused: list[str] = []

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        connack["reason"] = reason
        connected.set()
        if not reason.is_failure:
            # QoS 0: a broker drops QoS 1 messages past its per-client queue
            # (mosquitto: 1000), which a fleet's retained statuses exceed at once
            c.subscribe([(template, 0), (probe, 0)])

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not connected.is_set():
            connack["closed"] = reason
            connected.set()

    def on_subscribe(c: mqtt.Client, _u: Any, _mid: Any, codes: Any, _p: Any) -> None:
        last[0] = time.monotonic()
        why = refusal_reason(codes[0]) if codes else None
        if why is not None:
            refused.append(f"the broker refused subscribe {template}: {why}")
            done.set()
            return
        c.publish(probe, b"probe", qos=0)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            last[0] = time.monotonic()
            if message.topic == probe:
                done.set()
                return
            status = parse_status(template, message.topic, bytes(message.payload))
            if status is not None:
                found[message.topic] = status
        except Exception:  # an exception here would end paho's thread
            pass

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_disconnect = on_disconnect
    try:
        connect(client, replace(settings, keepalive=30), clean=True)
    except ssl.SSLError as exc:
        raise TransportError(f"TLS with {settings.address} failed: {exc}") from None
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot connect to {settings.address}: {exc}") from None
    auto = settings.protocol == "auto"
    client.loop_start()
    try:
        connack_verdict(
            connected.wait(CONNACK_TIMEOUT if auto else connect_timeout),
            connack,
            address=settings.address,
            auto=auto,
        )
        end = time.monotonic() + limit
        while not done.wait(0.05):
            now = time.monotonic()
            if now - last[0] >= quiet or now >= end:
                break
        if refused:
            raise TransportError(refused[0])
    finally:
        client.disconnect()
        client.loop_stop()
    return sorted(found.values(), key=lambda s: (s.host, s.topic))
