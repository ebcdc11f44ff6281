"""The MQTT link (paho-mqtt 2.x) of a collectd plugin.

We drive paho's network loop from a thread of our own instead of
``loop_start()``: paho's own reconnect wait sleeps in one-second steps, which
would hold up collectd's shutdown, while ours waits on an event that ``stop()``
sets. Every paho callback is guarded, because an exception inside one kills
paho's thread for good. Our socket runs without Nagle's delay: on loopback it
turns a 41 ms round trip into 1.4 ms.

Deliveries are followed through paho's public ``on_publish`` callback, keyed
by message id (:mod:`collectd_monitor.commands.acks`): a publisher learns once,
without polling, whether the broker took its message or paho dropped it.

A CONNECT without CONNACK, a refused subscription or publish and a client id
taken over are told apart (:mod:`.brokerfaults`) and logged as such by the
link's failure side (:mod:`.connecting`, a base class of :class:`MqttLink`).
The paho client itself is built in :mod:`.client`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties

from collectd_monitor.brokersettings import BrokerSettings
from collectd_monitor.commands.acks import Acks, Done
from collectd_monitor.commands.brokerfaults import (
    FlapWatch,
    refusal_reason,
    unsupported_protocol,
    versions,
)
from collectd_monitor.commands.client import connect, first_protocol, new_client
from collectd_monitor.commands.connecting import Connecting
from collectd_monitor.commands.linkfailures import FailureLog, SocketErrors

log = logging.getLogger(__name__)

MessageHandler = Callable[[mqtt.MQTTMessage], None]

TOPICS_REMEMBERED = 4096
"""Topics of published messages kept to name them in a refusal (by message id)."""


class Link(Protocol):
    """What the remote agent needs of its MQTT link (:class:`MqttLink` in production)."""

    last_error: str | None
    max_packet_size: int | None
    """The broker's Maximum Packet Size (MQTT 5 CONNACK), None when not announced."""

    @property
    def connected(self) -> bool: ...

    def discard_unsent(self) -> None:
        """Drop every message not yet acknowledged (their ``on_done`` get False)."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 0.5) -> None: ...

    def flush(self, timeout: float) -> bool: ...

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
        on_done: Done | None = None,
    ) -> bool: ...


class MqttLink(Connecting):
    """A self-healing MQTT connection that stays subscribed to ``subscriptions``.

    ``on_message`` and ``on_connected`` run on the link's thread: keep them
    short and hand real work to other threads.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: MessageHandler | None = None,
        on_connected: Callable[[], None] | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        connect_timeout: float = 5.0,
        on_problems: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.subscriptions = list(subscriptions)
        """(topic, QoS) pairs the link subscribes to after every CONNACK."""
        self._on_message = on_message
        self._on_connected = on_connected
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._acks = Acks()
        self._was_up = False
        self.last_error: str | None = None
        self.connect_count = 0
        self._failures = FailureLog(log, settings.address)
        self._socket_errors = SocketErrors()
        self.max_packet_size: int | None = None
        self._discard = False

        self._will = will
        self._connect_timeout = connect_timeout
        self._on_problems = on_problems
        self.problems: tuple[str, ...] = ()
        """Refusals since the last CONNACK: subscriptions and publishes an ACL denied."""
        self._connack = False
        self._unsupported: str | None = None
        self._switched = False
        self._up_since = 0.0
        self._flaps = FlapWatch(short=max(30.0, 10 * settings.reconnect_interval))
        self._subscribing: dict[int, str] = {}
        self._topics: OrderedDict[int, str] = OrderedDict()
        self.client = self._make_client(first_protocol(settings))

    def _make_client(self, protocol: MQTTProtocolVersion) -> mqtt.Client:
        client = new_client(self.settings, self.settings.client_id, protocol)
        client.connect_timeout = self._connect_timeout
        if self._will is not None:
            topic, payload, qos, retain = self._will
            client.will_set(topic, payload, qos, retain)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        client.on_pre_connect = self._handle_pre_connect
        return client

    @property
    def mqtt5(self) -> bool:
        return bool(self.client.protocol == mqtt.MQTTv5)

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cm-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 0.5) -> None:
        """Disconnect and end the thread, waiting at most ``timeout`` seconds."""
        self._stop.set()
        try:
            self.client.disconnect()
        except Exception:  # already closed
            pass
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def flush(self, timeout: float) -> bool:
        """Wait until every message published so far is delivered or dropped, or ``timeout``."""
        return self._acks.wait_all(timeout)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
        on_done: Done | None = None,
    ) -> bool:
        """Queue a message; paho keeps QoS 1/2 messages across reconnects.

        True when paho took the message: ``on_done`` is then called exactly once,
        on the link's thread or this one, with True when the broker has it and
        False when paho dropped it (QoS 0 unsent when the link broke, or the
        client replaced). False when paho refused it or (QoS 0) there is no
        connection: ``on_done`` is never called.
        """
        if properties is not None and not self.mqtt5:
            properties = None
        generation = self._acks.generation
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))
            return False
        if qos == 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            return False
        if qos > 0:
            self._topics[info.mid] = topic
            while len(self._topics) > TOPICS_REMEMBERED:
                self._topics.popitem(last=False)
        self._acks.track(info.mid, qos, generation, on_done)
        return True

    # -- the network thread ---------------------------------------------------------

    def _run(self) -> None:
        delay = self.settings.reconnect_interval
        while not self._stop.is_set():
            self._was_up = False
            self._connack = False
            self._unsupported = None
            self._socket_errors.take()
            failure = None
            self._discard_now()
            # paho names a socket error only in its log; needed until CONNACK, and
            # not after: paho formats a log line for every packet while it is set
            self.client.on_log = self._socket_errors.on_log
            try:
                connect(self.client, self.settings)
            except (OSError, ValueError) as exc:
                self._note_failure(f"cannot connect to {self.settings.address}: {exc}")
            else:
                failure = self._loop()
            self._connected.clear()
            if failure is not None and self._other_version(failure):
                continue
            if self._was_up:  # a healthy link broke: start the back-off afresh
                delay = self.settings.reconnect_interval
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.settings.reconnect_max_interval)
        self._connected.clear()

    def discard_unsent(self) -> None:
        """Drop what paho holds for (re)sending: a new client, the same session.

        paho sends its unacknowledged QoS 1/2 messages again after every
        CONNACK and offers no way to remove one; so the connection is closed
        and the client replaced before the next connect. Callable from the
        link's own callbacks.
        """
        self._discard = True
        try:
            self.client.disconnect()
        except Exception:  # not connected
            pass

    def _discard_now(self) -> None:
        if self._discard:
            self._discard = False
            self.client = self._make_client(self.client.protocol)
            self._acks.forget_all()

    # -- paho callbacks (guarded) ----------------------------------------------------

    def _handle_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, props: Any
    ) -> None:
        try:
            client.on_log = None  # the broker answered: see _run
            self.max_packet_size = getattr(props, "MaximumPacketSize", None)
            if (
                reason.is_failure
                and unsupported_protocol(reason)
                and self.settings.protocol == "auto"
            ):
                self._unsupported = str(reason)
                return
            self._connack = True
            if reason.is_failure:
                self._note_failure(f"broker {self.settings.address} refused us: {reason}")
                return
            self.connect_count += 1
            self._was_up = True
            self._switched = False
            self._up_since = time.monotonic()
            self.last_error = None
            self.problems = ()
            versions.worked(self.settings.address, client.protocol)
            self._subscribing.clear()
            self._failures.recovered()
            for topic, qos in self.subscriptions:
                _rc, mid = client.subscribe(topic, qos)
                if mid is not None:
                    self._subscribing[mid] = topic
            log.info(
                "connected to %s as %s (MQTT %s)%s",
                self.settings.address,
                self.settings.client_id,
                "5" if self.mqtt5 else "3.1.1",
                " (again)" if self.connect_count > 1 else "",
            )
            self._connected.set()
            if self._on_connected is not None:
                self._on_connected()
        except Exception:
            log.exception("error in MQTT connect handler")

    def _handle_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        try:
            was_connected = self._connected.is_set()
            self._connected.clear()
            self._acks.connection_lost()
            if was_connected and not self._stop.is_set():
                self._connection_ended(reason)
        except Exception:
            log.exception("error in MQTT disconnect handler")

    def _handle_pre_connect(self, _client: mqtt.Client, _userdata: Any) -> None:
        try:  # paho's reconnect() has just discarded the unsent QoS 0 packets
            self._acks.connection_lost()
        except Exception:
            log.exception("error in MQTT pre-connect handler")

    def _handle_publish(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reason: Any, _props: Any
    ) -> None:
        try:
            topic = self._topics.pop(mid, None)
            why = refusal_reason(reason)
            if why is not None:
                self._refused(f"publish to {topic or f'message {mid}'} refused: {why}")
            self._acks.acknowledged(mid)
        except Exception:
            log.exception("error in MQTT publish handler")

    def _handle_subscribe(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reasons: Any, _props: Any
    ) -> None:
        try:
            topic = self._subscribing.pop(mid, f"message {mid}")
            for reason in reasons or ():
                why = refusal_reason(reason)
                if why is not None:
                    self._refused(f"subscribe {topic} refused: {why}")
        except Exception:
            log.exception("error in MQTT subscribe handler")

    def _handle_message(
        self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        try:
            if self._on_message is not None:
                self._on_message(message)
        except Exception:
            log.exception("error handling a message on %s", message.topic)
