"""The recorder: every host's requests, results and presence changes, into the history.

MQTT messages arrive on the link's thread and only go into a queue there; the
recorder's own loop writes them in batches (one transaction each). A broker
outage is the link's business (it reconnects with back-off); a database error
is logged, the batch kept, the database reopened after a pause and the batch
written again, which is safe because every record is idempotent.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from collectd_monitor.commands.protocol import Result, parse_timestamp
from collectd_monitor.commands.transport import MqttLink
from collectd_monitor.config import BrokerSettings
from collectd_monitor.fleet.history import History, ResultRecord, open_history
from collectd_monitor.fleet.hook import request_record
from collectd_monitor.fleet.location import HistoryError
from collectd_monitor.fleet.presence import parse_status
from collectd_monitor.fleet.topics import (
    DEFAULT_COMMAND_TEMPLATE,
    DEFAULT_RESULT_TEMPLATE,
    DEFAULT_STATUS_TEMPLATE,
    host_in,
)

log = logging.getLogger(__name__)

Message = tuple[str, bytes, float]
"""Topic, payload, time received."""


@dataclass(frozen=True)
class Templates:
    result: str = DEFAULT_RESULT_TEMPLATE
    status: str = DEFAULT_STATUS_TEMPLATE
    command: str = DEFAULT_COMMAND_TEMPLATE
    """Empty: do not watch requests (then results are recorded without them)."""

    def all(self) -> list[str]:
        # requests first: once a retained status is in, the other subscriptions are too
        return [t for t in (self.command, self.result, self.status) if t]


class Recorder:
    def __init__(
        self,
        settings: BrokerSettings,
        history: History,
        templates: Templates = Templates(),
        *,
        batch: int = 500,
        retry: float = 2.0,
    ) -> None:
        self.history: History | None = history
        self.location = history.location
        self.templates = templates
        self.batch = batch
        self.retry = retry
        self.counts: Counter[str] = Counter()
        self._queue: queue.Queue[Message] = queue.Queue()
        self.link = MqttLink(
            settings,
            subscriptions=[(t, settings.qos) for t in templates.all()],
            on_message=self._on_message,
        )

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        self._queue.put((message.topic, bytes(message.payload), time.time()))

    # -- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Record until ``stop`` is set; then write what is queued and disconnect."""
        self.link.start()
        pending: list[Message] = []
        try:
            while not stop.is_set():
                if not pending:
                    pending = self._take(0.2)
                if pending and self._write(pending):
                    pending = []
                elif pending:
                    stop.wait(self.retry)
            pending += self._take(0)
            if pending and not self._write(pending):
                log.error("%d message(s) could not be recorded before stopping", len(pending))
        finally:
            self.link.stop(1.0)
            if self.history is not None:
                self.history.close()

    def _take(self, wait: float) -> list[Message]:
        taken: list[Message] = []
        try:
            taken.append(self._queue.get(timeout=wait) if wait else self._queue.get_nowait())
            while len(taken) < self.batch:
                taken.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return taken

    def _write(self, messages: list[Message]) -> bool:
        """Record ``messages`` in one transaction; False (logged) when the database failed."""
        try:
            if self.history is None:
                self.history = open_history(self.location)
                log.info("history at %s is back", self.location.shown)
            counts: Counter[str] = Counter()
            with self.history.batch():
                for topic, payload, received in messages:
                    kind = self._record(self.history, topic, payload, received)
                    if kind:
                        counts[kind] += 1
        except HistoryError as exc:
            log.error("%s; retrying in %g s", exc, self.retry)
            if self.history is not None:
                self.history.close()
                self.history = None
            return False
        self.counts.update(counts)
        return True

    def _record(self, history: History, topic: str, payload: bytes, received: float) -> str:
        templates = self.templates
        host = host_in(templates.status, topic)
        if host is not None:
            status = parse_status(templates.status, topic, payload)
            if status is None:
                return ""
            at = _epoch(status.timestamp) or received
            new = history.record_presence(status.host, status.status, at, payload.decode())
            return "presence" if new else ""
        host = host_in(templates.result, topic)
        if host is not None:
            try:
                result = Result.decode(payload)
            except ValueError:
                return ""
            if not _is_task_id(result.task_id):
                return ""
            history.record_result(
                ResultRecord(int(result.task_id), host, result.code, result.message, received)
            )
            return "result"
        host = host_in(templates.command, topic) if templates.command else None
        if host is not None:
            try:
                data = json.loads(payload)
            except ValueError:
                return ""
            if not isinstance(data, dict) or not _is_task_id(data.get("task_id")):
                return ""
            if "config" not in data and not ("service" in data and "command" in data):
                return ""
            stamp = data.get("timestamp")
            sent = _epoch(stamp if isinstance(stamp, str) else None) or received
            history.record_request(request_record(data, host, sent))
            return "request"
        return ""


def _is_task_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return parse_timestamp(stamp).astimezone(dt.UTC).timestamp()
    except (ValueError, OverflowError):
        return None
