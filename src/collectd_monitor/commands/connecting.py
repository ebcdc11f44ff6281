"""The failure side of the MQTT link's connection attempts (a base of ``MqttLink``).

:meth:`Connecting._loop` runs paho's loop for one connection and tells why it
went down before CONNACK (none in time, the socket closed, "unsupported
protocol"); :meth:`Connecting._other_version` logs that and, under
``MqttVersion auto``, switches the MQTT version; refusals of a subscription or
a publish and connections the broker ends are reported here too, each once.
The state lives in :class:`~collectd_monitor.commands.transport.MqttLink`; the
annotations below name what this half reads and writes. It logs under the
link's logger, which is what operators filter on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

from collectd_monitor.brokersettings import BrokerSettings
from collectd_monitor.commands.acks import Acks
from collectd_monitor.commands.brokerfaults import (
    CONNACK_TIMEOUT,
    FlapWatch,
    taken_over,
    version_name,
    versions,
)
from collectd_monitor.commands.linkfailures import FailureLog, SocketErrors, explain

log = logging.getLogger("collectd_monitor.commands.transport")


class Connecting:
    """Why a connection failed or ended, and what the link does about it."""

    settings: BrokerSettings
    client: mqtt.Client
    last_error: str | None
    problems: tuple[str, ...]
    _stop: threading.Event
    _acks: Acks
    _topics: OrderedDict[int, str]
    _failures: FailureLog
    _socket_errors: SocketErrors
    _flaps: FlapWatch
    _on_problems: Callable[[tuple[str, ...]], None] | None
    _connect_timeout: float
    _connack: bool
    _unsupported: str | None
    _switched: bool
    _up_since: float

    def _make_client(self, protocol: MQTTProtocolVersion) -> mqtt.Client:
        """A new client wired to the link's callbacks (``MqttLink`` has it)."""
        raise NotImplementedError

    def _loop(self) -> str | None:
        """Run paho's loop until the link goes down; why, when it went down before CONNACK."""
        started = time.monotonic()
        limit = CONNACK_TIMEOUT if self.settings.protocol == "auto" else self._connect_timeout
        while not self._stop.is_set():
            try:
                rc = self.client.loop(timeout=0.2 if not self._connack else 1.0)
            except Exception as exc:  # paho raised: treat it as a lost link
                self._note_failure(f"MQTT loop error: {exc}")
                return None
            if self._unsupported is not None:
                return f"the broker answered {self._unsupported!r}"
            if self._connack:
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return None
            elif rc != MQTTErrorCode.MQTT_ERR_SUCCESS:  # paho calls none of our handlers
                why = explain(
                    self._socket_errors.take(),
                    secure=self.settings.secure,
                    client_cert=bool(self.settings.cert_file),
                )
                return f"the broker closed the connection before its CONNACK: {why}"
            elif time.monotonic() - started >= limit:
                return f"no CONNACK within {limit:g} s"
        return None

    def _other_version(self, failure: str) -> bool:
        """A CONNECT failed before CONNACK: log it; under auto switch versions.

        True to try again at once (the first switch since the last good
        connection), False to wait out the back-off first.
        """
        name = version_name(self.client.protocol)
        candidates = versions.candidates(self.settings.address, self.settings.protocol)
        others = [p for p in candidates if p != self.client.protocol]
        # Grouped by what failed, not by the version tried: an outage under auto
        # alternates versions and must still give one WARNING, not one per try.
        kind = "early close" if "before its CONNACK:" in failure else failure
        message = f"cannot connect to {self.settings.address} (MQTT {name}): {failure}"
        if not others:
            self._note_failure(message, kind)
            return False
        self._note_failure(f"{message}; trying MQTT {version_name(others[0])} next", kind)
        try:
            self.client.disconnect()
            self.client.loop(0.05)
        except Exception:  # the old client is dropped anyway
            pass
        self.client = self._make_client(others[0])
        self._acks.forget_all()
        self._topics.clear()
        immediate = not self._switched
        self._switched = True
        return immediate

    def _refused(self, problem: str) -> None:
        """The broker refused a subscription or a publish: an ACL denial, most likely."""
        if problem in self.problems:
            log.debug("%s (again)", problem)
            return
        user = f"user {self.settings.user!r}" if self.settings.user else "no user name"
        log.error("%s (we are %s on %s)", problem, user, self.settings.address)
        self.problems = (*self.problems, problem)
        if self._on_problems is not None:
            self._on_problems(self.problems)

    def _note_failure(self, message: str, kind: str | None = None) -> None:
        self._failures.failed(message, kind=kind)
        self.last_error = message

    def _connection_ended(self, reason: Any) -> None:
        """Log a lost connection; once per series, that another client has our client id."""
        taken = taken_over(reason)
        if self._flaps.ended(time.monotonic() - self._up_since, taken=taken):
            client_id = self.settings.client_id
            if taken:
                log.error(
                    "another client connected with our client id %r, and %s dropped us (%s); "
                    "each reconnect knocks the other off: give every client its own ClientId",
                    client_id,
                    self.settings.address,
                    reason,
                )
            else:
                log.error(
                    "%s closed our connection %d times in a row soon after accepting it: "
                    "probably another client connected with our client id %r "
                    "(give every client its own ClientId)",
                    self.settings.address,
                    self._flaps.repeats,
                    client_id,
                )
        elif self._flaps.flapping:
            log.debug("lost connection to %s: %s", self.settings.address, reason)
        else:
            log.warning("lost connection to %s: %s", self.settings.address, reason)
