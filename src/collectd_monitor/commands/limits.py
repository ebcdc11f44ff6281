"""Bounded results: no message can make this host publish more than the broker takes.

A refusal echoes parts of the message it refuses (a service name, a key id,
a string task_id). Unbounded, 30 kB of DEL characters became a 150 kB result
through ``repr()``; a broker with a packet size limit then disconnected us on
publishing it, and the result, kept in the outbox, was published first on
every reconnect: the host was cut off for good. So:

* every echoed field goes through :func:`clip`: control characters, line
  separators and lone surrogates escaped compactly (``\\x7f``), cut at
  :data:`ECHO_LIMIT` characters with a visible marker;
* a whole result goes through :func:`fit_result`: its message is cut until the
  encoded JSON fits ``limit`` bytes (``MaxResultBytes``, or less when an MQTT 5
  broker announces a smaller Maximum Packet Size, see :func:`payload_limit`).
"""

from __future__ import annotations

import json
from dataclasses import replace

from collectd_monitor.commands.protocol import Result, TaskId
from collectd_monitor.logsetup import ECHO_LIMIT, clip, quote

__all__ = ["ECHO_LIMIT", "StuckResults", "clip", "fit_result", "payload_limit", "quote"]

TASK_ID_LIMIT = 64
"""Characters of a string task_id echoed back."""

MIN_RESULT_BYTES = 512
"""The smallest result limit honoured: room for the task_id, the code and a cut note."""

PACKET_OVERHEAD = 64
"""Bytes of a PUBLISH packet besides its topic and payload, generously counted:
fixed header (up to 5), topic length (2), packet id (2), MQTT 5 properties."""


def payload_limit(max_result_bytes: int, max_packet_size: int | None, topic: str) -> int:
    """The largest result payload to publish on ``topic``.

    ``max_packet_size`` is the broker's Maximum Packet Size from an MQTT 5
    CONNACK (None when the broker announced none): the whole PUBLISH packet,
    topic and header included, must fit it.
    """
    limit = max_result_bytes
    if max_packet_size:
        limit = min(limit, max_packet_size - len(topic.encode()) - PACKET_OVERHEAD)
    return max(limit, MIN_RESULT_BYTES)


def encode_result(result: Result) -> bytes:
    """The JSON of ``result`` as UTF-8, whatever strings it holds (no lone surrogate survives)."""
    return json.dumps(result.to_dict(), ensure_ascii=False).encode("utf-8", "backslashreplace")


def safe_task_id(task_id: TaskId) -> TaskId:
    """A string task_id echoed back escaped and cut; an integer unchanged."""
    return clip(task_id, TASK_ID_LIMIT) if isinstance(task_id, str) else task_id


def fit_result(result: Result, limit: int) -> bytes | None:
    """``result`` encoded in at most ``limit`` bytes, its message cut (with a note) to fit.

    None when even an empty message does not fit (an integer task_id of
    hundreds of digits): such a result cannot be published at all.
    """
    result = replace(result, task_id=safe_task_id(result.task_id))
    payload = encode_result(result)
    if len(payload) <= limit:
        return payload
    total = len(result.message.encode("utf-8", "backslashreplace"))
    note = f"\n[result cut at {limit} bytes; the message had {total}]"
    message = result.message
    while message:
        # Drop at least the excess (a character is at least one byte), then
        # again while JSON escapes still overflow.
        excess = len(payload) - limit + len(note.encode())
        message = message[: max(0, len(message) - excess)]
        payload = encode_result(replace(result, message=message + note))
        if len(payload) <= limit:
            return payload
    payload = encode_result(replace(result, message=note.strip()))
    return payload if len(payload) <= limit else None


STRIKES = 3
"""Connections lost with the same result first in line before it is quarantined."""


class StuckResults:
    """Finds the outbox entry that the broker will not take.

    A broker that finds a packet too large closes the connection; paho then
    sends the same message first again after every reconnect, and the host is
    cut off for good. Messages ahead of it are acknowledged before the broker
    reads it, so on every connect the oldest message still unacknowledged is
    the suspect; once the same one is in that place ``strikes`` times, it is
    to be quarantined. A result that merely met a network failure is
    acknowledged on the next connection and forgotten.
    """

    def __init__(self, strikes: int = STRIKES) -> None:
        self.strikes = strikes
        self._counts: dict[str, int] = {}

    def connected(self, in_flight: list[str]) -> str | None:
        """Note a (re)connect with ``in_flight`` unacknowledged; the entry to quarantine, if any."""
        if not in_flight:
            self._counts.clear()
            return None
        oldest = min(in_flight)
        count = self._counts.get(oldest, 0) + 1
        self._counts = {oldest: count}
        return oldest if count >= self.strikes else None

    def settled(self, name: str) -> None:
        self._counts.pop(name, None)
