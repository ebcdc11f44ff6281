"""The history: every request sent to a host and the result that came back.

One row per (task_id, host), written by senders and by recorders alike, in any
order and any number of times: a request fills the request's columns, a result
the result's, so recording the same thing twice changes nothing. A sender's own
record of its request (it knows who sent it and when, to the microsecond) wins
over what a recorder saw on the wire; the first real result wins over a later
one and over a sender's note such as "no result within 30 s".
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from collectd_monitor.fleet.location import Location, resolve
from collectd_monitor.fleet.store import Database

MAX_MESSAGE = 4096
"""Characters of a result's message kept in the history."""


@dataclass(frozen=True)
class RequestRecord:
    task_id: int
    host: str
    kind: str
    """``command`` or ``config``."""
    service: str | None = None
    command: str | None = None
    config_sha256: str | None = None
    sent_at: float | None = None
    sender: str | None = None
    """``user@host`` of the process that sent it, when known."""


@dataclass(frozen=True)
class ResultRecord:
    task_id: int
    host: str
    code: int | None
    """``None`` for a sender's note when no result came."""
    message: str
    received_at: float | None = None
    duration: float | None = None


@dataclass(frozen=True)
class Entry:
    """A request with its result, as :meth:`History.entries` lists them."""

    task_id: int
    host: str
    kind: str | None
    service: str | None
    command: str | None
    config_sha256: str | None
    sent_at: float | None
    sender: str | None
    code: int | None
    message: str | None
    received_at: float | None
    duration: float | None

    @property
    def what(self) -> str:
        if self.kind == "config":
            return f"config {(self.config_sha256 or '?')[:12]}"
        if self.service is None and self.command is None:
            return "?"
        return f"{self.service}/{self.command}"

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = asdict(self)
        data["sent_at"] = iso(self.sent_at)
        data["received_at"] = iso(self.received_at)
        return data


_REQUEST_FIELDS = ("kind", "service", "command", "config_sha256", "sent_at", "sender")
_RESULT_FIELDS = ("code", "message", "received_at", "duration")
_COLUMNS = ("task_id", "host", *_REQUEST_FIELDS, *_RESULT_FIELDS)


def _upsert(fields: tuple[str, ...], assignment: str) -> str:
    names = ("task_id", "host", *fields)
    return (
        f"INSERT INTO requests ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        "ON CONFLICT (task_id, host) DO UPDATE SET "
        + ", ".join(f"{name} = {assignment.format(name=name)}" for name in fields)
    )


_UPSERT_REQUEST = _upsert(
    _REQUEST_FIELDS,
    "CASE WHEN excluded.sender IS NOT NULL THEN COALESCE(excluded.{name}, requests.{name}) "
    "ELSE COALESCE(requests.{name}, excluded.{name}) END",
)
_UPSERT_RESULT = _upsert(
    _RESULT_FIELDS,
    "CASE WHEN requests.code IS NULL THEN excluded.{name} ELSE requests.{name} END",
)


class History:
    """The history store at ``location`` (see :func:`open_history`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def location(self) -> Location:
        return self.db.location

    def record_request(self, request: RequestRecord) -> None:
        values = [getattr(request, name) for name in ("task_id", "host", *_REQUEST_FIELDS)]
        self.db.execute(_UPSERT_REQUEST, values)

    def record_result(self, result: ResultRecord) -> None:
        capped = result.message
        if len(capped) > MAX_MESSAGE:
            capped = capped[:MAX_MESSAGE] + f" [cut at {MAX_MESSAGE} of {len(capped)} chars]"
        self.db.execute(
            _UPSERT_RESULT,
            (
                result.task_id,
                result.host,
                result.code,
                capped,
                result.received_at,
                result.duration,
            ),
        )

    def record_presence(self, host: str, status: str, at: float, body: str) -> bool:
        """Record a status message once; True when it was new."""
        rows = self.db.execute(
            "INSERT INTO presence (host, status, at, recorded_at, body) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (host, at, status) DO NOTHING RETURNING host",
            (host, status, at, time.time(), body),
        )
        return bool(rows)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group several records into one transaction (one disk sync for SQLite)."""
        with self.db.transaction():
            yield

    def entries(
        self,
        *,
        host: str | None = None,
        service: str | None = None,
        since: float | None = None,
        limit: int = 50,
    ) -> list[Entry]:
        """The newest ``limit`` requests matching the filters, oldest first.

        ``host`` is a glob (``*`` and ``?``).
        """
        where: list[str] = []
        params: list[object] = []
        if host:
            where.append("LOWER(host) LIKE LOWER(?) ESCAPE '\\'")
            params.append(glob_to_like(host))
        if service:
            where.append("service = ?")
            params.append(service)
        if since is not None:
            where.append("COALESCE(sent_at, received_at) >= ?")
            params.append(since)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY COALESCE(sent_at, received_at) DESC, task_id DESC LIMIT ?"
        rows = self.db.execute(sql, [*params, limit])
        found = [_entry(row) for row in rows]
        found.reverse()
        return found

    def presence_changes(self, host: str | None = None) -> list[tuple[str, str, float]]:
        sql = "SELECT host, status, at FROM presence"
        params: list[object] = []
        if host:
            sql += " WHERE host = ?"
            params.append(host)
        rows = self.db.execute(sql + " ORDER BY at, host", params)
        return [(str(h), str(s), float(a)) for h, s, a in rows]

    def close(self) -> None:
        self.db.close()


def open_history(url: str | Location | None = None, *, connect_timeout: float = 5.0) -> History:
    """Open (and migrate) the history at ``url``, ``$COLLECTD_MONITOR_HISTORY`` or the default.

    Raises :class:`~collectd_monitor.fleet.location.HistoryError`.
    """
    location = url if isinstance(url, Location) else resolve(url)
    db = Database(location, connect_timeout=connect_timeout)
    try:
        db.migrate()
    except BaseException:
        db.close()
        raise
    return History(db)


def _entry(row: tuple[object, ...]) -> Entry:
    data = dict(zip(_COLUMNS, row, strict=True))
    sent, received = data["sent_at"], data["received_at"]
    if data["duration"] is None and isinstance(sent, float) and isinstance(received, float):
        data["duration"] = max(received - sent, 0.0)
    return Entry(**data)  # type: ignore[arg-type]


def glob_to_like(pattern: str) -> str:
    """A shell glob (``*``, ``?``) as a LIKE pattern with ``\\`` as its escape."""
    out = []
    for char in pattern:
        if char in "\\%_":
            out.append("\\" + char)
        elif char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(char)
    return "".join(out)


def iso(moment: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC to the millisecond, or None."""
    if moment is None:
        return None
    stamp = dt.datetime.fromtimestamp(moment, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
