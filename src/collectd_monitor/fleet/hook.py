"""What ``send-command`` and ``send-config`` write to the history.

A history that cannot be written costs a warning on stderr, never the
sender's result or exit status. The history modules (and with them sqlite3
or psycopg) are imported only when something is recorded: not with
``--no-history``, and not by parsing the options. When something is
recorded, opening the history and writing the request happen on a thread of
their own while the request goes out and its result is awaited (time the
process would otherwise spend waiting); the result is written once both are
done.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from collectd_monitor.commands.protocol import Result
from collectd_monitor.commands.sender import ResultTimeout
from collectd_monitor.errors import TransportError
from collectd_monitor.fleet.location import HISTORY_ENV
from collectd_monitor.fleet.topics import host_of

if TYPE_CHECKING:
    from collectd_monitor.fleet.history import History, RequestRecord


def add_history_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("history")
    group.add_argument(
        "--history",
        metavar="URL",
        help="record the request and its result here: sqlite:///PATH, a path, or "
        f"postgresql://USER:PASS@HOST:PORT/DB (default ${HISTORY_ENV}, else an SQLite file "
        "under $XDG_STATE_HOME/collectd-monitor/)",
    )
    group.add_argument("--no-history", action="store_true", help="record nothing")


def sender_identity() -> str:
    """``user@host`` of this process."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


def request_record(
    payload: Mapping[str, Any], host: str, sent_at: float, sender: str | None = None
) -> RequestRecord:
    """The history's view of a command or config message (a config by its SHA-256 only)."""
    import hashlib

    from collectd_monitor.fleet.history import RequestRecord

    task_id = int(payload["task_id"])
    if "config" in payload:
        digest = hashlib.sha256(str(payload["config"]).encode("utf-8")).hexdigest()
        return RequestRecord(
            task_id, host, "config", config_sha256=digest, sent_at=sent_at, sender=sender
        )
    return RequestRecord(
        task_id,
        host,
        "command",
        service=str(payload.get("service")),
        command=str(payload.get("command")),
        sent_at=sent_at,
        sender=sender,
    )


class _Journal:
    def __init__(self, url: str | None) -> None:
        self.history: History | None = None
        try:
            from collectd_monitor.fleet.history import open_history

            self.history = open_history(url, connect_timeout=3.0)
        except Exception as exc:
            self.warn(exc)

    def warn(self, exc: BaseException) -> None:
        print(f"collectd-monitor: warning: history not recorded: {exc}", file=sys.stderr)
        if self.history is not None:
            self.history.close()
        self.history = None

    def write(self, action: Callable[[History], None]) -> None:
        if self.history is None:
            return
        try:
            action(self.history)
        except Exception as exc:
            self.warn(exc)

    def result(
        self, task_id: int, host: str, code: int | None, message: str, *times: float
    ) -> None:
        """Write a result (``times``: received_at and duration, when one came)."""

        def record(history: History) -> None:
            from collectd_monitor.fleet.history import ResultRecord

            history.record_result(ResultRecord(task_id, host, code, message, *times))

        self.write(record)

    def close(self) -> None:
        if self.history is not None:
            self.history.close()


def recorded(
    args: argparse.Namespace,
    payload: Mapping[str, Any],
    topic: str,
    request: Callable[[], Result],
) -> Result:
    """Run ``request()`` (which sends ``payload`` to ``topic``) and record it and its result."""
    if getattr(args, "no_history", False):
        return request()
    to = getattr(args, "to", None)
    if isinstance(to, list | tuple):
        to = to[0] if len(to) == 1 else None
    host = to if isinstance(to, str) and to else host_of(topic)
    url = getattr(args, "history", None)
    task_id = int(payload["task_id"])
    sent_at = time.time()
    opened: list[_Journal] = []

    def open_and_record() -> None:
        journal = _Journal(url)
        journal.write(
            lambda h: h.record_request(request_record(payload, host, sent_at, sender_identity()))
        )
        opened.append(journal)

    # not a daemon: a process interrupted while it waits still records its request
    opener = threading.Thread(target=open_and_record, name="history")
    opener.start()
    started = time.monotonic()
    try:
        result = request()
    except (ResultTimeout, TransportError) as exc:
        note = str(exc) if isinstance(exc, ResultTimeout) else f"not sent: {exc}"
        opener.join()
        for journal in opened:
            journal.result(task_id, host, None, note)
            journal.close()
        raise
    duration = time.monotonic() - started
    opener.join()
    for journal in opened:
        journal.result(task_id, host, result.code, result.message, time.time(), duration)
        journal.close()
    return result
