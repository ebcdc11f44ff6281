"""State, outbox, lock and helper-log files in directories another user may change.

Runs as root in the test environment (like collectd): another user's
directory or a planted symlink must never make us truncate, append to or
chmod a file we do not own. Each case degrades (memory only, a refused
replacement) with one clear log line instead.
"""

from __future__ import annotations

import logging
import os
import pwd
from pathlib import Path

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.outbox import Outbox
from collectd_monitor.commands.seen import SeenTasks
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.helper import HelperSpec, spawn
from collectd_monitor.replacer.lock import ReplaceLock
from collectd_monitor.replacer.paths import ReplacerPaths

VICTIM_TEXT = "root:secret:do not touch\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text(VICTIM_TEXT)
    path.chmod(0o640)
    return path


def untouched(victim: Path) -> bool:
    return victim.read_text() == VICTIM_TEXT and (victim.stat().st_mode & 0o7777) == 0o640


def nobody() -> int:
    return pwd.getpwnam("nobody").pw_uid


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def shared_dir(path: Path) -> Path:
    """A directory anyone may write to (not sticky): where a planted symlink can appear."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


# --------------------------------------------------------------------------- seen tasks


def test_seen_tasks_in_a_world_writable_directory_stay_in_memory(tmp_path, victim, caplog):
    state = shared_dir(tmp_path / "state")
    (state / "seen-tasks.jsonl").symlink_to(victim)
    with caplog.at_level(logging.ERROR):
        seen = SeenTasks(path=state / "seen-tasks.jsonl")
        assert seen.add(7) and not seen.add(7)
        seen.close()
    assert untouched(victim)
    assert seen.path is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "writable by group or others" in errors[0]
    assert "replay protection is memory-only" in errors[0]


@needs_root
def test_seen_tasks_in_another_users_directory_stay_in_memory(tmp_path, victim, caplog):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, nobody(), -1)
    (state / "seen-tasks.jsonl").symlink_to(victim)
    with caplog.at_level(logging.ERROR):
        seen = SeenTasks(path=state / "seen-tasks.jsonl")
        seen.add(1)
        seen.close()
    assert untouched(victim)
    assert f"owned by uid {nobody()}" in caplog.text


def test_a_symlinked_store_in_our_own_directory_is_replaced_not_followed(tmp_path, victim):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "seen-tasks.jsonl").symlink_to(victim)
    seen = SeenTasks(path=state / "seen-tasks.jsonl")
    seen.add(11)
    seen.close()
    assert untouched(victim)
    assert not (state / "seen-tasks.jsonl").is_symlink()
    again = SeenTasks(path=state / "seen-tasks.jsonl")
    assert again.add(11) is False
    again.close()


def test_the_append_handle_is_never_opened_through_a_symlink(tmp_path, victim, monkeypatch):
    """A link planted between the rewrite and the open (a race) is refused, not followed."""
    import collectd_monitor.commands.seen as seen_module

    real_write = seen_module.atomic_write

    def write_then_plant(path: Path, data: str, **kwargs: object) -> None:
        real_write(path, data, **kwargs)  # type: ignore[arg-type]
        os.unlink(path)
        os.symlink(victim, path)

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    monkeypatch.setattr(seen_module, "atomic_write", write_then_plant)
    seen = SeenTasks(path=state / "seen-tasks.jsonl")
    seen.add(5)
    seen.close()
    assert untouched(victim)
    assert seen.path is None


# --------------------------------------------------------------------------- outbox


def test_an_outbox_symlinked_elsewhere_is_refused(tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "outbox").symlink_to(elsewhere)
    with caplog.at_level(logging.ERROR):
        outbox = Outbox(state / "outbox")
        entry = outbox.put("t", b"{}")
    assert list(elsewhere.iterdir()) == []
    assert outbox.directory is None
    assert [e.name for e in outbox.pending()] == [entry.name]
    assert "unsafe outbox directory" in caplog.text
    assert "is a symbolic link" in caplog.text


def test_an_outbox_under_a_world_writable_state_directory_is_refused(tmp_path, caplog):
    state = shared_dir(tmp_path / "state")
    with caplog.at_level(logging.ERROR):
        outbox = Outbox(state / "client" / "outbox")
        outbox.put("t", b"{}")
    assert outbox.directory is None
    assert "writable by group or others" in caplog.text


# --------------------------------------------------------------------------- replacer


def test_the_lock_file_is_never_opened_through_a_symlink(tmp_path, victim):
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    (locks / "c.lock").symlink_to(victim)
    with pytest.raises(ReplaceFailed) as caught:
        ReplaceLock(locks / "c.lock").acquire(1)
    assert caught.value.code == ResultCode.REPLACE_PATH_NOT_FOUND
    assert untouched(victim)


@needs_root
def test_a_lock_file_owned_by_another_user_is_not_stamped(tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    planted = locks / "c.lock"
    planted.write_text("theirs")
    os.chown(planted, nobody(), -1)
    with pytest.raises(ReplaceFailed, match="not by root or us"):
        ReplaceLock(planted).acquire(1)
    assert planted.read_text() == "theirs"


def test_a_lock_in_a_world_writable_directory_is_refused(tmp_path):
    locks = shared_dir(tmp_path / "locks")
    with pytest.raises(ReplaceFailed, match="writable by group or others"):
        ReplaceLock(locks / "c.lock").acquire(1)
    assert not (locks / "c.lock").exists()


def test_the_helper_log_is_never_appended_through_a_symlink(tmp_path, victim):
    report = tmp_path / "run" / "report.json"
    report.parent.mkdir()
    paths = ReplacerPaths(
        config=tmp_path / "c.conf", binary="/bin/true", pid=tmp_path / "c.pid", report=report
    )
    paths.helper_log.symlink_to(victim)
    spec = HelperSpec(task_id=1, paths=paths, loads_remote=False, local_report=report)
    with pytest.raises(OSError):
        spawn(spec)
    assert untouched(victim)
