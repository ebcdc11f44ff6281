"""The remote agent: turns command messages into whitelisted command runs.

It is the core of the ``collectd_monitor.remote`` plugin, free of collectd so
tests can drive it. Messages arrive on the MQTT thread; the agent only
decodes and checks them there and hands the work to the executor, whose
threads publish the results.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from collectd_monitor.codes import ResultCode, describe
from collectd_monitor.config import CommandSpec, MonitorConfig
from collectd_monitor.errors import ProtocolError
from collectd_monitor.executor import Busy, CommandExecutor, Job, Outcome
from collectd_monitor.protocol import (
    CommandRequest,
    ConfigRequest,
    Request,
    Result,
    TaskId,
    decode_request,
)
from collectd_monitor.seen import SeenTasks
from collectd_monitor.transport import MqttLink

log = logging.getLogger(__name__)

ConfigHandler = Callable[[ConfigRequest, Callable[[Result], None]], None]
"""Takes a config push and a function to publish its result with."""

Verifier = Callable[[Request], None]
"""Raises :class:`ProtocolError` for a message that must not be acted upon."""


def lookup_command(
    config: MonitorConfig, service: str, command: str, task_id: TaskId
) -> CommandSpec:
    if not config.services:
        raise ProtocolError(
            ResultCode.NO_SERVICES, "no services are configured on this host", task_id
        )
    entry = config.services.get(service)
    if entry is None:
        raise ProtocolError(ResultCode.UNKNOWN_SERVICE, f"unknown service {service!r}", task_id)
    spec = entry.commands.get(command)
    if spec is None:
        raise ProtocolError(
            ResultCode.UNKNOWN_COMMAND,
            f"unknown command {command!r} for service {service!r}",
            task_id,
        )
    return spec


class RemoteAgent:
    def __init__(
        self,
        config: MonitorConfig,
        *,
        link: MqttLink | None = None,
        executor: CommandExecutor | None = None,
        config_handler: ConfigHandler | None = None,
        verifiers: tuple[Verifier, ...] = (),
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.executor = executor or CommandExecutor(
            max_concurrent=config.max_concurrent_commands,
            max_queued=config.max_queued_commands,
            default_timeout=config.command_timeout,
            max_output=config.max_output_bytes,
        )
        self.link = link or MqttLink(
            config.broker,
            subscriptions=[(config.command_topic, config.broker.qos)],
            on_message=self._on_mqtt_message,
            on_connected=self._on_connected,
        )
        self.config_handler = config_handler
        self.verifiers = verifiers
        self.seen = SeenTasks(config.duplicate_memory)
        self._connected_hooks: list[Callable[[], None]] = [on_connected] if on_connected else []
        self._stopped = threading.Event()

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> None:
        log.info(
            "listening on %s (results to %s) at %s, %d service(s)",
            self.config.command_topic,
            self.config.result_topic,
            self.config.broker.address,
            len(self.config.services),
        )
        self.link.start()

    def add_connected_hook(self, hook: Callable[[], None]) -> None:
        self._connected_hooks.append(hook)

    def stop(self) -> None:
        """End running commands, publish their results, disconnect: well under a second."""
        self._stopped.set()
        self.executor.shutdown(timeout=0.4)
        if not self.link.flush(0.3):
            log.warning("some results were not acknowledged by the broker before shutdown")
        self.link.stop(0.2)

    def _on_connected(self) -> None:
        for hook in self._connected_hooks:
            try:
                hook()
            except Exception:
                log.exception("error in on-connect hook")

    # -- messages ---------------------------------------------------------------------

    def _on_mqtt_message(self, message: mqtt.MQTTMessage) -> None:
        self.handle_payload(bytes(message.payload))

    def handle_payload(self, payload: bytes) -> None:
        try:
            request = decode_request(payload)
            for verify in self.verifiers:
                verify(request)
            if not self.seen.add(request.task_id):
                raise ProtocolError(
                    ResultCode.DUPLICATE_TASK,
                    f"task {request.task_id} was already received",
                    request.task_id,
                )
            if isinstance(request, ConfigRequest):
                self._handle_config(request)
            else:
                self._handle_command(request)
        except ProtocolError as exc:
            self._refuse(exc)

    def _refuse(self, exc: ProtocolError) -> None:
        if exc.task_id is None:
            log.warning("ignored a message without a usable task_id: %s", exc.message)
            return
        log.warning("task %s refused (%s): %s", exc.task_id, describe(exc.code), exc.message)
        self.publish(Result(task_id=exc.task_id, code=exc.code, message=exc.message))

    def _handle_config(self, request: ConfigRequest) -> None:
        if self.config_handler is None:
            raise ProtocolError(
                ResultCode.NOT_IMPLEMENTED,
                "config replacement is not enabled on this host",
                request.task_id,
            )
        log.info("task %s: config push received (%d bytes)", request.task_id, len(request.config))
        self.config_handler(request, self.publish)

    def _handle_command(self, request: CommandRequest) -> None:
        spec = lookup_command(self.config, request.service, request.command, request.task_id)
        task_id = request.task_id

        def done(outcome: Outcome) -> None:
            level = logging.INFO if outcome.code == 0 else logging.WARNING
            log.log(
                level,
                "task %s: %s ended with code %d (%s) in %.0f ms",
                task_id,
                spec.label,
                outcome.code,
                describe(outcome.code),
                outcome.duration * 1000,
            )
            if outcome.errors and outcome.code != 0:
                log.info("task %s: %s stderr: %s", task_id, spec.label, outcome.errors[:500])
            self.publish(Result(task_id=task_id, code=outcome.code, message=outcome.message))

        log.info("task %s: running %s", task_id, spec.label)
        try:
            self.executor.submit(Job(spec=spec, on_done=done))
        except Busy as exc:
            raise ProtocolError(ResultCode.BUSY, f"not run: {exc}", task_id) from None

    def publish(self, result: Result) -> Any:
        return self.link.publish(self.config.result_topic, result.encode(), self.config.broker.qos)
