"""The central engine's rule state stays bounded: silent hosts are forgotten, MaxHosts caps.

Pure logic with a fake clock (no collectd, no broker).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.fleetrules.engine import CentralEngine, Repair
from collectd_monitor.fleetrules.memory import MAX_SERIES
from collectd_monitor.fleetrules.notes import Note
from collectd_monitor.fleetrules.settings import CentralSettings, load_central_config
from collectd_monitor.rules.declarative import parse_rules
from collectd_monitor.rules.model import Metric, Notice, Severity

ACTION = {"Service": "worker", "Command": "restart"}


class Fleet:
    def __init__(self, *rules: dict[str, Any], **settings: Any) -> None:
        self.rules = parse_rules({"Values": list(rules)}, None)
        assert self.rules.errors == ()
        self.now = 1000.0
        self.sent: list[Repair] = []
        self.notes: list[Note] = []
        ids = iter(range(1, 1_000_000))
        self.engine = CentralEngine(
            self.rules,
            replace(CentralSettings(), **settings),
            send=self.sent.append,
            emit=self.notes.append,
            clock=lambda: self.now,
            wall=lambda: self.now,
            new_task_id=lambda: next(ids),
        )

    def value(self, host: str, value: float = 1.0, instance: str = "") -> None:
        metric = Metric(
            host, "load", "", "load", instance, self.now, 10.0, (value,), ("value",), ("gauge",)
        )
        self.engine.on_metric(metric)

    def later(self, seconds: float) -> None:
        """Advance the clock in steps, ticking as the plugin does."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(self.now + 5, end)
            self.engine.tick()

    def kept(self) -> list[str]:
        rule = self.rules.values[0]
        return sorted(h for h in self.engine.book.hosts if self.engine.host_state(rule, h))


def load_rule(**fields: Any) -> dict[str, Any]:
    return {"Name": "load", "Plugin": "load", "Above": 5, "Action": ACTION, **fields}


def test_ten_thousand_hosts_seen_once_are_forgotten_and_the_state_shrinks_back() -> None:
    fleet = Fleet(load_rule(), max_hosts=20_000, forget_after=600)
    hosts = [f"host{i:05d}" for i in range(10_000)]
    for host in hosts:
        fleet.value(host)
    rule = fleet.rules.values[0]
    assert fleet.engine.host_state(rule, hosts[-1]) is not None
    assert len(fleet.engine.watches) == 10_000
    fleet.later(300)
    fleet.value("still-here")
    assert fleet.engine.host_state(rule, hosts[0]) is not None  # not silent for long enough
    fleet.later(400)
    fleet.value("still-here")
    assert all(fleet.engine.host_state(rule, h) is None for h in hosts)
    assert fleet.kept() == ["still-here"]
    assert list(fleet.engine.watches) == [("still-here", "load", "", "load", "")]


def test_a_forgotten_host_that_comes_back_is_judged_afresh() -> None:
    fleet = Fleet(load_rule(Hits=2), forget_after=600)
    fleet.value("web1", 9)  # one hit of two
    fleet.later(700)
    assert fleet.kept() == []
    fleet.value("web1", 9)  # one hit again: the old hit was forgotten with the host
    assert fleet.sent == []
    fleet.value("web1", 9)
    assert [r.host for r in fleet.sent] == ["web1"]


def test_max_hosts_caps_the_state_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    fleet = Fleet(load_rule(), max_hosts=100, forget_after=600)
    with caplog.at_level(logging.ERROR, "collectd_monitor.central"):
        for i in range(150):
            fleet.value(f"host{i:03d}", 9)
    assert len(fleet.engine.book.hosts) == 100
    assert fleet.kept() == [f"host{i:03d}" for i in range(100)]
    assert {r.host for r in fleet.sent} <= {f"host{i:03d}" for i in range(100)}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "MaxHosts 100 reached" in errors[0]
    assert "host100" in errors[0]


