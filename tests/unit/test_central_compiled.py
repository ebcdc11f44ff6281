"""Central rules compiled to collectd's threshold plugin: which compile, the block, and
the engine acting on the threshold plugin's notifications for the notification's host."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from collectd_monitor.cli import main
from collectd_monitor.codes import ResultCode
from collectd_monitor.fleetrules.engine import CentralEngine, Repair
from collectd_monitor.fleetrules.notes import Note
from collectd_monitor.fleetrules.settings import CentralSettings
from collectd_monitor.rules.declarative import parse_rules
from collectd_monitor.rules.model import Metric, Notice, Severity
from collectd_monitor.rules.threshold import Plan, compile_rules

NAN = math.nan
TYPES = {"gauge": (("value", "gauge", NAN, NAN),)}
ACTION = {"Service": "svc", "Command": "fix"}


def central_plan(*rules: dict[str, Any]) -> Plan:
    values = [{"Name": f"r{i}", "Action": ACTION, **rule} for i, rule in enumerate(rules)]
    parsed = parse_rules({"Values": values}, None)  # central: actions name the hosts' commands
    assert not parsed.errors, parsed.errors
    return compile_rules(parsed.values, TYPES.get, central=True)


def test_which_central_rules_compile() -> None:
    plan = central_plan(
        {"Host": "web1", "Plugin": "app", "Type": "gauge", "Above": 5},  # exact host
        {"Plugin": "db", "Type": "gauge", "Below": 1},  # any host
        {"Host": "web*", "Plugin": "cache", "Type": "gauge", "Above": 5},  # a host glob
        {"Host": "web[12]", "Plugin": "queue", "Type": "gauge", "Above": 5},
        {"Plugin": "disk", "Type": "gauge", "Above": 5, "Missing": 3},  # silent hosts
    )
    assert [c.rule.name for c in plan.compiled] == ["r0", "r1"]
    kept = {k.rule.name: k.reason for k in plan.kept}
    assert list(kept) == ["r2", "r3", "r4"]
    assert "Host 'web*' is a wildcard" in kept["r2"]
    assert "Host 'web[12]' is a wildcard" in kept["r3"]
    assert kept["r4"].startswith("Missing")
    block = plan.block
    assert "collectd-conf --central" in block and "collectd_monitor.central" in block
    web1 = block[block.index("# rule r0") : block.index("# rule r1")]
    assert '<Host "web1">' in web1 and '<Plugin "app">' in web1 and "FailureMax 5.0" in web1
    anyhost = block[block.index("# rule r1") :]
    assert "<Host" not in anyhost and "FailureMin 1.0" in anyhost


def test_an_exact_host_rule_and_an_any_host_rule_of_one_series_stay_in_python() -> None:
    plan = central_plan(
        {"Host": "web1", "Plugin": "app", "Type": "gauge", "Above": 5},
        {"Plugin": "app", "Type": "gauge", "Above": 9},
    )
    assert plan.compiled == ()
    assert all("most specific" in k.reason for k in plan.kept)


def test_the_local_block_is_unchanged_by_the_central_option() -> None:
    rule = {"Plugin": "app", "Type": "gauge", "Above": 5}
    parsed = parse_rules({"Values": [{"Name": "r", "Action": ACTION, **rule}]}, None)
    local = compile_rules(parsed.values, TYPES.get)
    assert "collectd-conf --local" in local.block
    assert local.digest != central_plan(rule).digest


class Fleet:
    def __init__(self, *rules: dict[str, Any]) -> None:
        values = [
            {"Name": f"r{i}", "Action": ACTION, "Cooldown": 30, **rule}
            for i, rule in enumerate(rules)
        ]
        parsed = parse_rules({"Values": values}, None)
        self.plan = compile_rules(parsed.values, TYPES.get, central=True)
        self.now = [100.0]
        self.sent: list[Repair] = []
        self.notes: list[Note] = []
        ids = iter(range(1, 1000))
        self.engine = CentralEngine(
            parsed,
            CentralSettings(),
            send=self.sent.append,
            emit=self.notes.append,
            clock=lambda: self.now[0],
            wall=lambda: self.now[0],
            new_task_id=lambda: next(ids),
            plan=self.plan,
        )

    def threshold(self, host: str, severity: Severity, value: float) -> None:
        notice = Notice(host, "app", "", "gauge", "", self.now[0], int(severity), "threshold")
        self.engine.on_notification(notice, "value", value)


def test_a_compiled_rule_repairs_the_host_the_threshold_notification_names() -> None:
    fleet = Fleet({"Plugin": "app", "Type": "gauge", "Above": 5})
    assert len(fleet.plan.compiled) == 1
    assert not fleet.engine.wants_values and fleet.engine.wants_notifications
    fleet.threshold("web2", Severity.FAILURE, 9)
    assert [(r.host, r.action.label) for r in fleet.sent] == [("web2", "svc/fix")]
    assert "web2/app/gauge value=9" in fleet.sent[0].reason
    assert [json.loads(n.message)["code"] for n in fleet.notes] == [ResultCode.CENTRAL_SENT]
    fleet.engine.on_result("web2", fleet.sent[0].task_id, 0, "fixed")
    # the fault lasts: after the cooldown the periodic check repairs web2 again
    fleet.now[0] += 31
    fleet.engine.tick()
    assert [r.host for r in fleet.sent] == ["web2", "web2"]
    fleet.engine.on_result("web2", fleet.sent[1].task_id, 0, "fixed")
    fleet.threshold("web2", Severity.OKAY, 1)  # the threshold plugin says it is over
    fleet.now[0] += 31
    fleet.engine.tick()
    assert len(fleet.sent) == 2


def test_a_threshold_notification_of_another_data_source_or_rule_is_not_a_verdict() -> None:
    fleet = Fleet({"Host": "web1", "Plugin": "app", "Type": "gauge", "Above": 5})
    fleet.threshold("web2", Severity.FAILURE, 9)  # web2: no compiled rule covers it
    notice = Notice("web1", "app", "", "gauge", "", 1.0, int(Severity.FAILURE), "x")
    fleet.engine.on_notification(notice, "other", 9.0)
    assert fleet.sent == []
    fleet.threshold("web1", Severity.FAILURE, 9)
    assert [r.host for r in fleet.sent] == ["web1"]


def test_values_of_compiled_rules_are_not_judged_in_python() -> None:
    fleet = Fleet(
        {"Host": "web1", "Plugin": "app", "Type": "gauge", "Above": 5},
        {"Host": "web*", "Plugin": "other", "Type": "gauge", "Above": 5},
    )
    assert fleet.engine.wants_values and fleet.engine.index.plugins == frozenset({"other"})
    metric = Metric("web1", "app", "", "gauge", "", 1.0, 10.0, (9.0,), ("value",), ("gauge",))
    fleet.engine.on_metric(metric)
    assert fleet.sent == []


def test_collectd_conf_central_prints_the_block_and_its_digest(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "central.json"
    rules = [
        {"Name": "app", "Host": "web1", "Plugin": "app", "Type": "gauge", "Above": 5,
         "Action": ACTION},
        {"Name": "tier", "Host": "web*", "Plugin": "app", "Type": "gauge", "Above": 5,
         "Action": ACTION},
    ]  # fmt: skip
    config.write_text(json.dumps({"Host": "127.0.0.1", "Rules": {"Values": rules}}))
    types_db = tmp_path / "types.db"
    types_db.write_text("gauge value:GAUGE:U:U\n")
    argv = ["collectd-conf", "--central", "--no-remote", "--central-config", str(config)]
    assert main([*argv, "--types-db", str(types_db)]) == 0
    out = capsys.readouterr().out
    assert '<Host "web1">' in out and "# rule tier stays in Python: Host 'web*'" in out
    parsed = parse_rules({"Values": rules}, None)
    digest = compile_rules(parsed.values, TYPES.get, central=True).digest
    assert f'ThresholdRules "{digest}"' in out
    assert 'Import "collectd_monitor.central"' in out and "collectd_monitor.remote" not in out


def test_the_first_okay_of_every_series_keeps_no_state_and_ticks_stay_cheap() -> None:
    # the threshold plugin reports OKAY for the first value of each series: on a
    # central with 1 000 hosts that must not make 1 000 (rule, host) states that
    # every tick then walks
    fleet = Fleet({"Plugin": "app", "Type": "gauge", "Above": 5})
    rule = fleet.plan.compiled[0].rule
    for i in range(1000):
        fleet.threshold(f"host{i:04d}", Severity.OKAY, 1)
    assert fleet.engine.host_state(rule, "host0000") is None
    assert fleet.engine.book.hosts == {}
    fleet.threshold("host0007", Severity.FAILURE, 9)
    fleet.engine.on_result("host0007", fleet.sent[0].task_id, 0, "fixed")
    assert fleet.engine.decider.faulty == {fleet.engine.name(rule): {"host0007": None}}
    fleet.threshold("host0007", Severity.OKAY, 1)
    fleet.now[0] += 1
    fleet.engine.tick()
    assert fleet.engine.decider.faulty == {fleet.engine.name(rule): {}}
    assert fleet.engine.host_state(rule, "host0007") is not None  # until forgotten
