"""Files in state directories: atomic, private, never through a planted symlink."""

from __future__ import annotations

import os
import pwd
import threading
from pathlib import Path

import pytest

from collectd_monitor.fsutil import (
    UnsafePath,
    atomic_write,
    check_directory,
    open_private,
    private_directory,
)

NOBODY = pwd.getpwnam("nobody").pw_uid
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def test_atomic_write_sets_the_mode_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "f"
    atomic_write(target, "one", mode=0o640)
    atomic_write(target, b"two")
    assert target.read_text() == "two" and (target.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_atomic_write_cleans_up_when_the_rename_fails(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        atomic_write(tmp_path / "dir", "x")  # cannot replace a directory with a file
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]


def test_atomic_write_replaces_a_planted_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "state").symlink_to(victim)
    atomic_write(tmp_path / "state", "ours")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "state").is_symlink()


def test_private_directory_is_created_0700(tmp_path):
    made = private_directory(tmp_path / "a" / "b")
    assert (made.stat().st_mode & 0o777) == 0o700


def test_a_symlinked_state_directory_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "state").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePath, match="symbolic link"):
        check_directory(tmp_path / "state")


def test_a_world_writable_directory_is_refused(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    with pytest.raises(UnsafePath, match="writable by group or others"):
        check_directory(loose)


def test_a_sticky_world_writable_parent_is_accepted(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    check_directory(private_directory(tmp / "mine"))


@as_root
def test_a_directory_owned_by_another_user_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, -1)
    with pytest.raises(UnsafePath, match="owned by uid"):
        check_directory(theirs / "sub")


def test_open_private_never_follows_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "lock").symlink_to(victim)
    with pytest.raises(OSError):
        open_private(tmp_path / "lock", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    assert victim.read_text() == "precious"


@as_root
def test_open_private_refuses_a_file_owned_by_another_user(tmp_path):
    planted = tmp_path / "log"
    planted.write_text("")
    os.chown(planted, NOBODY, -1)
    with pytest.raises(UnsafePath, match="owned by uid"):
        open_private(planted, os.O_WRONLY | os.O_APPEND)


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
