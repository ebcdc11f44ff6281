"""What the central plugin's notifications carry: the local plugin's format, plus the host.

* ``host``          = the host the decision is about (the repair's target)
* ``plugin``        = :data:`PLUGIN_NAME`
* ``type``          = ``commands`` (as for local rules: it is in types.db)
* ``type_instance`` = the rule, ``config.json::metric::NAME``; ``presence`` for a
  host going offline or coming back
* ``message``       = JSON ``{"task_id", "code", "message"}``, at most 255 ASCII
  characters (:func:`collectd_monitor.rules.notify.result_message`)

Codes: a result carries the host's code; the central's own decisions carry the
0x14xx codes of :class:`~collectd_monitor.codes.ResultCode`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from collectd_monitor.codes import ResultCode
from collectd_monitor.rules import notify
from collectd_monitor.rules.declarative import GateSettings
from collectd_monitor.rules.model import Severity

PLUGIN_NAME = "collectd_monitor.central"
NOTIFICATION_TYPE = notify.NOTIFICATION_TYPE
FLEET = ""
"""``host`` of a fleet-wide decision (a rule aborted or resumed): collectd puts the
central's own host name there."""
PRESENCE = "presence"
"""``type_instance`` of presence notifications (a host offline, back online)."""


@dataclass(frozen=True, slots=True)
class Note:
    """A notification the central plugin dispatches."""

    host: str
    severity: Severity
    type_instance: str
    message: str

    @property
    def code(self) -> int:
        value = json.loads(self.message).get("code")
        return int(value) if isinstance(value, int) else -1


def note(
    host: str, severity: Severity, name: str, code: int, text: str, task_id: int | None = None
) -> Note:
    return Note(host, severity, notify.clip_name(name), notify.result_message(task_id, code, text))


def result(host: str, name: str, task_id: int, code: int, text: str) -> Note:
    severity = Severity.OKAY if code == 0 else Severity.FAILURE
    return note(host, severity, name, code, text, task_id)


def sent(host: str, name: str, task_id: int, label: str, reason: str) -> Note:
    return note(
        host, Severity.WARNING, name, ResultCode.CENTRAL_SENT, f"sent {label}: {reason}", task_id
    )


def refused(host: str, name: str, code: int, text: str) -> Note:
    severity = Severity.WARNING if code == ResultCode.CENTRAL_HELD else Severity.FAILURE
    return note(host, severity, name, code, text)


def silent(host: str, name: str, text: str) -> Note:
    return note(host, Severity.WARNING, name, ResultCode.CENTRAL_HOST_SILENT, text)


def presence(host: str, online: bool, text: str) -> Note:
    if online:
        return note(host, Severity.OKAY, PRESENCE, 0, text)
    return note(host, Severity.WARNING, PRESENCE, ResultCode.CENTRAL_HOST_OFFLINE, text)


def suspended(host: str, name: str, task_id: int | None, settings: GateSettings) -> Note:
    """The per-host circuit breaker of ``name`` opened for ``host``."""
    item = notify.suspended(
        name, task_id, settings.max_runs, settings.window, settings.resume_after
    )
    return Note(host, item.severity, item.type_instance, item.message)


def resumed(host: str, name: str, quiet: float) -> Note:
    item = notify.resumed(name, quiet)
    return Note(host, item.severity, item.type_instance, item.message)
