"""The replacer's one exception: a failed step, carrying its result code.

Every step of the transaction either succeeds or raises :class:`ReplaceFailed`
with the documented code (0x2000-0x200a) and a message meant for the operator
who pushed the config; the caller turns it into a result message or a report.
"""

from __future__ import annotations

from collectd_monitor.codes import ResultCode
from collectd_monitor.errors import MonitorError


class ReplaceFailed(MonitorError):
    def __init__(self, code: ResultCode, message: str) -> None:
        super().__init__(f"{code.hex}: {message}")
        self.code = code
        self.message = message
