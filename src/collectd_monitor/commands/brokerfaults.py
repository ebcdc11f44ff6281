"""What a broker can do to us short of a clean answer, and how we tell it apart.

Three things that otherwise look alike in a log ("lost connection", nothing):

* **Which MQTT version.** A broker that only speaks 3.1.1 does not always
  answer an MQTT 5 CONNECT with "unsupported protocol": some never answer
  (amqtt 0.12 misreads the properties), some close the socket (RabbitMQ
  3.10). With ``MqttVersion auto`` a CONNECT that gets no CONNACK within
  :data:`CONNACK_TIMEOUT`, or whose connection closes before one, is tried
  again with the other version; the version that worked is remembered per
  broker address for the life of the process (:class:`VersionMemory`).
* **Refusals.** SUBACK, PUBACK (and with MQTT 5 their reason codes) say
  when an ACL refused a subscription or a publish (:func:`refusal_reason`).
* **A client id taken over.** Two clients with one client id knock each
  other off in turn. MQTT 5 says so (reason 0x8E); with 3.1.1 the broker
  just closes the older connection, which we tell from a series of
  connections that each end soon after they were accepted (:class:`FlapWatch`).
"""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion

from collectd_monitor.errors import AuthError, TransportError

CONNACK_TIMEOUT = 3.0
"""Seconds an MQTT 5 CONNECT waits for its CONNACK under ``MqttVersion auto``."""

UNSUPPORTED_PROTOCOL = (1, 0x84)
"""CONNACK codes of a broker that does not speak the MQTT version we asked for."""

SESSION_TAKEN_OVER = 0x8E
SHORT_CONNECTIONS = 3
"""Connections in a row that end soon after CONNACK before we suspect a client id clash."""


class NoConnack(TransportError):
    """A CONNECT got no CONNACK (none in time, the socket closed, or "unsupported protocol")."""


def version_name(protocol: MQTTProtocolVersion | int) -> str:
    return "5" if protocol == mqtt.MQTTv5 else "3.1.1"


def unsupported_protocol(reason: Any) -> bool:
    return getattr(reason, "value", None) in UNSUPPORTED_PROTOCOL


def connack_verdict(arrived: bool, connack: dict[str, Any], *, address: str, auto: bool) -> None:
    """What a CONNECT came to, for the CLI's one-shot clients; return when accepted.

    ``arrived``: the wait for CONNACK (or for the socket to close) ended in time.
    ``connack`` holds ``reason`` (the CONNACK's) or ``closed`` (why the socket
    closed before one). Under ``auto`` everything that says "this broker does
    not speak MQTT 5" raises :class:`NoConnack`, for the caller to try 3.1.1.
    """
    if not arrived:
        if auto:
            raise NoConnack(f"no CONNACK within {CONNACK_TIMEOUT:g} s")
        raise TransportError(f"no answer from the broker at {address}")
    reason = connack.get("reason")
    if reason is None:
        closed = f"cannot connect to {address}: {connack.get('closed')}"
        raise NoConnack(closed) if auto else TransportError(closed)
    if reason.is_failure:
        text = str(reason)
        if auto and unsupported_protocol(reason):
            raise NoConnack(f"the broker answered {text!r}")
        if "authori" in text.lower() or "password" in text.lower():
            raise AuthError(f"the broker refused our credentials: {text}")
        raise TransportError(f"the broker refused the connection: {text}")


def taken_over(reason: Any) -> bool:
    return getattr(reason, "value", None) == SESSION_TAKEN_OVER


def refusal_reason(reason: Any) -> str | None:
    """Why a SUBACK/PUBACK ``reason`` refused, in words; None when it did not.

    MQTT 3.1.1 has only one failure code (SUBACK 0x80) and no reason: brokers
    send it for an ACL denial, so the text says that it is the likely cause.
    """
    if not getattr(reason, "is_failure", False):
        return None
    value = getattr(reason, "value", None)
    if value == 0x80:  # 3.1.1's only failure, or MQTT 5's "Unspecified error"
        return "refused without a reason (usually: not authorized by the broker's ACL)"
    text = str(reason)
    return text[:1].lower() + text[1:] if text else f"reason code {value}"


class VersionMemory:
    """The MQTT version that last worked with each broker address, in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._worked: dict[str, MQTTProtocolVersion] = {}

    def candidates(self, address: str, setting: str) -> list[MQTTProtocolVersion]:
        """The versions to try in order: the one set, or (auto) what worked, then the other."""
        if setting == "3.1.1":
            return [mqtt.MQTTv311]
        if setting == "5":
            return [mqtt.MQTTv5]
        with self._lock:
            first = self._worked.get(address, mqtt.MQTTv5)
        return [first, mqtt.MQTTv311 if first == mqtt.MQTTv5 else mqtt.MQTTv5]

    def worked(self, address: str, protocol: MQTTProtocolVersion) -> None:
        with self._lock:
            self._worked[address] = protocol

    def forget(self) -> None:
        with self._lock:
            self._worked.clear()


versions = VersionMemory()
"""This process's memory: the plugin's link, the recorder and the CLI share it."""


class FlapWatch:
    """Tells when a series of dropped connections means another client has our client id.

    Fed one call per connection that the broker ended; answers True once per
    series (the moment to log an ERROR), False otherwise. A connection that
    lasted ``short`` seconds or more ends a series.
    """

    def __init__(self, short: float, repeats: int = SHORT_CONNECTIONS) -> None:
        self.short = short
        self.repeats = repeats
        self._count = 0
        self._reported = False

    @property
    def flapping(self) -> bool:
        """A series has been reported and is still going on."""
        return self._reported

    def ended(self, uptime: float, *, taken: bool) -> bool:
        """A connection that lasted ``uptime`` s ended; ``taken``: the broker said why."""
        if uptime >= self.short:  # a stable connection: any series is over
            self._count = 0
            self._reported = False
            if not taken:
                return False
        else:
            self._count += 1
        if (taken or self._count >= self.repeats) and not self._reported:
            self._reported = True
            return True
        return False
