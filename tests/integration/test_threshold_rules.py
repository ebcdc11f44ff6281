"""A value rule judged by collectd's threshold plugin and the same rule judged in Python,
each in a real collectd fed the same series: the command runs at the same value."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.config import build_config
from collectd_monitor.rules.declarative import parse_rules
from collectd_monitor.rules.threshold import compile_rules, read_types_db_ranges
from collectd_monitor.testing.sandbox import TYPES_DB, wait_for

from .test_local import SLOW, Local, LocalFactory

pytestmark = pytest.mark.integration

SERIES = [1.01, 9.02, 9.03, 2.04, 9.05, 9.06, 9.07, 9.08, 4.59, 3.1, 9.11]
"""Hits 3 fires at 9.07 (9.02, 9.03 are only two); 4.59 is inside the limit but not by
the hysteresis; 3.1 recovers."""
RULE = {
    "Name": "hot",
    "Plugin": "app",
    "Type": "gauge",
    "TypeInstance": "temp",
    "Above": 5,
    "Hits": 3,
    "Hysteresis": 1,
    "Cooldown": 300,
    "Action": {"Service": "mark", "Command": "touch"},
}
RUNNING = re.compile(r"config\.json::metric::hot: task \d+: running mark/touch \(.*=([0-9.]+)\)")


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalFactory]:
    factory = LocalFactory(tmp_path)
    yield factory
    factory.stop_all()


def _start(local: LocalFactory, marker: Path, compiled: bool) -> Local:
    services = {"mark": {"Commands": {"touch": ["/usr/bin/touch", str(marker)]}}}
    rules = {"Values": [RULE]}
    config = build_config({"Services": services}, source="config.json")
    parsed = parse_rules(rules, config.services)
    plan = compile_rules(parsed.values, read_types_db_ranges(TYPES_DB).get)
    assert [c.rule.name for c in plan.compiled] == ["hot"]
    extra: dict[str, Any] = {}
    if compiled:
        extra = {"extra_conf": plan.block, "module_options": {"ThresholdRules": plan.digest}}
    return local(rules=rules, services=services, **extra)


def _run_value(m: Local, marker: Path) -> str:
    for value in SERIES:
        m.putval("app/gauge-temp", value)
    wait_for(marker.exists, SLOW, what=f"{marker}")
    m.collectd.wait_log(r"metric::hot: recovered", SLOW)
    (found,) = RUNNING.findall(m.log())
    return found


def test_compiled_and_python_rules_run_the_command_at_the_same_value(local, tmp_path):
    python = _start(local, tmp_path / "python-marker", compiled=False)
    compiled = _start(local, tmp_path / "compiled-marker", compiled=True)
    assert "watching values: 1 rule(s)" in python.log()
    assert "value rule hot: judged by collectd's threshold plugin" in compiled.log()
    assert "no rule needs values: write callback not registered" in compiled.log()
    at_python = _run_value(python, tmp_path / "python-marker")
    at_compiled = _run_value(compiled, tmp_path / "compiled-marker")
    assert at_python == at_compiled == "9.07"
    recovered = r"metric::hot: recovered \(local-\d/app/gauge-temp value=3\.1\)"
    assert re.search(recovered, python.log()) and re.search(recovered, compiled.log())


def test_a_stale_threshold_key_keeps_the_rule_in_python(local, tmp_path):
    marker = tmp_path / "marker"
    services = {"mark": {"Commands": {"touch": ["/usr/bin/touch", str(marker)]}}}
    m = local(
        rules={"Values": [RULE]},
        services=services,
        module_options={"ThresholdRules": "0123456789abcdef"},
    )
    assert "does not name the threshold block of these rules" in m.log()
    assert "watching values: 1 rule(s)" in m.log()
    assert _run_value(m, marker) == "9.07"
