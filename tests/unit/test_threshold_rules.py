"""Value rules compiled to collectd's threshold plugin: which compile, the block, and
the same firing times as their Python form (``test-rules`` with and without ``--compiled``)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from collectd_monitor.cli import main
from collectd_monitor.config import build_config
from collectd_monitor.rules.declarative import parse_rules
from collectd_monitor.rules.threshold import compile_rules

SERVICES = {"svc": {"Commands": {"fix": "true"}}}
ACTION = {"Service": "svc", "Command": "fix"}
NAN = math.nan
TYPES = {
    "gauge": (("value", "gauge", NAN, NAN),),
    "derive": (("value", "derive", 0.0, NAN),),
    "counter": (("value", "counter", 0.0, NAN),),
    "percent": (("value", "gauge", 0.0, 100.0),),
    "load": tuple((n, "gauge", 0.0, 5000.0) for n in ("shortterm", "midterm", "longterm")),
}


def plan_of(*rules):
    config = build_config({"Services": SERVICES}, source="/x/config.json")
    values = [{"Action": ACTION, **rule} for rule in rules]
    for i, rule in enumerate(values):
        rule.setdefault("Name", f"r{i}")
    parsed = parse_rules({"Values": values}, config.services)
    assert not parsed.errors, parsed.errors
    return compile_rules(parsed.values, TYPES.get)


def reason(**rule):
    plan = plan_of(rule)
    return plan.kept[0].reason if plan.kept else None


def test_exact_rules_compile():
    assert reason(Plugin="app", Type="gauge", Above=5) is None
    assert reason(Host="h", Plugin="app", PluginInstance="x", Type="gauge", Below=1) is None
    assert reason(Plugin="app", Type="derive", Above=5, Hits=4, Hysteresis=1) is None
    assert reason(Plugin="load", Type="load", DataSource="midterm", Above=4) is None
    assert reason(Plugin="cpu", Type="percent", TypeInstance="idle", Above=90) is None


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ({"Plugin": "app", "Type": "gauge", "Missing": 3}, "Missing"),
        ({"Plugin": "app", "Above": 5}, "no Type"),
        ({"Plugin": "ap*", "Type": "gauge", "Above": 5}, "wildcard"),
        ({"Plugin": "app", "PluginInstance": "", "Type": "gauge", "Above": 5}, "empty"),
        ({"PluginInstance": "x", "Type": "gauge", "Above": 5}, "without Plugin"),
        ({"Plugin": "a-b", "Type": "gauge", "Above": 5}, "'-'"),
        ({"Plugin": "app", "Type": "nosuch", "Above": 5}, "not in types.db"),
        ({"Plugin": "load", "Type": "load", "Above": 5}, "3 data sources"),
        ({"Plugin": "app", "Type": "counter", "Above": 5}, "counter"),
        ({"Plugin": "app", "Type": "gauge", "Above": 5, "Hits": 2}, "Hits 2"),
    ],
)
def test_inexact_rules_stay_in_python(rule, why):
    assert why in (reason(**rule) or "compiled")


def test_overlapping_rules_stay_in_python():
    plan = plan_of(
        {"Plugin": "app", "Type": "gauge", "Above": 5},
        {"Plugin": "app", "PluginInstance": "x", "Type": "gauge", "Above": 9},
        {"Plugin": "db", "Type": "gauge", "Above": 5},
        {"Host": "h1", "Plugin": "web", "Type": "gauge", "Above": 5},
        {"Host": "h2", "Plugin": "web", "Type": "gauge", "Above": 5},
    )
    assert [c.rule.name for c in plan.compiled] == ["r2", "r3", "r4"]
    assert [k.rule.name for k in plan.kept] == ["r0", "r1"]
    assert "most specific" in plan.kept[0].reason


def test_block_maps_hits_and_limits():
    plan = plan_of(
        {"Name": "hot", "Host": "h", "Plugin": "app", "PluginInstance": "x", "Type": "gauge",
         "TypeInstance": "t", "Above": 5, "Below": 1, "Hits": 3, "Hysteresis": 0.5},
        {"Name": "one", "Plugin": "db", "Type": "gauge", "Above": 7},
    )  # fmt: skip
    block = plan.block
    assert block.startswith("# Declarative") and "LoadPlugin threshold" in block
    hot = block[block.index("# rule hot") : block.index("# rule one")]
    for line in ('<Host "h">', '<Plugin "app">', 'Instance "x"', '<Type "gauge">', 'Instance "t"',
                 'DataSource "value"', "FailureMax 5.0", "FailureMin 1.0", "Hits 1",
                 "Hysteresis 0.5", "Interesting false"):  # fmt: skip
        assert line in hot
    one = block[block.index("# rule one") :]
    assert "Hits" not in one and "Hysteresis" not in one and "<Host" not in one
    assert (
        len(plan.digest) == 16
        and plan.digest != plan_of({"Plugin": "db", "Type": "gauge", "Above": 7}).digest
    )


def _series(rng: random.Random, kind: str, count: int) -> list[str]:
    lines, total = [], 0.0
    for i in range(count):
        if kind == "gauge":
            value = round(rng.uniform(0, 10), 2)
        else:
            total += rng.choice([0, 1, 3, 6, 9, 12])
            value = total
        lines.append(f"PUTVAL h/app/{kind} interval=1 {1000 + i}:{value}")
    return lines


def _events(out: str) -> list[tuple[str, str]]:
    return [tuple(line.split()[:2]) for line in out.splitlines() if not line.startswith("#")]


def _compare(seed: int, directory: Path, capsys: pytest.CaptureFixture[str]) -> bool:
    """Both forms on one random rule and series; whether the rule fired at all."""
    rng = random.Random(seed)
    kind = rng.choice(["gauge", "derive"])
    rule = {"Name": "r", "Plugin": "app", "Type": kind, "Action": ACTION, "Cooldown": 0,
            "Hits": rng.choice([1, 3, 4]), "Hysteresis": rng.choice([0, 0.5, 2])}  # fmt: skip
    limits = rng.choice(["above", "below", "both"])
    if limits in ("above", "both"):
        rule["Above"] = rng.choice([6, 7.5])
    if limits in ("below", "both"):
        rule["Below"] = rng.choice([2, 3.5])
    directory.mkdir()
    (directory / "config.json").write_text(
        json.dumps({"Services": SERVICES, "Rules": {"Values": [rule]}})
    )
    (directory / "series").write_text("\n".join(_series(rng, kind, 60)) + "\n")
    argv = ["test-rules", "--config", str(directory / "config.json"), str(directory / "series")]
    assert main(argv) == 0
    python = capsys.readouterr().out
    assert main([*argv, "--compiled", "--explain"]) == 0
    compiled = capsys.readouterr().out
    assert "# compiled to the threshold plugin: r" in compiled
    assert _events(python) == _events(compiled), (seed, rule)
    return any(event == "fault" for _, event in _events(python))


def test_compiled_and_python_forms_fire_at_the_same_values(tmp_path: Path, capsys):
    fired = [_compare(seed, tmp_path / str(seed), capsys) for seed in range(60)]
    assert sum(fired) > 40  # the series do exercise faults, hits and recoveries
