from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

from collectd_monitor.commands import journal as journal_module
from collectd_monitor.commands.outbox import QUARANTINE, Outbox, waiting
from collectd_monitor.commands.seen import SeenTasks


def test_seen_ids_survive_a_restart_within_the_window(tmp_path):
    path = tmp_path / "state" / "seen.jsonl"
    clock = [1000.0]
    first = SeenTasks(10, path=path, window=60, clock=lambda: clock[0])
    assert first.add(1) and first.add("abc")
    first.close()
    again = SeenTasks(10, path=path, window=60, clock=lambda: clock[0])
    assert not again.add(1) and not again.add("abc")
    again.close()
    clock[0] += 120  # past the window: forgotten (such messages are refused as expired anyway)
    later = SeenTasks(10, path=path, window=60, clock=lambda: clock[0])
    assert later.add(1)
    later.close()
    assert (path.stat().st_mode & 0o777) == 0o600


def test_seen_file_is_compacted_and_bounded(tmp_path):
    path = tmp_path / "seen.jsonl"
    seen = SeenTasks(5, path=path)
    for task_id in range(100):
        seen.add(task_id)
    seen.close()
    assert len(path.read_text().splitlines()) <= 11
    reloaded = SeenTasks(5, path=path)
    assert 99 in reloaded and 0 not in reloaded
    reloaded.close()


def test_torn_lines_are_skipped(tmp_path):
    path = tmp_path / "seen.jsonl"
    path.write_text("[1, 5.0]\n[2, 6.0]\n[3, 7")
    seen = SeenTasks(10, path=path)
    assert 1 in seen and 2 in seen and 3 not in seen
    seen.close()


def test_outbox_keeps_entries_until_removed(tmp_path):
    box = Outbox(tmp_path / "outbox")
    first = box.put("t/r", b'{"task_id": 1}')
    second = box.put("t/r", b'{"task_id": 2}')
    assert [payload for _, payload in waiting(tmp_path / "outbox")] == [
        b'{"task_id": 1}',
        b'{"task_id": 2}',
    ]
    assert list(Outbox(tmp_path / "outbox").pending()) == []  # its own run publishes them
    box.remove(first)
    assert [e.name for e in box.pending()] == [second.name]
    box.close()  # stops with one result waiting: the next run takes it over
    later = Outbox(tmp_path / "outbox")
    assert [e.name for e in later.pending()] == [second.name]
    assert ((tmp_path / "outbox" / second.name).stat().st_mode & 0o777) == 0o600
    (tmp_path / "outbox" / "00000000000000000001-1-000001.json").write_text("{broken")
    assert len(later) == 1


CRASHING_WRITER = """
import os, signal, sys
from pathlib import Path
from collectd_monitor.commands.outbox import Outbox
box = Outbox(Path(sys.argv[1]))
delivered = box.put("t/r", b"delivered")
box.put("t/r", b"waiting")
box.remove(delivered)
os.write(box._journal._fd, b'{"name": "00000000000000000009-9-000009.json", "topic": "t/r", "payl')
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_results_of_a_killed_run_are_taken_over_and_a_cut_line_quarantined(tmp_path):
    directory = tmp_path / "outbox"
    killed = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(directory)], check=False)
    assert killed.returncode == -signal.SIGKILL
    assert [payload for _, payload in waiting(directory)] == [b"waiting"]
    box = Outbox(directory)
    assert [e.payload for e in box.pending()] == [b"waiting"]
    (entry,) = box.pending()
    assert entry.writer == killed_pid(directory, entry.name)
    (cut,) = (directory / QUARANTINE).iterdir()
    assert '"payl' in cut.read_text()
    box.remove(entry)
    box.close()
    assert list(directory.glob("[0-9]*.json")) == []
    assert list(directory.glob("journal-*")) == []


def killed_pid(directory, name):
    """The pid in an entry's name: the run that wrote it, not this one."""
    pid = int(name.split("-")[1])
    assert pid != os.getpid()
    return pid


def test_outbox_in_memory_when_no_directory():
    box = Outbox(None)
    entry = box.put("t", b"x")
    assert list(box.pending()) == [entry]
    box.remove(entry)
    assert len(box) == 0


