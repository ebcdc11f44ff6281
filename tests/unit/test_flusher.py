"""The outbox's fsync after the publish: what gets synced, on which thread, and when not."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from collectd_monitor.commands.flusher import Flusher
from collectd_monitor.commands.outbox import Outbox


class Recorder:
    """Stands in for ``os.fdatasync``: notes which file and on which thread, then syncs it."""

    def __init__(self, failures: int = 0) -> None:
        self.synced: list[tuple[str, str]] = []
        self.failures = failures

    def __call__(self, fd: int) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(5, "Input/output error")
        self.synced.append((os.readlink(f"/proc/self/fd/{fd}"), threading.current_thread().name))
        os.fsync(fd)

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.synced]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def journal_path(box: Outbox) -> str:
    (path,) = (box.directory or Path("/nonexistent")).glob("journal-*.jsonl")
    return str(path)


def test_a_persisted_entry_is_synced_on_the_flushers_thread(tmp_path: Path, recorder: Recorder):
    box = Outbox(tmp_path / "outbox", flusher=Flusher(sync=recorder, delay=0))
    entry = box.put("t/r", b'{"task_id": 1}')
    assert recorder.synced == []  # put() alone writes to the page cache only
    box.persist(entry)
    assert box.flusher.wait(10)
    assert recorder.synced == [(journal_path(box), "cm-outbox-sync")]
    box.close()


def test_results_acknowledged_within_the_delay_are_never_synced(tmp_path: Path, recorder: Recorder):
    box = Outbox(tmp_path / "outbox", flusher=Flusher(sync=recorder, delay=0.3))
    for n in range(5):  # the healthy link: PUBCOMP a millisecond after the publish
        entry = box.put("t/r", b"%d" % n)
        box.persist(entry)
        box.remove(entry)
    assert box.flusher.wait(10)
    assert recorder.synced == []
    assert os.path.getsize(journal_path(box)) == 0  # cut back: nothing waits
    box.close()
    assert list((tmp_path / "outbox").iterdir()) == []  # a clean stop leaves no journal


def test_an_entry_acknowledged_before_its_sync_is_not_synced(tmp_path: Path, recorder: Recorder):
    box = Outbox(tmp_path / "outbox", flusher=Flusher(sync=recorder, delay=0))
    delivered, waiting = box.put("t", b"1"), box.put("t", b"2")
    box.remove(delivered)
    box.persist(delivered)
    assert box.flusher.wait(10)
    assert recorder.synced == []
    box.persist(waiting)
    assert box.flusher.wait(10)
    assert recorder.paths == [journal_path(box)]
    box.close()


def test_close_syncs_on_the_caller_and_later_entries_are_synced_at_once(
    tmp_path: Path, recorder: Recorder
):
    box = Outbox(tmp_path / "outbox", flusher=Flusher(sync=recorder, delay=5))
    box.persist(box.put("t", b"waits"))
    box.close()  # collectd stops: the journal is synced now, not after the delay
    assert box.flusher.wait(0)
    assert recorder.synced == [(journal_path(box), "MainThread")]
    late = box.put("t", b"late")  # a command that ended while collectd stopped
    assert (tmp_path / "outbox" / late.name).exists()
    assert sorted(e.payload for e in Outbox(tmp_path / "outbox").pending()) == [b"late", b"waits"]


def test_a_failed_sync_is_logged_and_the_next_entry_is_still_synced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    recorder = Recorder(failures=1)
    box = Outbox(tmp_path / "outbox", flusher=Flusher(sync=recorder, delay=0))
    first, second = box.put("t", b"1"), box.put("t", b"2")
    with caplog.at_level(logging.WARNING):
        box.persist(first)
        assert box.flusher.wait(10)
        box.persist(second)
        assert box.flusher.wait(10)
    assert recorder.paths == [journal_path(box)]  # tried again, and both are synced now
    assert "survive a crash, not a power loss" in caplog.text
    box.close()


def test_a_memory_only_outbox_syncs_nothing(recorder: Recorder):
    box = Outbox(None, flusher=Flusher(sync=recorder))
    box.persist(box.put("t", b"x"))
    box.close()
    assert recorder.synced == []


class WakeCounter(Flusher):
    """Counts the times the thread had to be woken up."""

    wakes = 0

    def _wake(self) -> None:
        self.wakes += 1
        super()._wake()


def test_work_after_expect_needs_no_wake_up_and_still_waits_its_delay():
    flusher = WakeCounter(delay=0.2)
    ran: list[tuple[str, float]] = []
    flusher.expect()  # a command started: the thread wakes now, and sets its alarm
    assert flusher.wakes == 1
    handed_in = time.monotonic()
    flusher.later(lambda: ran.append((threading.current_thread().name, time.monotonic())))
    flusher.later(lambda: ran.append(("second", time.monotonic())))
    assert flusher.wakes == 1  # the result's path woke nobody
    assert ran == []
    assert flusher.wait(10)
    assert [name for name, _ in ran] == ["cm-outbox-sync", "second"]
    assert ran[0][1] - handed_in >= 0.2
    flusher.close()


def test_without_expect_the_first_work_wakes_the_thread_once():
    flusher = WakeCounter(delay=0.05)
    for _ in range(3):
        flusher.later(lambda: None)
    assert flusher.wakes == 1
    assert flusher.wait(10)
    flusher.close()


def test_a_failing_call_is_logged_and_the_next_one_still_runs(caplog: pytest.LogCaptureFixture):
    flusher = Flusher(delay=0)
    ran: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR):
        flusher.later(boom)
        flusher.later(lambda: ran.append(1))
        assert flusher.wait(10)
    assert ran == [1]
    assert "boom" in caplog.text
    flusher.close()


def test_close_runs_waiting_calls_on_the_caller_and_later_ones_at_once():
    flusher = Flusher(delay=5)
    ran: list[str] = []
    flusher.expect()
    flusher.later(lambda: ran.append(threading.current_thread().name))
    flusher.close()  # collectd stops: no waiting out the delay
    flusher.later(lambda: ran.append("after close"))
    assert ran == ["MainThread", "after close"]
