"""The outbox's fsync after the publish: what gets synced, on which thread, and when not."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from collectd_monitor.commands.flusher import Flusher
from collectd_monitor.commands.outbox import Outbox


class Recorder:
    """Stands in for ``os.fsync``: notes which file and on which thread, then syncs it."""

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


def test_a_persisted_entry_is_synced_on_the_flushers_thread(tmp_path: Path, recorder: Recorder):
    box = Outbox(tmp_path / "outbox", flusher=Flusher(sync=recorder))
    entry = box.put("t/r", b'{"task_id": 1}')
    assert recorder.synced == []  # put() alone writes to the page cache only
    box.persist(entry)
    assert box.flusher.wait(10)
    assert recorder.synced == [(str(tmp_path / "outbox" / entry.name), "cm-outbox-sync")]
    box.close()


def test_an_entry_acknowledged_before_its_sync_is_not_synced(tmp_path: Path, recorder: Recorder):
    box = Outbox(tmp_path / "outbox", flusher=Flusher(sync=recorder))
    delivered, waiting = box.put("t", b"1"), box.put("t", b"2")
    box.remove(delivered)
    box.persist(delivered)
    box.persist(waiting)
    assert box.flusher.wait(10)
    assert recorder.paths == [str(tmp_path / "outbox" / waiting.name)]
    box.close()


def test_close_syncs_on_the_caller_and_later_entries_are_synced_at_once(
    tmp_path: Path, recorder: Recorder
):
    box = Outbox(tmp_path / "outbox", flusher=Flusher(sync=recorder))
    box.close()  # collectd stops; a command aborted by the stop still reports after it
    entry = box.put("t", b"late")
    box.persist(entry)
    assert recorder.synced == [(str(tmp_path / "outbox" / entry.name), "MainThread")]


def test_a_failed_sync_is_logged_and_the_next_entry_is_still_synced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    recorder = Recorder(failures=1)
    box = Outbox(tmp_path / "outbox", flusher=Flusher(sync=recorder))
    first, second = box.put("t", b"1"), box.put("t", b"2")
    with caplog.at_level(logging.WARNING):
        box.persist(first)
        assert box.flusher.wait(10)
        box.persist(second)
        assert box.flusher.wait(10)
    assert recorder.paths == [str(tmp_path / "outbox" / second.name)]
    assert "survives a crash, not a power loss" in caplog.text
    box.close()


def test_a_memory_only_outbox_syncs_nothing(recorder: Recorder):
    box = Outbox(None, flusher=Flusher(sync=recorder))
    box.persist(box.put("t", b"x"))
    box.close()
    assert recorder.synced == []