def test_hosts_turned_away_by_max_hosts_are_judged_once_there_is_room() -> None:
    fleet = Fleet(load_rule(), max_hosts=2, forget_after=600)
    fleet.value("web1")
    fleet.value("web2")
    fleet.value("web3", 9)
    assert fleet.sent == [] and fleet.kept() == ["web1", "web2"]
    fleet.later(700)  # web1 and web2 are forgotten
    fleet.value("web3", 9)
    assert fleet.kept() == ["web3"]
    assert [r.host for r in fleet.sent] == ["web3"]


def test_a_silent_host_is_reported_before_it_is_forgotten() -> None:
    fleet = Fleet(load_rule(Missing=3, Above=None, Cooldown=0), forget_after=60)
    fleet.value("web1")
    fleet.later(35)  # 3 intervals of 10 s: silent
    codes = [json.loads(n.message)["code"] for n in fleet.notes]
    assert ResultCode.CENTRAL_HOST_SILENT in codes
    assert [r.host for r in fleet.sent] == ["web1"]
    fleet.later(60)  # ForgetAfter is 60, but 3 missing-data timeouts (90 s) have not passed
    assert fleet.kept() == ["web1"]
    fleet.later(70)  # and the repair in flight has ended (no result within 60 s)
    assert fleet.kept() == []


def test_a_notification_rule_forgets_a_host_once_its_fault_is_over() -> None:
    rules = parse_rules(
        {
            "Notifications": [
                {
                    "Name": "disk",
                    "Plugin": "disk",
                    "Severity": "FAILURE",
                    "Recover": True,
                    "Action": ACTION,
                    "Cooldown": 0,
                }
            ]
        },
        None,
    )
    now = [1000.0]
    engine = CentralEngine(
        rules,
        replace(CentralSettings(), forget_after=600),
        send=lambda r: None,
        emit=lambda n: None,
        clock=lambda: now[0],
    )
    rule = rules.notifications[0]

    def notice(severity: Severity) -> Notice:
        return Notice("web1", "disk", "", "disk_io", "", now[0], int(severity), "x")

    def later(seconds: float) -> None:
        for _ in range(int(seconds // 30)):
            now[0] += 30
            engine.tick()

    engine.on_notification(notice(Severity.FAILURE))
    later(900)
    assert engine.host_state(rule, "web1") is not None  # an open fault is never forgotten
    engine.on_notification(notice(Severity.OKAY))
    later(300)
    assert engine.host_state(rule, "web1") is not None
    later(400)
    assert engine.host_state(rule, "web1") is None
    assert engine.book.hosts == {}


def test_one_host_keeps_at_most_max_series_per_rule(caplog: pytest.LogCaptureFixture) -> None:
    fleet = Fleet(load_rule())
    with caplog.at_level(logging.ERROR, "collectd_monitor.central"):
        for i in range(MAX_SERIES + 10):
            fleet.value("web1", instance=f"i{i}")
    state = fleet.engine.host_state(fleet.rules.values[0], "web1")
    assert state is not None and len(state.series) == MAX_SERIES  # type: ignore[attr-defined]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and f"{MAX_SERIES} series" in errors[0]


def test_max_hosts_and_forget_after_are_read_from_the_config(tmp_path: Any) -> None:
    path = tmp_path / "central.json"
    path.write_text(json.dumps({"MaxHosts": 5000, "ForgetAfter": 7200}))
    path.chmod(0o600)
    config = load_central_config(path=str(path), hostname="central")
    assert config.central.max_hosts == 5000
    assert config.central.forget_after == 7200
    path.write_text(json.dumps({"MaxHosts": 0}))
    with pytest.raises(Exception, match="MaxHosts"):
        load_central_config(path=str(path), hostname="central")


def test_max_hosts_caps_the_presence_kept(caplog: pytest.LogCaptureFixture) -> None:
    fleet = Fleet(load_rule(), max_hosts=2)
    with caplog.at_level(logging.ERROR, "collectd_monitor.central"):
        for host in ("web1", "web2", "web3"):
            fleet.engine.on_status(host, False, None, "gone")
    assert sorted(fleet.engine.decider.presence) == ["web1", "web2"]
    assert "status of web3 is not kept" in caplog.text
