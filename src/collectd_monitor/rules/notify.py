"""What the local plugin's notifications carry, within collectd's limits.

collectd cuts a notification's message at 255 bytes without a word, which
would leave half a JSON object; ``type`` must name a types.db dataset or
``dispatch()`` raises; ``type_instance`` holds at most 127 bytes. So:

* ``plugin``        = :data:`PLUGIN_NAME`
* ``type``          = :data:`NOTIFICATION_TYPE` (always; it exists in types.db)
* ``type_instance`` = the rule's name, ``<file>::<metric|notification>::<name>``
* ``message``       = JSON ``{"task_id", "code", "message"}``, ASCII only (so
  characters are bytes), at most 255 of them; a longer command output is cut
  and ends in ``[cut, N chars]`` so the JSON stays valid.
"""

from __future__ import annotations

import json

from collectd_monitor.codes import ResultCode
from collectd_monitor.rules.model import Outgoing, Severity

PLUGIN_NAME = "collectd_monitor.local"
NOTIFICATION_TYPE = "commands"
MAX_MESSAGE = 255
MAX_TYPE_INSTANCE = 127

SUSPENDED = ResultCode.RULE_SUSPENDED
"""Result code of a circuit-breaker notification: the rule suspended itself."""


def _encode(task_id: int | None, code: int, message: str) -> str:
    return json.dumps({"task_id": task_id, "code": code, "message": message}, ensure_ascii=True)


def result_message(task_id: int | None, code: int, message: str, limit: int = MAX_MESSAGE) -> str:
    """The JSON message, shortened to ``limit`` characters while staying valid JSON."""
    text = _encode(task_id, code, message)
    if len(text) <= limit:
        return text
    marker = f" [cut, {len(message)} chars]"
    low, high = 0, len(message)
    while low < high:  # the longest prefix that fits together with the marker
        middle = (low + high + 1) // 2
        if len(_encode(task_id, code, message[:middle] + marker)) <= limit:
            low = middle
        else:
            high = middle - 1
    text = _encode(task_id, code, message[:low] + marker)
    if len(text) > limit:  # not even the marker fits (absurd limit): say only that
        text = _encode(task_id, code, "[cut]")
    return text


def clip_name(name: str) -> str:
    """A rule name that fits ``type_instance`` (bytes, as collectd counts)."""
    data = name.encode("utf-8")
    if len(data) <= MAX_TYPE_INSTANCE:
        return name
    return data[: MAX_TYPE_INSTANCE - 3].decode("utf-8", errors="ignore") + "..."


def result(name: str, task_id: int | None, code: int, message: str) -> Outgoing:
    severity = Severity.OKAY if code == 0 else Severity.FAILURE
    return Outgoing(severity, clip_name(name), result_message(task_id, code, message))


def suspended(name: str, task_id: int | None, runs: int, window: float, resume: float) -> Outgoing:
    text = (
        f"circuit breaker open: {runs} runs within {window:g} s; rule suspended until it "
        f"reports no fault for {resume:g} s"
    )
    return Outgoing(Severity.FAILURE, clip_name(name), result_message(task_id, SUSPENDED, text))


def resumed(name: str, quiet: float) -> Outgoing:
    text = f"circuit breaker closed: no fault for {quiet:g} s; rule active again"
    return Outgoing(Severity.OKAY, clip_name(name), result_message(None, 0, text))
