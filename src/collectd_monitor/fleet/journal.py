"""The history of a fan-out: requests and results written in batches, one transaction each.

A fan-out to thousands of hosts would spend most of its time committing one
row at a time; here records wait in memory until :meth:`Journal.flush` (the
sender calls it a few times a second and at the end). As with a single
request, a history that cannot be written costs one warning, never the run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from collectd_monitor.fleet.history import History, RequestRecord, ResultRecord, open_history
from collectd_monitor.fleet.hook import request_record, sender_identity


class Journal:
    def __init__(
        self,
        url: str | None,
        *,
        enabled: bool = True,
        stderr: TextIO | None = None,
        opener: Callable[[str | None], History] | None = None,
    ) -> None:
        self.stderr = stderr or sys.stderr
        self.sender = sender_identity()
        self.history: History | None = None
        self._pending: list[RequestRecord | ResultRecord] = []
        if not enabled:
            return
        try:
            self.history = (opener or _open)(url)
        except Exception as exc:
            self._warn(exc)

    @property
    def recording(self) -> bool:
        return self.history is not None

    def _warn(self, exc: BaseException) -> None:
        print(f"collectd-monitor: warning: history not recorded: {exc}", file=self.stderr)
        if self.history is not None:
            self.history.close()
        self.history = None
        self._pending.clear()

    def request(self, payload: Mapping[str, Any], host: str) -> None:
        if self.history is not None:
            self._pending.append(request_record(payload, host, time.time(), self.sender))

    def result(
        self,
        task_id: int,
        host: str,
        code: int | None,
        message: str,
        duration: float | None = None,
    ) -> None:
        if self.history is not None:
            received = time.time() if code is not None else None
            self._pending.append(ResultRecord(task_id, host, code, message, received, duration))

    def flush(self) -> None:
        history = self.history
        if history is None or not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            with history.batch():
                for record in pending:
                    if isinstance(record, RequestRecord):
                        history.record_request(record)
                    else:
                        history.record_result(record)
        except Exception as exc:
            self._warn(exc)

    def close(self) -> None:
        self.flush()
        if self.history is not None:
            self.history.close()
            self.history = None


def _open(url: str | None) -> History:
    return open_history(url, connect_timeout=3.0)
