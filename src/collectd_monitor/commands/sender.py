"""The sending side: publish one request and wait for the result with its task_id.

Unlike the original sender, which took the first message on the result topic
and waited forever, this one matches the task_id, gives up after a deadline,
and rides out a dropped broker connection (reconnecting and resubscribing).

With MQTT 5 (tried first, falling back to 3.1.1) the request also names a
response topic of its own with correlation data, and carries a message expiry
so that a host which comes back hours later does not run a stale command.
With ``MqttVersion auto`` an MQTT 5 CONNECT that gets no CONNACK within a few
seconds, or whose connection closes first, is tried again with 3.1.1. A
refused subscription to the result topic, or (MQTT 5, QoS 1) a refused
publish of the request, ends the wait at once with :class:`BrokerRefused`.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collectd_monitor.brokersettings import BrokerSettings
from collectd_monitor.commands.brokerfaults import (
    CONNACK_TIMEOUT,
    NoConnack,
    connack_verdict,
    refusal_reason,
    version_name,
    versions,
)
from collectd_monitor.commands.client import connect, new_client
from collectd_monitor.commands.linkfailures import SocketErrors, explain
from collectd_monitor.commands.protocol import Result
from collectd_monitor.errors import MonitorError, TransportError

if TYPE_CHECKING:  # signing loads hashlib, hmac and maybe cryptography: only with --sign-key
    from collectd_monitor.commands.security import Signer

log = logging.getLogger(__name__)


class ResultTimeout(MonitorError):
    pass


class CodelessResult(MonitorError):
    """The host answered our task_id without a ``code``: the original Lua plugin does so
    (for ``exit N`` and for output without a final newline). ``data`` is its answer."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)
        super().__init__(
            f"task {self.data.get('task_id')}: the host answered without a result code "
            "(an original lua-collectd-monitor plugin?); taken as a failure"
        )


def codeless_answer(payload: bytes, task_id: int) -> dict[str, Any] | None:
    """The decoded answer when ``payload`` is a result for ``task_id`` without ``code``."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and data.get("task_id") == task_id and "code" not in data:
        return data
    return None


class BrokerRefused(TransportError):
    """The broker refused a subscription or a publish (an ACL, most likely)."""


def new_task_id() -> int:
    """A random id in 1..2^32, as the original's senders pick them."""
    return random.SystemRandom().randint(1, 2**32)


