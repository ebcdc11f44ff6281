"""The remote agent: turns command messages into whitelisted command runs.

It is the core of the ``collectd_monitor.remote`` plugin, free of collectd so
tests can drive it. Messages arrive on the MQTT thread; the agent only
decodes and checks them there and hands the work to the executor, whose
threads publish the results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collectd_monitor.codes import ResultCode, describe
from collectd_monitor.commands.delivery import Delivery
from collectd_monitor.commands.limits import fit_result, payload_limit
from collectd_monitor.commands.outbox import Outbox, outbox_directory, state_directory
from collectd_monitor.commands.presence import presence, presence_host
from collectd_monitor.commands.protocol import (
    CommandRequest,
    ConfigRequest,
    Request,
    Result,
    decode_request,
)
from collectd_monitor.commands.refusals import RefusalGate
from collectd_monitor.commands.security import FreshnessCheck, SignatureCheck
from collectd_monitor.commands.seen import SeenTasks, message_digest
from collectd_monitor.commands.tasks import command_job
from collectd_monitor.commands.transport import Link, MqttLink
from collectd_monitor.config import MonitorConfig, lookup_command
from collectd_monitor.configwatch import Change, ConfigWatch
from collectd_monitor.errors import ProtocolError
from collectd_monitor.executor import Busy, CommandExecutor

log = logging.getLogger(__name__)

__all__ = ["RemoteAgent", "ReplyTo", "presence", "presence_host"]
"""``presence`` and ``presence_host`` live in :mod:`.presence`; kept importable here."""

REPLACER_SERVICE = "collectd"
REPLACER_COMMANDS = ("start", "stop")
"""``Services.collectd`` commands.start/stop are the config replacer's; never run by request."""

ConfigHandler = Callable[[ConfigRequest, Callable[[Result], None]], None]
"""Takes a config push and a function to publish its result with."""

Verifier = Callable[[Request], None]
"""Raises :class:`ProtocolError` for a message that must not be acted upon."""


@dataclass(frozen=True)
class ReplyTo:
    """Where an MQTT 5 request asked for its answer."""

    topic: str
    correlation: bytes | None


def default_verifiers(config: MonitorConfig) -> tuple[Verifier, ...]:
    security = config.security
    return (
        SignatureCheck(security, config.command_topic),
        FreshnessCheck(security.max_message_age, security.max_clock_skew),
    )


