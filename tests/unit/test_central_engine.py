"""The central engine's decisions, driven with a fake clock (no collectd, no broker)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.errors import ConfigError
from collectd_monitor.fleet.history import RequestRecord, ResultRecord
from collectd_monitor.fleetrules.engine import CentralEngine, Repair
from collectd_monitor.fleetrules.notes import Note
from collectd_monitor.fleetrules.settings import (
    CentralSettings,
    FleetSettings,
    TopicTemplate,
    load_central_config,
)
from collectd_monitor.rules.declarative import parse_rules
from collectd_monitor.rules.model import Metric, Notice, Severity

NAME = "config.json::metric::load-high"


def rule(**fields: Any) -> dict[str, Any]:
    body = {
        "Name": "load-high",
        "Plugin": "load",
        "DataSource": "shortterm",
        "Above": 5,
        "Action": {"Service": "worker", "Command": "restart"},
        "Cooldown": 0,
        "MaxRuns": 100,
    }
    body.update(fields)
    return body


@dataclass
class Harness:
    engine: CentralEngine
    now: list[float]
    sent: list[Repair] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    records: list[RequestRecord | ResultRecord] = field(default_factory=list)

    def value(self, host: str, load: float, plugin: str = "load") -> None:
        self.now[0] += 10
        metric = Metric(
            host, plugin, "", "load", "", self.now[0], 10.0, (load, 0.0, 0.0),
            ("shortterm", "midterm", "longterm"), ("gauge", "gauge", "gauge"),
        )  # fmt: skip
        self.engine.on_metric(metric)

    def answer(self, repair: Repair, code: int = 0) -> None:
        self.engine.on_result(repair.host, repair.task_id, code, "done")

    def codes(self, host: str | None = None) -> list[int]:
        return [json.loads(n.message)["code"] for n in self.notes if host in (None, n.host)]


def harness(*rules: dict[str, Any], fleet: FleetSettings | None = None, **settings: Any) -> Harness:
    parsed = parse_rules({"Values": list(rules)}, None)
    assert parsed.errors == ()
    central = replace(CentralSettings(), fleet=fleet or FleetSettings(), **settings)
    now = [1000.0]
    ids = iter(range(1, 10_000))
    h: Harness
    engine = CentralEngine(
        parsed,
        central,
        send=lambda r: h.sent.append(r),
        emit=lambda n: h.notes.append(n),
        record=lambda r: h.records.append(r),
        clock=lambda: now[0],
        wall=lambda: now[0],
        new_task_id=lambda: next(ids),
    )
    h = Harness(engine, now)
    return h


def test_a_fault_sends_the_action_to_the_host_it_came_from_only() -> None:
    h = harness(rule())
    h.value("web1", 1)
    h.value("web2", 9)
    assert [(r.host, r.action.label) for r in h.sent] == [("web2", "worker/restart")]
    assert [n.host for n in h.notes] == ["web2"]
    assert h.notes[0].type_instance == NAME and h.notes[0].severity == Severity.WARNING
    assert h.codes() == [ResultCode.CENTRAL_SENT]
    h.answer(h.sent[0], 0)
    assert h.notes[-1].severity == Severity.OKAY and h.codes()[-1] == 0
    assert [type(r).__name__ for r in h.records] == ["RequestRecord", "ResultRecord"]
    assert h.records[0].host == "web2" and h.records[1].code == 0


def test_hits_are_counted_per_host() -> None:
    h = harness(rule(Hits=2))
    h.value("web1", 9)
    h.value("web2", 9)
    assert h.sent == []  # one hit each: not two hits for the rule
    h.value("web1", 9)
    assert [r.host for r in h.sent] == ["web1"]


def test_cooldown_is_per_host() -> None:
    h = harness(rule(Cooldown=300))
    h.value("web1", 9)
    h.answer(h.sent[0])
    h.value("web1", 9)  # web1 cools down
    h.value("web2", 9)  # web2 does not
    assert [r.host for r in h.sent] == ["web1", "web2"]
    h.now[0] += 300
    h.value("web1", 9)
    assert [r.host for r in h.sent] == ["web1", "web2", "web1"]


def test_a_result_from_another_host_or_task_is_ignored() -> None:
    h = harness(rule())
    h.value("web1", 9)
    repair = h.sent[0]
    h.engine.on_result("web2", repair.task_id, 0, "not mine")
    h.engine.on_result("web1", repair.task_id + 1, 0, "not mine either")
    assert h.engine.in_flight == 1
    h.answer(repair)
    assert h.engine.in_flight == 0


def test_an_offline_host_gets_no_command_and_a_notification_says_so_once() -> None:
    h = harness(rule())
    h.engine.on_status("web1", False, None, "connection lost")
    assert h.codes("web1") == [ResultCode.CENTRAL_HOST_OFFLINE]  # presence note
    h.value("web1", 9)
    h.value("web1", 9)
    assert h.sent == []
    assert h.codes("web1") == [ResultCode.CENTRAL_HOST_OFFLINE] * 2
    assert "offline" in json.loads(h.notes[-1].message)["message"]
    h.engine.on_status("web1", True, {"worker": ["restart"]})
    assert h.notes[-1].severity == Severity.OKAY
    h.value("web1", 9)
    assert [r.host for r in h.sent] == ["web1"]


def test_a_command_the_host_does_not_offer_is_not_sent() -> None:
    h = harness(rule())
    h.engine.on_status("web1", True, {"nginx": ["reload"]})
    h.value("web1", 9)
    assert h.sent == [] and h.codes() == [ResultCode.CENTRAL_NOT_OFFERED]


def test_max_hosts_per_window_holds_the_rest_of_the_fleet() -> None:
    h = harness(rule(), fleet=FleetSettings(max_hosts_per_window=2, window=600))
    for host in ("a", "b", "c", "d"):
        h.value(host, 9)
    assert [r.host for r in h.sent] == ["a", "b"]
    assert h.codes("c") == h.codes("d") == [ResultCode.CENTRAL_HELD]
    for repair in h.sent:
        h.answer(repair)
    h.value("a", 9)  # a host already repaired in the window does not count again
    assert [r.host for r in h.sent] == ["a", "b", "a"]
    h.now[0] += 600
    h.value("c", 9)
    assert h.sent[-1].host == "c"


def test_max_concurrent_hosts_counts_repairs_in_flight() -> None:
    h = harness(rule(), fleet=FleetSettings(max_concurrent_hosts=1))
    h.value("a", 9)
    h.value("b", 9)
    assert [r.host for r in h.sent] == ["a"]
    h.answer(h.sent[0])
    h.value("b", 9)
    assert [r.host for r in h.sent] == ["a", "b"]


def test_the_abort_threshold_stops_a_rule_and_it_resumes_later() -> None:
    fleet = FleetSettings(abort_failure_ratio=0.5, abort_min_repairs=2, resume_after=100)
    h = harness(rule(), fleet=fleet)
    for host in ("a", "b", "c"):
        h.value(host, 9)
    assert len(h.sent) == 3
    h.answer(h.sent[0], 1)
    h.answer(h.sent[1], 1)  # 2 of 2 failed: abort
    aborted = [n for n in h.notes if json.loads(n.message)["code"] == ResultCode.CENTRAL_ABORTED]
    assert len(aborted) == 1 and aborted[0].severity == Severity.FAILURE
    h.value("d", 9)
    assert len(h.sent) == 3  # no new repair while aborted
    assert h.codes("d") == [ResultCode.CENTRAL_ABORTED]
    h.now[0] += 100
    h.engine.tick()
    assert h.notes[-1].severity == Severity.OKAY
    h.value("d", 9)
    assert h.sent[-1].host == "d"


def test_no_result_within_the_timeout_is_a_failure() -> None:
    h = harness(rule(), result_timeout=30)
    h.value("a", 9)
    h.now[0] += 30
    h.engine.tick()
    assert h.codes()[-1] == ResultCode.CENTRAL_NO_RESULT and h.engine.in_flight == 0
    assert isinstance(h.records[-1], ResultRecord) and h.records[-1].code is None


def test_a_silent_host_is_reported_once_and_repaired() -> None:
    h = harness(rule(Missing=3, Above=None))
    h.value("a", 1)
    for _ in range(3):
        h.value("b", 1)
        h.engine.tick()
    assert h.sent == []  # 30 s is not more than 3 intervals
    h.value("b", 1)
    h.engine.tick()
    h.engine.tick()
    assert h.codes("a") == [ResultCode.CENTRAL_HOST_SILENT, ResultCode.CENTRAL_SENT]
    assert "host silent" in json.loads(h.notes[0].message)["message"]
    assert [r.host for r in h.sent] == ["a"]


def test_notification_rules_judge_per_host() -> None:
    parsed = parse_rules(
        {
            "Notifications": [
                {"Name": "swap", "Plugin": "swap", "Action": {"Service": "w", "Command": "r"}}
            ]
        },
        None,
    )
    sent: list[Repair] = []
    engine = CentralEngine(
        parsed, CentralSettings(), send=sent.append, emit=lambda n: None, clock=lambda: 5.0
    )
    engine.on_notification(Notice("db1", "swap", "", "swap", "", 1.0, 1, "too much swap"))
    engine.on_notification(Notice("db2", "swap", "", "swap", "", 1.0, 4, "fine"))
    assert [r.host for r in sent] == ["db1"]


def test_topic_templates() -> None:
    template = TopicTemplate("fleet/{host}/result")
    assert template.subscription == "fleet/+/result"
    assert template.topic("web1") == "fleet/web1/result"
    assert template.host_in("fleet/web1/result") == "web1"
    assert template.host_in("fleet/web1/status") is None
    for bad in ("fleet/result", "fleet/x{host}/result", "fleet/{host}/{host}", "a/+/{host}"):
        with pytest.raises(ValueError):
            TopicTemplate(bad)


def test_config_takes_the_central_keys_apart(tmp_path: Any) -> None:
    key = tmp_path / "central.secret"
    key.write_text("a shared secret of enough bytes")
    path = tmp_path / "central.json"
    path.write_text(
        json.dumps(
            {
                "Host": "127.0.0.1:1884",
                "CommandTopicTemplate": "f/{host}/cmd",
                "Fleet": {"MaxHostsPerWindow": 3, "AbortFailureRatio": 0.25},
                "Security": {"SigningKey": {"File": "central.secret"}, "KeyId": "central"},
                "Rules": {"Values": [rule()]},
            }
        )
    )
    warnings: list[str] = []
    config = load_central_config(path=str(path), hostname="hq", warn=warnings.append)
    assert warnings == []
    assert config.monitor.broker.port == 1884
    assert config.monitor.broker.client_id == "collectd-monitor-central-hq"
    assert config.central.command_topic.topic("w") == "f/w/cmd"
    assert config.central.fleet.max_hosts_per_window == 3
    assert config.central.signer is not None and config.central.signer.key_id == "central"
    path.write_text(json.dumps({"Fleet": {"MaxHostPerWindow": 3}}))
    with pytest.raises(ConfigError, match=r"Fleet\.MaxHostPerWindow"):
        load_central_config(path=str(path))


def test_test_rules_central_shows_which_host_gets_what(tmp_path: Any, capsys: Any) -> None:
    from collectd_monitor.cli import main

    config = tmp_path / "central.json"
    config.write_text(
        json.dumps(
            {
                "Fleet": {"MaxHostsPerWindow": 2, "AbortMinRepairs": 2},
                "Rules": {"Values": [rule(Host="web*", Cooldown=60)]},
            }
        )
    )
    series = tmp_path / "series.txt"
    lines = [f"PUTVAL {h}/load/load interval=10 1700000000:9:1:1" for h in ("web1", "web2", "web3")]
    lines += ["PUTVAL db1/load/load interval=10 1700000000:9:1:1"]
    lines += [f"PUTVAL {h}/load/load interval=10 1700000100:9:1:1" for h in ("web1", "web2")]
    lines += ['{"time": 1700000200}']
    series.write_text("\n".join(lines) + "\n")
    code = main(
        ["test-rules", "--central", "--config", str(config), str(series), "--fail", "web[12]"]
    )
    out = capsys.readouterr().out
    assert code == 0
    events = [line.split()[1:3] for line in out.splitlines()[1:]]
    assert ["send", "web1"] in events and ["send", "web2"] in events
    assert ["held", "web3"] in events
    assert not any(host == "db1" for _, host in events)  # Host "web*"
    assert ["aborted", "*"] in events  # 2 of 2 failed
    assert events.count(["send", "web1"]) == 1  # aborted before its cooldown ended


def test_a_hosts_circuit_breaker_opens_and_closes_for_that_host_only() -> None:
    h = harness(rule(MaxRuns=1, Cooldown=0, ResumeAfter=100))
    h.value("web1", 9)
    h.answer(h.sent[0])
    h.value("web2", 1)
    h.value("web1", 9)  # a second run within the window: the breaker opens
    assert len(h.sent) == 1
    levels = [n.severity for n in h.notes if n.host == "web1"]
    assert levels[-1] == Severity.FAILURE
    h.engine.tick()
    before = len(h.notes)
    h.value("web1", 1)  # 10 s after the last fault
    h.now[0] += 85
    h.engine.tick()
    assert len(h.notes) == before  # not quiet for 100 s yet
    h.now[0] += 10
    h.engine.tick()
    assert [n.host for n in h.notes[before:]] == ["web1"]
    assert h.notes[-1].severity == Severity.OKAY
    assert "circuit breaker closed" in json.loads(h.notes[-1].message)["message"]
    h.value("web1", 9)
    assert [r.host for r in h.sent] == ["web1", "web1"]
