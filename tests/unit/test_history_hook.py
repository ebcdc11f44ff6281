"""send-command's history recording: the request is written while the request is under
way (on a thread of its own), the result once both are done."""

from __future__ import annotations

import argparse
import time

import pytest

from collectd_monitor.commands.protocol import Result
from collectd_monitor.commands.sender import ResultTimeout
from collectd_monitor.fleet.history import open_history
from collectd_monitor.fleet.hook import recorded

PAYLOAD = {"task_id": 42, "service": "nginx", "command": "restart"}


def entries(url: str) -> list:
    history = open_history(url)
    try:
        return history.entries()
    finally:
        history.close()


def wait_for_request(url: str) -> None:
    """Until the request is in the history (while the 'request' is still under way)."""
    deadline = time.monotonic() + 10
    while not entries(url):
        assert time.monotonic() < deadline, "the request was never recorded"
        time.sleep(0.01)


def test_request_and_result_are_both_recorded(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.sqlite3'}"
    args = argparse.Namespace(history=url, no_history=False, to=["web-1"])

    def request() -> Result:
        wait_for_request(url)  # written while we "wait for the host"
        [entry] = entries(url)
        assert entry.code is None  # no result yet
        return Result(42, 0, "restarted")

    assert recorded(args, PAYLOAD, "collectd-monitor/web-1/command", request).code == 0
    [entry] = entries(url)
    assert (entry.task_id, entry.host, entry.service, entry.command) == (
        42,
        "web-1",
        "nginx",
        "restart",
    )
    assert (entry.code, entry.message) == (0, "restarted")
    assert entry.sender and "@" in entry.sender


def test_a_timeout_is_recorded_and_raised(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.sqlite3'}"
    args = argparse.Namespace(history=url, no_history=False, to="web-1")

    def request() -> Result:
        raise ResultTimeout("no result within 1 s")

    with pytest.raises(ResultTimeout):
        recorded(args, PAYLOAD, "collectd-monitor/web-1/command", request)
    [entry] = entries(url)
    assert (entry.code, entry.message) == (None, "no result within 1 s")


def test_a_history_that_cannot_be_opened_costs_a_warning_only(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = argparse.Namespace(history=str(blocker / "h.sqlite3"), no_history=False, to="web-1")
    result = recorded(args, PAYLOAD, "t", lambda: Result(42, 1, "failed"))
    assert result.code == 1
    assert "warning: history not recorded" in capsys.readouterr().err
