"""Real collectd (as root) with a StateDir another user could change.

Planted symlinks (``seen-tasks.jsonl -> victim``, ``outbox -> elsewhere``) in
a world-writable state directory: the plugin keeps answering commands, says at
ERROR that it keeps its state in memory, and never writes through the links.
"""

from __future__ import annotations

import uuid

import pytest

from collectd_monitor.testing.sandbox import wait_for

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
    assert "unsafe state directory" in log and "replay protection is memory-only" in log
    assert "unsafe outbox directory" in log and "kept in memory only" in log
    assert "Traceback" not in log


RULE_FILE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
metric_handlers = {{}}
"""


@pytest.mark.parametrize("strict", [False, True])
def test_a_world_writable_rule_directory_warns_or_with_strict_permissions_refuses(
    monitor, tmp_path, strict
):
    rules = tmp_path / "rules"
    rules.mkdir()
    rules.chmod(0o777)  # anyone could drop code here that collectd imports as root
    marker = tmp_path / "imported"
    (rules / "planted.py").write_text(RULE_FILE.format(marker=str(marker)))
    m = monitor(
        {"LocalMonitorConfigDir": str(rules), "Security": {"StrictPermissions": strict}},
        plugins=("collectd_monitor.local",),
        wait_connected=False,
    )
    if strict:
        line = m.collectd.wait_log(r"SECURITY: .*refusing to start").group(0)
        assert not marker.exists()
    else:
        line = m.collectd.wait_log(r"SECURITY WARNING: .*").group(0)
        wait_for(marker.exists, 15, what="the rule file to be imported")
    assert str(rules) in line and "writable by group or others" in line
    assert f"chmod go-w {rules}" in line
    assert m.collectd.pid() is not None
    assert "Traceback" not in m.log()