def test_corrupt_seen_lines_are_skipped_one_by_one_with_one_warning(tmp_path, caplog):
    path = tmp_path / "seen.jsonl"
    path.write_text(
        "\n".join(
            [
                "[[1,2],9e18]",
                '[{"a":1},1.0]',
                '[7, "soon"]',
                "[8, NaN]",
                "[true, 5.0]",
                '"just a string"',
                "[9, 2000.0]",
                '{"torn',
            ]
        )
        + "\n"
    )
    with caplog.at_level("WARNING", logger="collectd_monitor"):
        seen = SeenTasks(10, path=path, window=None, clock=lambda: 2000.0)
    assert 9 in seen and len(seen) == 1
    warnings = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and "7 unreadable" in warnings[0].getMessage()
    seen.close()


# --------------------------------------------------------------------------- duplicates by content


def test_a_reused_task_id_with_other_content_is_new_and_the_same_content_is_not(tmp_path):
    path = tmp_path / "seen.jsonl"
    seen = SeenTasks(10, path=path)
    assert seen.add(5, "digest-a")
    assert not seen.add(5, "digest-a")
    assert seen.add(5, "digest-b")
    seen.close()
    again = SeenTasks(10, path=path)
    assert not again.add(5, "digest-a") and not again.add(5, "digest-b")
    assert again.add(5, "digest-c")
    again.close()


def test_former_seen_lines_without_digest_still_load_and_refuse_their_task_id(tmp_path):
    path = tmp_path / "seen.jsonl"
    path.write_text("[41, 5.0]\n[42, 6.0]\n")
    seen = SeenTasks(10, path=path, window=None)
    assert not seen.add(41, "any-digest") and not seen.add(42)
    assert seen.add(43, "any-digest")
    seen.close()
    lines = path.read_text().splitlines()
    assert "[41, 5.0]" in lines and any(line.startswith("[43,") for line in lines)


def test_the_digest_ignores_the_signature_key_order_and_whitespace():
    import json

    from collectd_monitor.commands.seen import message_digest

    body = {"task_id": 1, "timestamp": "2024-01-01T00:00:00Z", "service": "s", "command": "c"}
    reordered = json.loads(json.dumps(dict(reversed(list(body.items()))), indent=2))
    signed = {**body, "signature": {"alg": "hmac-sha256", "key_id": "k", "value": "AAAA"}}
    assert message_digest(body) == message_digest(reordered) == message_digest(signed)
    assert message_digest(body) != message_digest({**body, "command": "other"})


def test_a_journal_of_mostly_acknowledged_lines_is_rewritten_with_the_waiting_ones(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(journal_module, "MAX_BYTES", 2000)
    box = Outbox(tmp_path / "outbox")
    kept = box.put("t/r", b"kept")  # stays unacknowledged throughout
    for n in range(100):
        box.remove(box.put("t/r", b"%03d" % n))
    (path,) = (tmp_path / "outbox").glob("journal-*.jsonl")
    assert path.stat().st_size <= 2000 + 200  # rewritten, not grown to ~10 KB
    assert [payload for _, payload in waiting(tmp_path / "outbox")] == [b"kept"]
    assert [e.name for e in box.pending()] == [kept.name]
    box.close()
    assert [e.payload for e in Outbox(tmp_path / "outbox").pending()] == [b"kept"]


def test_a_journal_of_waiting_results_is_not_rewritten_again_and_again(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "MAX_BYTES", 2000)
    box = Outbox(tmp_path / "outbox")
    names = {path.name for path in (tmp_path / "outbox").glob("journal-*.jsonl")}
    for n in range(100):  # the broker is away: everything waits, nothing to drop
        box.put("t/r", b"%03d" % n)
    assert {path.name for path in (tmp_path / "outbox").glob("journal-*.jsonl")} == names
    assert len(waiting(tmp_path / "outbox")) == 100
    box.close()


def test_without_a_journal_each_result_is_a_file_of_its_own(tmp_path, monkeypatch, caplog):
    def refuse(*_args):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(journal_module.fcntl, "flock", refuse)
    with caplog.at_level(logging.WARNING):
        box = Outbox(tmp_path / "outbox")
    assert "cannot keep an outbox journal" in caplog.text
    entry = box.put("t/r", b"one")
    assert (tmp_path / "outbox" / entry.name).exists()
    box.remove(entry)
    assert not (tmp_path / "outbox" / entry.name).exists()
    box.close()
