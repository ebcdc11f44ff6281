"""The history store on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from collectd_monitor.fleet.history import (
    History,
    RequestRecord,
    ResultRecord,
    open_history,
)
from collectd_monitor.fleet.location import HistoryError
from collectd_monitor.fleet.store import SCHEMA_VERSION, Database

from .conftest_fleet import PG_PASSWORD


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/history.sqlite3"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_request_and_result_in_any_order_and_any_number_of_times(history_url):
    history = open_history(history_url)
    try:
        now = time.time()
        # a recorder saw the result first, then the request on the wire
        history.record_result(ResultRecord(7, "web1", 0, "Hello", received_at=now + 0.2))
        history.record_request(RequestRecord(7, "web1", "command", "hello", "exec", sent_at=now))
        # the sender's own record arrives last: it knows who sent it, and when exactly
        history.record_request(
            RequestRecord(7, "web1", "command", "hello", "exec", sent_at=now + 0.05, sender="a@b")
        )
        # a second recorder records the same again; a late duplicate result changes nothing
        history.record_result(ResultRecord(7, "web1", 0, "Hello", received_at=now + 0.2))
        history.record_result(ResultRecord(7, "web1", 1, "again", received_at=now + 9))
        [entry] = history.entries()
        assert (entry.task_id, entry.host, entry.what, entry.code) == (7, "web1", "hello/exec", 0)
        assert entry.message == "Hello" and entry.sender == "a@b"
        assert entry.sent_at == pytest.approx(now + 0.05)
        assert entry.duration == pytest.approx(0.15)
    finally:
        history.close()


def test_a_real_result_replaces_a_senders_note_and_filters_apply(history_url):
    history = open_history(history_url)
    try:
        now = time.time()
        history.record_request(
            RequestRecord(1, "web-1", "command", "nginx", "restart", sent_at=now - 60)
        )
        history.record_request(RequestRecord(2, "db_1", "config", config_sha256="ab" * 32))
        history.record_result(ResultRecord(2, "db_1", None, "no result within 3 s"))
        history.record_result(ResultRecord(2, "db_1", 0x2007, "rolled back", now))
        history.record_request(RequestRecord(3, "web-2", "command", "app", "stop", sent_at=now))
        history.record_result(ResultRecord(3, "web-2", 0, "x" * 10_000, now))
        assert [e.task_id for e in history.entries()] == [1, 2, 3]
        assert [e.task_id for e in history.entries(limit=2)] == [2, 3]
        assert [e.task_id for e in history.entries(host="WEB-*")] == [1, 3]
        assert [e.task_id for e in history.entries(host="db_?")] == [2]
        assert [e.task_id for e in history.entries(host="db%")] == []
        assert [e.task_id for e in history.entries(service="nginx")] == [1]
        assert [e.task_id for e in history.entries(since=now - 1)] == [2, 3]
        by_id = {e.task_id: e for e in history.entries()}
        assert by_id[2].code == 0x2007 and by_id[2].what == "config " + "ab" * 6
        assert by_id[3].message is not None and "[cut at 4096 of 10000 chars]" in by_id[3].message
    finally:
        history.close()


def test_presence_changes_are_recorded_once(history_url):
    history = open_history(history_url)
    try:
        assert history.record_presence("web1", "online", 100.0, "{}")
        assert not history.record_presence("web1", "online", 100.0, "{}")
        assert history.record_presence("web1", "offline", 160.0, "{}")
        assert history.presence_changes("web1") == [
            ("web1", "online", 100.0),
            ("web1", "offline", 160.0),
        ]
    finally:
        history.close()


def test_migrations_run_once_when_many_processes_start_together(history_url):
    errors: list[BaseException] = []
    opened: list[History] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        try:
            barrier.wait()
            opened.append(open_history(history_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors
        rows = opened[0].db.execute("SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        for history in opened:
            history.close()


def test_a_newer_schema_is_refused(history_url):
    open_history(history_url).close()
    from collectd_monitor.fleet.location import resolve

    db = Database(resolve(history_url))
    db.execute(
        "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
        (SCHEMA_VERSION + 1, "from the future", 0.0),
    )
    db.close()
    with pytest.raises(HistoryError, match="newer than this collectd-monitor knows"):
        open_history(history_url)


def test_unreachable_postgresql_names_the_url_without_its_password(postgres_server):
    url = postgres_server.url().replace(str(postgres_server.port), "1")
    with pytest.raises(HistoryError) as failed:
        open_history(url, connect_timeout=2)
    assert "cmtest@127.0.0.1:1/postgres" in str(failed.value)
    assert PG_PASSWORD not in str(failed.value)


def test_wrong_postgresql_password_does_not_leak_it(postgres_server):
    url = postgres_server.url(password="wrong-Pa55word")
    with pytest.raises(HistoryError) as failed:
        open_history(url, connect_timeout=2)
    assert "wrong-Pa55word" not in str(failed.value)
    assert "password authentication failed" in str(failed.value)