class RemoteAgent:
    """Decode, verify, de-duplicate and dispatch command messages; publish results.

    The agent does not own ``executor``: whoever made it stops it (usually in
    a stop hook, so that the results of aborted commands still go out). With
    ``link`` given, the caller feeds it :meth:`handle_message` and
    :meth:`handle_connected`; by default the agent makes an :class:`MqttLink`.
    """

    def __init__(
        self,
        config: MonitorConfig,
        *,
        executor: CommandExecutor,
        link: Link | None = None,
        config_handler: ConfigHandler | None = None,
        verifiers: tuple[Verifier, ...] | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.executor = executor
        self.link: Link = link or MqttLink(
            config.broker,
            subscriptions=[(config.command_topic, subscription_qos(config.broker.qos))],
            on_message=self.handle_message,
            on_connected=self.handle_connected,
            will=(config.status_topic, presence("offline", config, "connection lost"), 1, True),
            on_problems=self.handle_problems,
        )
        self.config_handler = config_handler
        self._own_verifiers = verifiers is None
        self.verifiers = default_verifiers(config) if verifiers is None else verifiers
        self.config_watch: ConfigWatch | None = None
        self._problems: tuple[str, ...] = ()
        """What the broker refused us, for the status message."""
        state = state_directory(config)
        window = config.security.max_message_age + config.security.max_clock_skew
        self.seen = SeenTasks(
            config.duplicate_memory,
            path=state / "seen-tasks.jsonl" if state else None,
            window=window if config.security.max_message_age > 0 else None,
        )
        self.outbox = Outbox(outbox_directory(config))
        self.delivery = Delivery(self.outbox, self.link, qos=lambda: self.config.broker.qos)
        self.refusals = RefusalGate(config.max_refusals_per_second)
        self._replay_memory_only = self.seen.memory_only
        self._connected_hooks: list[Callable[[], None]] = [on_connected] if on_connected else []
        self._stop_hooks: list[Callable[[], None]] = []

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> None:
        log.info(
            "listening on %s (results to %s) at %s, %d service(s)%s",
            self.config.command_topic,
            self.config.result_topic,
            self.config.broker.address,
            len(self.config.services),
            ", signatures required" if self.config.security.require_signature else "",
        )
        self.link.start()

    def add_connected_hook(self, hook: Callable[[], None]) -> None:
        self._connected_hooks.append(hook)

    def add_stop_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` first thing in :meth:`stop` (it must return promptly)."""
        self._stop_hooks.append(hook)

    def stop(self) -> None:
        """Run the stop hooks, publish what is left, disconnect: well under a second.

        The executor's owner releases it in a stop hook. When this was its
        last holder the executor stops there, and the results of the commands
        it aborts go out before the link goes down; otherwise those commands
        run on and their results wait in the outbox for the next start.
        """
        for hook in self._stop_hooks:
            try:
                hook()
            except Exception:
                log.exception("error in stop hook")
        if self.link.connected:
            self.link.publish(
                self.config.status_topic, presence("offline", self.config, "shutdown"), 1, True
            )
        if not self.link.flush(0.3):
            log.warning("results not yet acknowledged stay in the outbox for the next start")
        self.link.stop(0.2)
        self.refusals.flush()
        self.seen.close()
        self.outbox.close()

    def handle_problems(self, problems: tuple[str, ...]) -> None:
        """The broker refused something (link thread): say so in our status message."""
        self._problems = problems
        self._announce()

    def handle_connected(self) -> None:
        """The link is (again) on the broker: announce us, send what the outbox holds."""
        if self.delivery.quarantine_stuck():
            return  # the link reconnects at once, without the result it choked on
        self._announce()
        self.delivery.republish()
        for hook in self._connected_hooks:
            try:
                hook()
            except Exception:
                log.exception("error in on-connect hook")

    # -- config reload -------------------------------------------------------------------

    def watch_config(self, watch: ConfigWatch) -> None:
        """Check ``watch`` before each message; its timer runs until :meth:`stop`."""
        self.config_watch = watch
        self.add_stop_hook(watch.stop)
        watch.start()

    def _refresh_config(self) -> None:
        if self.config_watch is not None:
            try:
                self.config_watch.check()
            except Exception:  # never lose a message over a reload
                log.exception("error while reloading the config")

    def apply_config(self, change: Change) -> None:
        """Serve with a reloaded config: Services and Security apply to the next message."""
        self.config = change.config
        if self._own_verifiers:
            self.verifiers = default_verifiers(change.config)

    # -- the outbox ---------------------------------------------------------------------

    def deliver_foreign(self) -> None:
        """Publish entries other processes dropped into the outbox (the replacement helper's)."""
        self.delivery.deliver_foreign()

    # -- messages ---------------------------------------------------------------------

    def handle_message(self, message: mqtt.MQTTMessage) -> None:
        """A message on the command topic (runs on the link's thread)."""
        reply = None
        properties = getattr(message, "properties", None)
        topic = getattr(properties, "ResponseTopic", None) if properties is not None else None
        if topic:
            reply = ReplyTo(topic, getattr(properties, "CorrelationData", None))
        self.handle_payload(bytes(message.payload), reply, redelivered=bool(message.dup))

    def handle_payload(
        self, payload: bytes, reply: ReplyTo | None = None, *, redelivered: bool = False
    ) -> None:
        """Decode, check and dispatch one message; a refusal is answered (or dropped) here.

        ``redelivered``: the broker sent this message again (DUP set): see
        :meth:`_first_delivery`.
        """
        self._refresh_config()
        authenticated = not self.config.security.require_signature
        try:
            request = decode_request(payload)
            for verify in self.verifiers:
                verify(request)
                if isinstance(verify, SignatureCheck):
                    authenticated = True
            if not authenticated:  # signatures required, yet no check looked at one
                reply = None
            first = self._first_delivery(request, redelivered)
            self._note_replay_protection()
            if not first:
                return
            if isinstance(request, ConfigRequest):
                self._handle_config(request, reply)
            else:
                self._handle_command(request, reply)
        except ProtocolError as exc:
            self._refuse(exc, reply if authenticated else None, authenticated)

    def _first_delivery(self, request: Request, redelivered: bool = False) -> bool:
        """Remember ``request``; True the first time, refused (0x1100) after that.

        A duplicate is the same task_id with the same content (signature aside):
        a redelivery or a replay. A new message that reuses a task_id runs. The
        broker's own redelivery of a message already received (DUP set, after
        a reconnect: the subscription is QoS 1) gets no answer (False): its
        first delivery answers, and may still be running. A broker never
        passes on a publisher's DUP flag, so a replay is always answered.
        """
        if self.seen.add(request.task_id, message_digest(request.fields)):
            return True
        if redelivered:
            log.info(
                "task %s: delivered again by the broker; already received, not run again",
                request.task_id,
            )
            return False
        raise ProtocolError(
            ResultCode.DUPLICATE_TASK,
            f"task {request.task_id} was already received with the same content",
            request.task_id,
        )

    def _refuse(
        self, exc: ProtocolError, reply: ReplyTo | None = None, authenticated: bool = True
    ) -> None:
        """Log and answer a refusal: rate-limited, never fsync'd, never to a reply-to
        that an unauthenticated message chose (with signatures required, such a
        message gets no answer at all unless ``Security.AnswerUnsigned``)."""
        if not self.refusals.admit(exc.code):
            return
        silent = not authenticated and not self.config.security.answer_unsigned
        if exc.task_id is None or silent:
            log.warning(
                "ignored a message%s: %s",
                " (not answered: signatures required)"
                if exc.task_id is not None
                else " without a usable task_id",
                exc.message,
            )
            return
        log.warning("task %s refused (%s): %s", exc.task_id, describe(exc.code), exc.message)
        result = Result(task_id=exc.task_id, code=exc.code, message=exc.message)
        self.publish(result, reply, durable=False)

    def _handle_config(self, request: ConfigRequest, reply: ReplyTo | None = None) -> None:
        if self.config_handler is None:
            raise ProtocolError(
                ResultCode.NOT_IMPLEMENTED,
                "config replacement is not enabled on this host "
                '(it needs "AllowConfigReplace": true in its config.json)',
                request.task_id,
            )
        log.info("task %s: config push received (%d bytes)", request.task_id, len(request.config))
        self.config_handler(request, lambda result: self.publish(result, reply))

    def _handle_command(self, request: CommandRequest, reply: ReplyTo | None = None) -> None:
        if (
            request.service == REPLACER_SERVICE
            and request.command.lower() in REPLACER_COMMANDS
            and REPLACER_SERVICE in self.config.services
        ):
            raise ProtocolError(
                ResultCode.UNKNOWN_COMMAND,
                f"{request.service}/{request.command} is reserved for the config replacer "
                "and cannot be called as a command (nothing would bring collectd back)",
                request.task_id,
            )
        spec = lookup_command(self.config, request.service, request.command, request.task_id)
        task_id = request.task_id
        job = command_job(
            task_id,
            spec,
            publish=lambda result: self.publish(result, reply),
            flusher=self.outbox.flusher,
        )
        try:
            self.executor.submit(job)
        except Busy as exc:
            raise ProtocolError(ResultCode.BUSY, f"not run: {exc}", task_id) from None

    def publish(
        self, result: Result, reply: ReplyTo | None = None, *, durable: bool = True
    ) -> None:
        """Publish a result on the result topic (through the outbox) and to ``reply``.

        The result is cut to ``MaxResultBytes`` and to what the broker takes.
        The outbox entry is written before the publish and fsync'd after it
        (off this thread); ``durable=False`` (refusals) skips the fsync.
        """
        topic = self.config.result_topic
        limit = payload_limit(self.config.max_result_bytes, self.link.max_packet_size, topic)
        payload = fit_result(result, limit)
        if payload is None:
            log.error(
                "the result of task %s cannot be cut to %d bytes; not sent", result.task_id, limit
            )
            return
        entry = self.outbox.put(topic, payload)
        try:
            self.delivery.send(entry)
        finally:
            if durable:
                self.outbox.persist(entry)
        if reply is not None and reply.topic != topic:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if reply.correlation is not None:
                properties.CorrelationData = reply.correlation
            biggest = self.link.max_packet_size
            if biggest and reply.correlation is not None:
                biggest -= len(reply.correlation)
            limit = payload_limit(self.config.max_result_bytes, biggest, reply.topic)
            if len(payload) <= limit:
                self.link.publish(
                    reply.topic, payload, self.config.broker.qos, properties=properties
                )

    # -- status -----------------------------------------------------------------------

    def _announce(self) -> None:
        self.link.publish(
            self.config.status_topic,
            presence(
                "online",
                self.config,
                problems=self._problems,
                replay_protection=self._replay_protection(),
            ),
            1,
            True,
        )

    def _replay_protection(self) -> str:
        return "memory-only" if self.seen.path is None else "persistent"

    def _note_replay_protection(self) -> None:
        """Tell the fleet at once when the seen store has just lost its file."""
        if self.seen.memory_only and not self._replay_memory_only:
            self._replay_memory_only = True
            if self.link.connected:
                self._announce()


def subscription_qos(qos: int) -> int:
    """The QoS the command subscription asks for: ``QoS``, but at most 1.

    Every message is written to the seen file before its command runs, and
    a message seen before never runs again (also after a restart), so QoS 1
    with the seen file already runs each command exactly once. QoS 2 would
    add an exchange with the broker (PUBREC, PUBREL) before paho hands the
    message over, on every command's path, and guard against nothing more:
    paho keeps its QoS 2 state in memory only.
    """
    return min(qos, 1)
