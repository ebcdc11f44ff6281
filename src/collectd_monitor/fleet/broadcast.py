"""One request to many hosts over ONE MQTT connection, paced by a :class:`Scheduler`.

The connection subscribes once to the result topics of every host (a
wildcard such as ``collectd-monitor/+/result``), then publishes each host's
request on that host's command topic when the scheduler says so. A result is
taken when its (host, task_id) is one we are waiting for; anything else on the
wildcard (other senders' results, late duplicates) is ignored.

paho's network thread only queues what arrives; the caller's thread runs the
loop: send what is due, take results, expire requests, report progress.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collectd_monitor.commands.brokerfaults import CONNACK_TIMEOUT, NoConnack, connack_verdict
from collectd_monitor.commands.client import connect, first_protocol, new_client
from collectd_monitor.commands.protocol import Result
from collectd_monitor.config import BrokerSettings
from collectd_monitor.errors import TransportError
from collectd_monitor.fleet.fanout import Limits, Outcome, Progress, Scheduler
from collectd_monitor.fleet.topics import host_in

log = logging.getLogger(__name__)

DRAIN = 2000
"""Messages taken from the queue before the loop looks at the clock again."""


@dataclass(frozen=True)
class Prepared:
    """One host's request, ready to publish."""

    task_id: int
    topic: str
    body: bytes
    payload: Mapping[str, Any]
    """The message as sent (signed when signing), for the history."""


class Events(Protocol):
    """What a run tells its caller, on the caller's thread."""

    def sent(self, host: str, request: Prepared) -> None: ...

    def finished(
        self, host: str, request: Prepared, result: Result | None, outcome: Outcome
    ) -> None: ...

    def tick(self, progress: Progress) -> None: ...


class Broadcast:
    def __init__(
        self,
        settings: BrokerSettings,
        result_template: str,
        *,
        expiry: float | None = None,
        connect_timeout: float = 5.0,
        tick: float = 0.25,
        notice: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.result_template = result_template
        self.expiry = expiry
        self.connect_timeout = connect_timeout
        self.tick_every = tick
        self.notice = notice or (lambda _text: None)
        self.clock = clock
        self._inbox: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()

    # -- the connection -------------------------------------------------------------------

    def _open(self, parallel: int) -> tuple[mqtt.Client, bool]:
        try:
            return self._attempt(first_protocol(self.settings), parallel), True
        except NoConnack:
            if self.settings.protocol != "auto":
                raise
            self.notice("the broker does not speak MQTT 5; using MQTT 3.1.1")
            return self._attempt(mqtt.MQTTv311, parallel), False

    def _attempt(self, protocol: MQTTProtocolVersion, parallel: int) -> mqtt.Client:
        client_id = self.settings.client_id or f"collectd-monitor-fanout-{time.time_ns():x}"
        client = new_client(self.settings, client_id, protocol)
        client.connect_timeout = self.connect_timeout
        client.reconnect_delay_set(1, 4)
        # our own pacing decides what is in flight; paho must not hold requests back
        client.max_inflight_messages_set(max(20, parallel))
        client.max_queued_messages_set(0)
        state: dict[str, Any] = {}
        connected, subscribed = threading.Event(), threading.Event()
        qos = self.settings.qos

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            try:
                state["reason"] = reason
                if subscribed.is_set() and not reason.is_failure:
                    self.notice("reconnected to the broker")
                connected.set()
                if not reason.is_failure:
                    c.subscribe(self.result_template, qos)
            except Exception:
                log.exception("connect handler")

        def on_subscribe(_c: mqtt.Client, _u: Any, _mid: Any, codes: Any, _p: Any) -> None:
            state["granted"] = list(codes)
            subscribed.set()

        def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
            self._inbox.put((message.topic, bytes(message.payload)))

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not connected.is_set():  # closed before any CONNACK
                state["closed"] = "the broker closed the connection before its CONNACK"
                connected.set()
            elif subscribed.is_set() and not state.get("closing"):
                self.notice(f"lost the broker connection ({reason}); reconnecting")

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        client.user_data_set(state)
        try:
            connect(client, replace(self.settings, keepalive=60), clean=True)
        except ssl.SSLError as exc:
            raise TransportError(f"TLS with {self.settings.address} failed: {exc}") from None
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to {self.settings.address}: {exc}") from None
        client.loop_start()
        try:
            # Under auto, a broker that speaks only 3.1.1 may never answer an MQTT 5
            # CONNECT, or close the socket: either means "try 3.1.1", as for the plugin.
            auto = self.settings.protocol == "auto" and protocol == mqtt.MQTTv5
            connack_verdict(
                connected.wait(CONNACK_TIMEOUT if auto else self.connect_timeout),
                state,
                address=self.settings.address,
                auto=auto,
            )
            if not subscribed.wait(self.connect_timeout):
                raise TransportError(f"no SUBACK from {self.settings.address}")
            if any(getattr(c, "is_failure", False) for c in state["granted"]):
                raise TransportError(
                    f"the broker refused our subscription to {self.result_template}"
                )
        except BaseException:
            self._close(client)
            raise
        return client

    def _close(self, client: mqtt.Client) -> None:
        userdata = client.user_data_get()
        if isinstance(userdata, dict):
            userdata["closing"] = True
        client.disconnect()
        client.loop_stop()

    # -- the run --------------------------------------------------------------------------

    def run(
        self,
        hosts: Sequence[str],
        prepare: Callable[[str], Prepared],
        limits: Limits,
        events: Events,
    ) -> Scheduler:
        """Send ``prepare(host)`` to every host as ``limits`` allow; return the final state.

        Raises :class:`TransportError` / :class:`AuthError` when the broker cannot
        be reached at the start (nothing was sent then).
        """
        client, mqtt5 = self._open(limits.parallel)
        properties = None
        if mqtt5 and self.expiry:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = max(1, round(self.expiry))
        qos = self.settings.qos
        clock = self.clock
        scheduler = Scheduler(hosts, limits, clock())
        waiting: dict[str, Prepared] = {}
        template = self.result_template
        next_tick = clock()
        try:
            while not scheduler.done:
                now = clock()
                for host in scheduler.due(now):
                    prepared = prepare(host)
                    waiting[host] = prepared
                    client.publish(prepared.topic, prepared.body, qos=qos, properties=properties)
                    events.sent(host, prepared)
                wait = min(scheduler.wake_in(now), max(next_tick - now, 0.0))
                for topic, payload in self._take(wait):
                    answered = host_in(template, topic)
                    request = waiting.get(answered) if answered is not None else None
                    if answered is None or request is None:
                        continue
                    try:
                        result = Result.decode(payload)
                    except ValueError:
                        continue
                    if result.task_id != request.task_id:
                        continue
                    outcome = scheduler.answered(answered, result.code, clock())
                    if outcome is not None:
                        del waiting[answered]
                        events.finished(answered, request, result, outcome)
                now = clock()
                for outcome in scheduler.expire(now):
                    events.finished(outcome.host, waiting.pop(outcome.host), None, outcome)
                if now >= next_tick:
                    events.tick(scheduler.progress(now))
                    next_tick = now + self.tick_every
        finally:
            self._close(client)
        events.tick(scheduler.progress(clock()))
        return scheduler

    def _take(self, wait: float) -> list[tuple[str, bytes]]:
        taken: list[tuple[str, bytes]] = []
        try:
            taken.append(self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait())
            while len(taken) < DRAIN:
                taken.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        return taken
