"""The database under the history: SQLite or PostgreSQL, and the schema's migrations.

Both speak DB-API; the differences we meet are the placeholder style, how a
writer takes the lock that makes migrations safe when two processes start at
once, and the driver's exception classes. PostgreSQL's driver (psycopg 3) is
imported only when a PostgreSQL URL is used.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collectd_monitor.fleet.location import HistoryError, Location

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "requests and their results",
        (
            """CREATE TABLE requests (
                task_id BIGINT NOT NULL,
                host TEXT NOT NULL,
                kind TEXT,
                service TEXT,
                command TEXT,
                config_sha256 TEXT,
                sent_at DOUBLE PRECISION,
                sender TEXT,
                code INTEGER,
                message TEXT,
                received_at DOUBLE PRECISION,
                duration DOUBLE PRECISION,
                PRIMARY KEY (task_id, host)
            )""",
            "CREATE INDEX requests_by_time ON requests (sent_at)",
            "CREATE INDEX requests_by_host ON requests (host)",
        ),
    ),
    (
        2,
        "presence changes",
        (
            """CREATE TABLE presence (
                host TEXT NOT NULL,
                status TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                recorded_at DOUBLE PRECISION NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (host, at, status)
            )""",
        ),
    ),
)
"""Numbered migrations, applied in order, each version once. Append; never edit."""

SCHEMA_VERSION = MIGRATIONS[-1][0]
_PG_LOCK_KEY = 0x636D6869  # "cmhi": the advisory lock that serialises migrations


class Database:
    """One connection, in autocommit mode; :meth:`transaction` groups statements."""

    def __init__(self, location: Location, *, connect_timeout: float = 5.0) -> None:
        self.location = location
        self._password = _password_of(location)
        self._errors: tuple[type[BaseException], ...]
        if location.kind == "sqlite":
            self.conn: Any = self._open_sqlite(location.target, connect_timeout)
            self._errors = (sqlite3.Error,)
        else:
            self.conn = self._open_postgres(location.target, connect_timeout)

    def _open_sqlite(self, path: str, timeout: float) -> sqlite3.Connection:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            _use_wal(conn, timeout)
            conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"cannot open the history at {path}: {exc}") from None
        return conn

    def _open_postgres(self, url: str, timeout: float) -> Any:
        try:
            import psycopg
        except ImportError:
            raise HistoryError(
                "a PostgreSQL history needs psycopg: pip install 'collectd-monitor[postgres]'"
            ) from None
        self._errors = (psycopg.Error,)
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(timeout)))
        except psycopg.Error as exc:
            raise HistoryError(
                f"cannot reach the history at {self.location.shown}: {self._clean(exc)}"
            ) from None

    # -- statements ----------------------------------------------------------------------

    def _clean(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        return text.replace(self._password, "***") if self._password else text

    def _sql(self, sql: str) -> str:
        return sql if self.location.kind == "sqlite" else sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; return its rows (empty for statements without any)."""
        try:
            cursor = self.conn.execute(self._sql(sql), tuple(params))
            rows = cursor.fetchall() if cursor.description is not None else []
        except self._errors as exc:
            raise HistoryError(f"history at {self.location.shown}: {self._clean(exc)}") from None
        return [tuple(row) for row in rows]

    @contextmanager
    def transaction(self, *, exclusive: bool = False) -> Iterator[None]:
        """BEGIN ... COMMIT (ROLLBACK on error); ``exclusive`` serialises migrations."""
        sqlite = self.location.kind == "sqlite"
        self.execute("BEGIN IMMEDIATE" if sqlite and exclusive else "BEGIN")
        try:
            if exclusive and not sqlite:
                self.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK_KEY,))
            yield
        except BaseException:
            try:
                self.execute("ROLLBACK")
            except HistoryError:
                pass
            raise
        self.execute("COMMIT")

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass

    # -- schema --------------------------------------------------------------------------

    def schema_version(self) -> int:
        rows = self.execute("SELECT MAX(version) FROM schema_version")
        return int(rows[0][0] or 0)

    def migrate(self) -> int:
        """Bring the schema up to :data:`SCHEMA_VERSION`; return the number of steps applied.

        The check and the steps run in one transaction under an exclusive lock,
        so two processes starting at once apply each step exactly once.
        """
        try:
            if self.schema_version() == SCHEMA_VERSION:
                return 0
        except HistoryError:
            pass  # no schema_version table yet
        with self.transaction(exclusive=True):
            self.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                "applied_at DOUBLE PRECISION NOT NULL)"
            )
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise HistoryError(
                    f"the history at {self.location.shown} has schema version {current}, "
                    f"newer than this collectd-monitor knows ({SCHEMA_VERSION}); upgrade it"
                )
            applied = 0
            for version, description, statements in MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    self.execute(statement)
                self.execute(
                    "INSERT INTO schema_version (version, description, applied_at) "
                    "VALUES (?, ?, ?)",
                    (version, description, time.time()),
                )
                applied += 1
        return applied


def _password_of(location: Location) -> str:
    if location.kind != "postgresql":
        return ""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(location.target).password
    except ValueError:
        return ""
    return unquote(password) if password else ""


def _use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to WAL once (it stays so). Several processes opening a new
    history together may find it locked while the first one switches: retry."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