class Sender:
    """One MQTT session that sends a request and collects its result.

    With ``persistent`` the session survives a dropped connection on the
    broker's side (clean session off), so a result published while we were
    away is still delivered; the session is cleared when we are done.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        topic: str,
        result_topic: str,
        *,
        persistent: bool = False,
        connect_timeout: float = 5.0,
        signer: Signer | None = None,
        expiry: float | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.result_topic = result_topic
        self.persistent = persistent
        self.connect_timeout = connect_timeout
        self.signer = signer
        self.expiry = expiry
        self.progress = progress or (lambda _text: None)

    def request(self, payload: Mapping[str, Any], timeout: float) -> Result:
        """Send ``payload`` (which carries its task_id) and return the matching result.

        Raises :class:`TransportError` / :class:`AuthError` when the broker cannot
        be reached or refuses us, :class:`ResultTimeout` when no result comes.
        """
        if self.signer is not None:
            payload = self.signer.sign(self.topic, payload)
        address = self.settings.address
        failures = []
        candidates = versions.candidates(address, self.settings.protocol)
        for protocol in candidates:
            try:
                result = self._attempt(payload, timeout, protocol)
            except NoConnack as exc:
                failures.append(f"MQTT {version_name(protocol)}: {exc}")
                if protocol != candidates[-1]:
                    self.progress(f"{failures[-1]}; trying MQTT {version_name(candidates[-1])}")
                continue
            versions.worked(address, protocol)
            return result
        raise TransportError(
            f"no usable answer from the broker at {address} ({'; '.join(failures)})"
        )

    def _client(self, client_id: str, protocol: MQTTProtocolVersion) -> mqtt.Client:
        client = new_client(self.settings, client_id, protocol)
        client.connect_timeout = self.connect_timeout
        client.reconnect_delay_set(1, 2)
        return client

    def _attempt(
        self, payload: Mapping[str, Any], timeout: float, protocol: MQTTProtocolVersion
    ) -> Result:
        task_id = payload["task_id"]
        client_id = f"collectd-monitor-sender-{task_id}"
        client = self._client(client_id, protocol)
        mqtt5 = protocol == mqtt.MQTTv5
        response_topic = f"{self.result_topic}/{client_id}"
        topics = [self.result_topic, response_topic] if mqtt5 else [self.result_topic]
        body = json.dumps(dict(payload), ensure_ascii=False).encode("utf-8")
        properties = None
        if mqtt5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = response_topic
            properties.CorrelationData = str(task_id).encode()
            if self.expiry:
                properties.MessageExpiryInterval = max(1, round(self.expiry))

        connack: dict[str, Any] = {}
        socket_errors = SocketErrors()
        client.on_log = socket_errors.on_log
        connected, done, sent = threading.Event(), threading.Event(), threading.Event()
        result: list[Result] = []
        codeless: list[dict[str, Any]] = []
        refused: list[str] = []

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            try:
                connack["reason"] = reason
                connected.set()
                if not reason.is_failure:
                    if sent.is_set():
                        self.progress("reconnected to the broker; still waiting")
                    c.subscribe([(topic, self.settings.qos) for topic in topics])
            except Exception:
                log.exception("connect handler")

        def on_subscribe(c: mqtt.Client, _u: Any, _mid: Any, codes: Any, _p: Any) -> None:
            try:
                why = refusal_reason(codes[0]) if codes else None  # codes[0]: the result topic
                if why is not None:
                    refused.append(f"the broker refused subscribe {self.result_topic}: {why}")
                    done.set()
                elif not sent.is_set():
                    sent.set()
                    info = c.publish(self.topic, body, qos=self.settings.qos, properties=properties)
                    connack["publish_mid"] = info.mid
            except Exception:
                log.exception("subscribe handler")

        def on_publish(_c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
            why = refusal_reason(reason)
            if why is not None and mid == connack.get("publish_mid"):
                refused.append(f"the broker refused the publish to {self.topic}: {why}")
                done.set()

        def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
            try:
                answer = Result.decode(bytes(message.payload))
            except ValueError:
                data = codeless_answer(bytes(message.payload), task_id)
                if data is not None and not done.is_set():
                    codeless.append(data)
                    done.set()
                return
            if answer.task_id == task_id and not done.is_set():
                result.append(answer)
                done.set()

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not connected.is_set():  # dropped before any CONNACK: paho gives no reason
                connack["closed"] = explain(
                    socket_errors.take(),
                    secure=self.settings.secure,
                    client_cert=bool(self.settings.cert_file),
                )
                connected.set()
            elif not done.is_set() and sent.is_set():
                self.progress(f"lost the broker connection ({reason}); reconnecting")

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_publish = on_publish
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        settings = replace(self.settings, keepalive=60)
        try:
            connect(client, settings, clean=not self.persistent)
        except ssl.SSLError as exc:
            raise TransportError(f"TLS with {self.settings.address} failed: {exc}") from None
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to {self.settings.address}: {exc}") from None
        deadline = time.monotonic() + timeout
        auto = self.settings.protocol == "auto"
        client.loop_start()
        try:
            connack_verdict(
                connected.wait(CONNACK_TIMEOUT if auto else self.connect_timeout),
                connack,
                address=self.settings.address,
                auto=auto,
            )
            connack["up"] = True
            if not done.wait(max(deadline - time.monotonic(), 0)):
                raise ResultTimeout(
                    f"no result for task {task_id} within {timeout:g} s"
                    + ("" if sent.is_set() else " (the request was never sent)")
                )
            if codeless:
                raise CodelessResult(codeless[0])
            if refused:
                raise BrokerRefused(refused[0])
            return result[0]
        finally:
            client.disconnect()
            client.loop_stop()
            if self.persistent and connack.get("up"):
                self._clear_session(client_id, protocol)

    def _clear_session(self, client_id: str, protocol: MQTTProtocolVersion) -> None:
        """Drop our persistent session on the broker: connect once with clean session."""
        client = self._client(client_id, protocol)
        try:
            connect(client, replace(self.settings, keepalive=10), clean=True)
            client.loop(0.2)
            client.disconnect()
        except (OSError, ValueError):
            pass
