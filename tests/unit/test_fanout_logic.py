"""Fan-out scheduling, host selection and progress text, on a fake clock."""

from __future__ import annotations

import io

import pytest

from collectd_monitor.cli.fanout import summary, wants_fanout
from collectd_monitor.cli.progress import Display, bar, line
from collectd_monitor.fleet.fanout import (
    FAILED,
    OK,
    TIMED_OUT,
    Known,
    Limits,
    Scheduler,
    read_hosts_file,
    select_hosts,
)
from collectd_monitor.fleet.topics import host_in

HOSTS = [f"h{n}" for n in range(10)]


def test_parallel_bounds_what_is_in_flight():
    s = Scheduler(HOSTS, Limits(parallel=3), now=0.0)
    assert s.due(0.0) == ["h0", "h1", "h2"]
    assert s.due(0.1) == []
    assert s.answered("h1", 0, 0.2) is not None
    assert s.due(0.2) == ["h3"]
    assert s.in_flight == ["h0", "h2", "h3"]


def test_rate_spaces_the_requests():
    s = Scheduler(HOSTS, Limits(parallel=100, rate=2.0), now=0.0)
    assert s.due(0.0) == ["h0"]
    assert s.due(0.4) == []
    assert s.wake_in(0.4) == pytest.approx(0.1)
    assert s.due(0.5) == ["h1"]
    assert s.due(1.0) == ["h2"]
    # a late wake-up catches up by one request at most, never a burst
    assert s.due(5.0) == ["h3", "h4"]


def test_abort_after_stops_new_requests_but_waits_for_those_in_flight():
    s = Scheduler(HOSTS, Limits(parallel=2, abort_after=2), now=0.0)
    assert s.due(0.0) == ["h0", "h1"]
    out = s.answered("h0", 3, 1.0)
    assert out is not None and out.status == FAILED and out.code == 3 and out.duration == 1.0
    assert s.due(1.0) == ["h2"]
    assert s.answered("h1", 0x1003, 1.5) is not None
    assert s.aborted and s.due(2.0) == [] and not s.done
    assert s.answered("h2", 0, 2.0) is not None
    assert s.done and s.unsent == HOSTS[3:]
    p = s.progress(2.0)
    assert (p.ok, p.failed, p.timed_out, p.unsent, p.aborted) == (1, 2, 0, 7, True)


def test_timeouts_count_as_failures_and_late_answers_are_ignored():
    s = Scheduler(HOSTS[:3], Limits(parallel=1, abort_after=1, timeout=5.0), now=0.0)
    assert s.due(0.0) == ["h0"]
    assert s.wake_in(1.0) == pytest.approx(4.0)
    assert s.expire(4.9) == []
    (out,) = s.expire(5.0)
    assert (out.host, out.status, out.code) == ("h0", TIMED_OUT, None)
    assert s.answered("h0", 0, 6.0) is None  # too late, and never twice
    assert s.aborted and s.done and s.unsent == ["h1", "h2"]


def test_a_clean_run_and_its_progress():
    s = Scheduler(HOSTS[:4], Limits(parallel=2), now=0.0)
    t = 0.0
    while not s.done:
        s.due(t)
        for host in s.in_flight:
            out = s.answered(host, 0, t + 1.0)
            assert out is not None and out.status == OK
        t += 1.0
    p = s.progress(t)
    assert (p.total, p.ok, p.finished, p.in_flight, p.unsent) == (4, 4, 4, 0, 0)
    assert p.rate == pytest.approx(4 / t)


def test_eta_from_the_rate_so_far():
    s = Scheduler(HOSTS, Limits(parallel=10), now=0.0)
    s.due(0.0)
    for host in HOSTS[:5]:
        s.answered(host, 0, 1.0)
    p = s.progress(1.0)
    assert p.rate == 5.0 and p.eta == pytest.approx(1.0)
    assert "5/10 done: 5 ok, 0 failed, 0 timed out, 5 remaining" in line(p)
    assert bar(p, width=10).startswith("[#####-----] ")


