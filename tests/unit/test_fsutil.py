"""fsutil.atomic_write: the one helper for replacing a file whole."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from collectd_monitor.fsutil import atomic_write


def test_replaces_the_content_with_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    atomic_write(target, "new", mode=0o600)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["file.json"]


def test_a_failed_replace_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # os.replace cannot put a file over a directory
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):
        atomic_write(target, "new")
    assert os.listdir(tmp_path) == ["taken"]
    assert (target / "inside").read_text() == "kept"


def test_threads_of_one_process_can_replace_the_same_file_at_once(tmp_path: Path) -> None:
    """Two threads (say the connect handler and start-up) writing one status file."""
    target = tmp_path / "status.json"
    payloads = [f"writer {n} ".encode() * 2000 for n in range(6)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(payloads))

    def write(data: bytes) -> None:
        start.wait()
        try:
            for _ in range(40):
                atomic_write(target, data, durable=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in payloads
    assert os.listdir(tmp_path) == ["status.json"]
