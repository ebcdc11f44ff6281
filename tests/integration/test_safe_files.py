"""Real collectd (as root) with a StateDir another user could change.

Planted symlinks (``seen-tasks.jsonl -> victim``, ``outbox -> elsewhere``) in
a world-writable state directory: the plugin keeps answering commands, says at
ERROR that it keeps its state in memory, and never writes through the links.
"""

from __future__ import annotations

import uuid

import pytest

from ..conftest import command_message

pytestmark = pytest.mark.integration

VICTIM_TEXT = "root:secret:do not touch\n"


def test_planted_symlinks_in_a_shared_state_dir_are_never_followed(monitor, peer, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text(VICTIM_TEXT)
    victim.chmod(0o640)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    client_id = f"cm-test-{uuid.uuid4().hex[:10]}"
    state = tmp_path / "shared-state"
    own = state / client_id
    own.mkdir(parents=True)
    for directory in (state, own):
        directory.chmod(0o777)  # as if another user could plant links here
    (own / "seen-tasks.jsonl").symlink_to(victim)
    (own / "outbox").symlink_to(elsewhere)

    m = monitor({"StateDir": str(state), "ClientId": client_id})
    p = peer(m)
    message = command_message("hello", "exec")
    p.send(m.command_topic, message)
    assert p.result_for(m.result_topic, message["task_id"])["code"] == 0

    assert victim.read_text() == VICTIM_TEXT
    assert victim.stat().st_mode & 0o7777 == 0o640
    assert list(elsewhere.iterdir()) == []
    log = m.log()
    assert "unsafe state directory" in log and "replay protection does not survive" in log
    assert "unsafe outbox directory" in log and "kept in memory only" in log
    assert "Traceback" not in log
