"""The central plugin's MQTT side: repairs out, results and presence in, history written.

One MQTT link for the whole plugin, subscribed to every host's result and
status topics (the templates with ``+`` for ``{host}``). Nothing here runs on
collectd's threads: the engine hands repairs and history records to a queue,
and one worker thread signs and publishes the repairs and writes the history
(a database that hangs then delays history records and repairs, never
collectd). Results and status messages arrive on the link's thread and go
straight to the engine, which only updates state under its lock.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collectd_monitor.commands.protocol import Result, format_timestamp
from collectd_monitor.commands.transport import MqttLink
from collectd_monitor.config import MonitorConfig
from collectd_monitor.fleet.history import History, RequestRecord, ResultRecord, open_history
from collectd_monitor.fleet.location import HistoryError
from collectd_monitor.fleetrules.engine import CentralEngine, Repair
from collectd_monitor.fleetrules.settings import CentralSettings

log = logging.getLogger("collectd_monitor.central")

HISTORY_ERROR_EVERY = 60.0
MAX_QUEUED = 100_000
_Item = Repair | RequestRecord | ResultRecord | None


class CentralLink:
    def __init__(self, config: MonitorConfig, settings: CentralSettings) -> None:
        self.config = config
        self.settings = settings
        self.engine: CentralEngine | None = None
        qos = config.broker.qos
        self.mqtt = MqttLink(
            config.broker,
            subscriptions=[
                (settings.result_topic.subscription, qos),
                (settings.status_topic.subscription, 1),
            ],
            on_message=self._message,
        )
        self._queue: queue.Queue[_Item] = queue.Queue(MAX_QUEUED)
        self._worker: threading.Thread | None = None
        self._history: History | None = None
        self._history_failed_at = float("-inf")

    def attach(self, engine: CentralEngine) -> None:
        self.engine = engine

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="cm-central", daemon=True)
        self._worker.start()
        self.mqtt.start()

    def stop(self, timeout: float = 0.5) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self.mqtt.stop(timeout)
        if self._worker is not None:
            self._worker.join(timeout)
        if self._history is not None:
            self._history.close()

    # -- what the engine calls (any thread) ----------------------------------------------

    def send(self, repair: Repair) -> None:
        try:
            self._queue.put_nowait(repair)
        except queue.Full:
            raise RuntimeError("the send queue is full") from None

    def record(self, item: RequestRecord | ResultRecord) -> None:
        if self.settings.history is None:
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            log.warning("history queue full: task %d not recorded", item.task_id)

    # -- the worker ------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if isinstance(item, Repair):
                    self._publish(item)
                else:
                    self._write_history(item)
            except Exception:
                log.exception("central worker: %r failed", item)

    def _publish(self, repair: Repair) -> None:
        topic = self.settings.command_topic.topic(repair.host)
        payload: dict[str, Any] = {
            "task_id": repair.task_id,
            "timestamp": format_timestamp(),
            "service": repair.action.service,
            "command": repair.action.command,
        }
        if self.settings.signer is not None:
            payload = self.settings.signer.sign(topic, payload)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = max(1, round(self.settings.result_timeout))
        body = json.dumps(payload).encode()
        sent = self.mqtt.publish(topic, body, self.config.broker.qos, properties=properties)
        if not sent and self.engine is not None:
            self.engine.send_failed(repair, f"not sent: no connection to {self.mqtt_address}")

    @property
    def mqtt_address(self) -> str:
        return self.config.broker.address

    def _write_history(self, item: RequestRecord | ResultRecord) -> None:
        try:
            if self._history is None:
                self._history = open_history(self.settings.history)
            if isinstance(item, RequestRecord):
                self._history.record_request(item)
            else:
                self._history.record_result(item)
        except HistoryError as exc:
            now = time.monotonic()
            if now - self._history_failed_at >= HISTORY_ERROR_EVERY:
                self._history_failed_at = now
                log.error("history: %s (task %d not recorded)", exc, item.task_id)
            if self._history is not None:
                self._history.close()
                self._history = None

    # -- the link's thread ------------------------------------------------------------------

    def _message(self, message: mqtt.MQTTMessage) -> None:
        engine = self.engine
        if engine is None:
            return
        topic = message.topic
        host = self.settings.result_topic.host_in(topic)
        if host is not None:
            try:
                result = Result.decode(bytes(message.payload))
            except ValueError:
                return
            if isinstance(result.task_id, int):
                engine.on_result(host, result.task_id, int(result.code), str(result.message))
            return
        host = self.settings.status_topic.host_in(topic)
        if host is not None:
            self._status(engine, host, bytes(message.payload))

    @staticmethod
    def _status(engine: CentralEngine, host: str, payload: bytes) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            return
        services: dict[str, list[str]] | None = None
        if isinstance(data.get("services"), dict):
            services = {
                str(name): [str(c) for c in commands]
                for name, commands in data["services"].items()
                if isinstance(commands, list)
            }
        reason = data.get("reason") if isinstance(data.get("reason"), str) else ""
        engine.on_status(host, data["status"] == "online", services, str(reason))