@pytest.mark.parametrize(
    "limits",
    [{"parallel": 0}, {"rate": 0.0}, {"abort_after": 0}, {"timeout": 0.0}],
)
def test_limits_refuse_nonsense(limits):
    with pytest.raises(ValueError, match="--"):
        Limits(**limits)


FLEET = [Known("web-1", True), Known("web-2", True), Known("Web-3", False), Known("db-1", True)]


def test_globs_match_online_hosts_case_insensitively():
    chosen = select_hosts(["web-*"], FLEET)
    assert chosen.hosts == ["web-1", "web-2"] and chosen.unmatched == []
    assert chosen.offline == ["Web-3"]
    chosen = select_hosts(["WEB-*", "db-1"], FLEET, include_offline=True)
    assert chosen.hosts == ["Web-3", "web-1", "web-2", "db-1"] and chosen.offline == []


def test_patterns_that_match_nothing_are_reported():
    chosen = select_hosts(["web-3", "mail*", "db-?"], FLEET)
    assert chosen.unmatched == ["web-3", "mail*"] and chosen.hosts == ["db-1"]


def test_hosts_file_entries_are_taken_as_they_are_once():
    chosen = select_hosts(["db-*"], FLEET, listed=["db-1", "legacy-7"])
    assert chosen.hosts == ["db-1", "legacy-7"]


def test_hosts_file_syntax():
    text = "# the canaries\nweb-1\n\n  web-2   # second\n#web-3\n"
    assert read_hosts_file(text) == ["web-1", "web-2"]
    with pytest.raises(ValueError, match="not a host name"):
        read_hosts_file("web-1 web-2\n")
    with pytest.raises(ValueError, match="not a host name"):
        read_hosts_file("a/b\n")


class _Args:
    def __init__(self, to: list[str] | None = None, hosts_file: str | None = None) -> None:
        self.to, self.hosts_file = to, hosts_file


def test_only_one_plain_host_keeps_the_single_host_path():
    assert not wants_fanout(_Args())
    assert not wants_fanout(_Args(["web-1"]))
    assert wants_fanout(_Args(["web-*"]))
    assert wants_fanout(_Args(["web-1", "web-2"]))
    assert wants_fanout(_Args(None, "hosts.txt"))


def test_summary_names_the_failed_and_timed_out_hosts():
    s = Scheduler(HOSTS[:4], Limits(parallel=3, abort_after=2, timeout=1.0), now=0.0)
    s.due(0.0)
    s.answered("h0", 0, 0.5)
    s.answered("h1", 0x1003, 0.5)
    s.expire(1.0)
    text = summary(s.progress(1.0), [("h1", 0x1003)], ["h2"])
    assert text.startswith("4 host(s): 1 ok; 1 failed: h1 (0x1003 ")
    assert "1 timed out: h2" in text and "1 not sent (aborted after 2 failure(s))" in text


def test_progress_lines_off_a_terminal_come_every_few_seconds():
    now = [0.0]
    out = io.StringIO()
    display = Display(out, tty=False, every=5.0, clock=lambda: now[0])
    s = Scheduler(HOSTS, Limits(), now=0.0)
    display.show(s.progress(0.0))
    now[0] = 5.0
    display.show(s.progress(5.0))
    display.show(s.progress(5.0))
    assert out.getvalue().count("\n") == 1 and "0/10 done" in out.getvalue()
    tty = io.StringIO()
    Display(tty, tty=True).show(s.progress(1.0))
    assert tty.getvalue().startswith("\r\x1b[K[") and "\n" not in tty.getvalue()


def test_recorders_sharing_a_subscription_still_find_the_host():
    shared = "$share/recorders/collectd-monitor/+/result"
    assert host_in(shared, "collectd-monitor/web-1/result") == "web-1"
    assert host_in(shared, "collectd-monitor/web-1/status") is None
    assert host_in("$share/g/a/#", "a/b/c") == "b"
