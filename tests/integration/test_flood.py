"""A bounded flood of mixed valid and malformed messages against a live plugin."""

from __future__ import annotations

import pytest

from collectd_monitor.testing.flood import rss_kib, run_flood

pytestmark = pytest.mark.integration


def test_flood_every_valid_command_answered_once_and_memory_flat(monitor):
    m = monitor(  # every refusal answered: this measures delivery, not the refusal rate limit
        {"MaxQueuedCommands": 1000, "QoS": 1, "MaxRefusalsPerSecond": 100_000},
        services={"svc": {"commands": {"true": ["/bin/true"]}}},
    )
    pid = m.collectd.pid()
    assert pid is not None
    run_flood(m.broker.port, m.command_topic, m.result_topic, total=300, seed=7)  # warm-up
    before = rss_kib(pid)
    report = run_flood(m.broker.port, m.command_topic, m.result_topic, total=3000, seed=8)
    after = rss_kib(pid)
    print(f"\nflood: {report}; collectd RSS {before} KiB -> {after} KiB")
    assert m.collectd.pid() == pid, "collectd must survive the flood"
    assert report.sent == 3000
    assert report.answered == report.valid == 1000
    assert report.rejected == report.invalid_with_id == 1000
    assert (report.lost, report.duplicated) == (0, 0)
    assert report.codes[0] == 1000
    assert after - before < 20 * 1024, f"RSS grew by {after - before} KiB"
