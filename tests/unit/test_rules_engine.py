"""The engine with an injected clock, a recording runner and rule files on disk."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

from collectd_monitor.cli import main
from collectd_monitor.config import build_config
from collectd_monitor.executor import Busy, Outcome
from collectd_monitor.rules import notify
from collectd_monitor.rules.declarative import parse_rules
from collectd_monitor.rules.engine import Engine
from collectd_monitor.rules.model import Metric, Notice
from collectd_monitor.rules.pyfiles import load_rule_files

SERVICES = {"nginx": {"Commands": {"restart": "true", "reload": "true"}}}
ACTION = {"Service": "nginx", "Command": "restart"}


class Harness:
    def __init__(self, rules=None, rules_dir=None):
        self.now = 1000.0
        self.pending = []
        self.emitted = []
        self.events = []
        config = build_config({"Services": SERVICES, "Rules": rules or {}}, source="/x/config.json")
        self.engine = Engine(
            config,
            parse_rules(rules, config.services, source=config.source),
            load_rule_files(rules_dir),
            runner=lambda spec, done: self.pending.append((spec, done)),
            emit=self.emitted.append,
            clock=lambda: self.now,
            observe=lambda t, e, n, x: self.events.append((e, n)),
        )

    def value(self, v, plugin="app", ti=""):
        metric = Metric("h", plugin, "", "gauge", ti, self.now, 10, (v,), ("value",), ("gauge",))
        self.engine.on_metric(metric, self.engine.index.rules_for(metric))

    def finish(self, code=0):
        _spec, done = self.pending.pop(0)
        done(Outcome(code=code, output="out"))


def test_value_rule_runs_once_and_one_at_a_time():
    h = Harness(
        {"Values": [{"Name": "a", "Plugin": "app", "Above": 5, "Action": ACTION, "Cooldown": 0}]}
    )
    h.value(10)
    h.value(10)  # the command still runs: not started twice
    assert len(h.pending) == 1 and ("skipped", "config.json::metric::a") not in h.events
    h.finish()
    (note,) = h.emitted
    assert note.type_instance == "config.json::metric::a" and note.severity == 4
    assert json.loads(note.message)["message"] == "out"
    h.value(10)
    assert len(h.pending) == 1


def test_two_rules_share_one_command_one_run_at_a_time():
    rules = {
        "Values": [
            {"Name": n, "Plugin": "app", "TypeInstance": n, "Above": 5, "Action": ACTION}
            for n in ("a", "b")
        ]
    }
    h = Harness(rules)
    h.value(10, ti="a")
    h.value(10, ti="b")
    assert len(h.pending) == 1 and ("skipped", "config.json::metric::b") in h.events


def test_busy_executor_reports_a_failure():
    h = Harness({"Values": [{"Name": "a", "Plugin": "app", "Above": 5, "Action": ACTION}]})

    def busy(spec, done):
        raise Busy("64 commands already waiting")

    h.engine.dispatcher.runner = busy
    h.value(10)
    (note,) = h.emitted
    assert note.severity == 1 and json.loads(note.message)["code"] == 0x100A


def test_missing_data_and_never_seen_fire_on_ticks():
    rules = {
        "Values": [
            {"Name": "gone", "Plugin": "app", "Missing": 2, "Action": ACTION},
            {
                "Name": "never",
                "Plugin": "nothing",
                "Missing": 2,
                "Interval": 5,
                "Action": {"Service": "nginx", "Command": "reload"},
            },
        ]
    }
    h = Harness(rules)
    h.value(1)
    h.now += 15
    h.engine.tick()
    assert [s.label for s, _ in h.pending] == ["nginx/reload"]
    h.now += 10
    h.engine.tick()
    assert [s.label for s, _ in h.pending] == ["nginx/reload", "nginx/restart"]


def test_own_notifications_are_ignored():
    h = Harness(
        {
            "Notifications": [
                {"Name": "n", "Plugin": "*", "Severity": ["okay", "failure"], "Action": ACTION}
            ]
        }
    )
    h.engine.on_notification(Notice("h", notify.PLUGIN_NAME, "", "commands", "x", 0, 4, "{}"))
    assert not h.pending
    h.engine.on_notification(Notice("h", "other", "", "gauge", "", 0, 1, "bad"))
    assert len(h.pending) == 1


def test_notification_fault_stays_open_until_okay_and_retries_after_cooldown():
    h = Harness(
        {"Notifications": [{"Name": "n", "Plugin": "app", "Action": ACTION, "Cooldown": 60}]}
    )
    h.engine.on_notification(Notice("h", "app", "", "gauge", "", 0, 1, "too high"))
    h.finish()
    h.now += 61
    h.engine.tick()  # no OKAY yet: still a fault, cooldown over: repair again
    assert len(h.pending) == 1
    h.finish()
    h.engine.on_notification(Notice("h", "app", "", "gauge", "", 0, 4, "fine"))
    h.now += 61
    h.engine.tick()
    assert not h.pending and ("recovered", "config.json::notification::n") in h.events


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_raising_handler_is_logged_once_per_minute(tmp_path):
    (tmp_path / "bad.py").write_text(
        "def f(m):\n    raise ValueError('boom')\nmetric_handlers = f\n"
    )
    records = Records()
    logger = logging.getLogger("collectd_monitor.local")
    logger.addHandler(records)
    try:
        h = Harness(rules_dir=str(tmp_path))
        for _ in range(100):
            h.value(1)
        errors = [line for line in records.lines if "boom" in line]
        assert len(errors) == 1 and "bad.py line 2" in errors[0]
        h.now += 61
        h.value(1)
    finally:
        logger.removeHandler(records)
    errors = [line for line in records.lines if "boom" in line]
    assert len(errors) == 2 and "99 more such errors" in errors[1]


def test_handler_naming_an_unknown_command_gets_its_code(tmp_path):
    (tmp_path / "x.py").write_text(
        "metric_handlers = {'n': lambda m: {'service': 'nginx', 'command': 'nope'}}\n"
    )
    h = Harness(rules_dir=str(tmp_path))
    h.value(1)
    (note,) = h.emitted
    assert note.type_instance == "x.py::metric::n"
    assert json.loads(note.message)["code"] == 0x1003 and not h.pending


# --------------------------------------------------------------------------- test-rules


def write_setup(tmp_path: Path) -> Path:
    rules_dir = tmp_path / "local"
    rules_dir.mkdir()
    (rules_dir / "example.py").write_text(
        textwrap.dedent("""
        def load_high(metric):
            if metric.plugin == "load" and metric.values[0] > 5:
                return {"service": "nginx", "command": "restart"}

        metric_handlers = {"load_high": load_high}
    """)
    )
    config = {
        "Services": SERVICES,
        "LocalMonitorConfigDir": str(rules_dir),
        "Rules": {
            "Defaults": {"Cooldown": 60, "MaxRuns": 2, "Window": 600},
            "Values": [
                {
                    "Name": "mem-low",
                    "Plugin": "memory",
                    "TypeInstance": "free",
                    "Below": 100,
                    "Hits": 2,
                    "Action": ACTION,
                }
            ],
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_test_rules_prints_what_would_fire_and_when(tmp_path, capsys):
    config = write_setup(tmp_path)
    series = tmp_path / "series.txt"
    series.write_text(
        textwrap.dedent("""
        # two low values in a row fire mem-low; the load handler fires on 6
        PUTVAL web1/memory/memory-free interval=10 100:50
        PUTVAL web1/memory/memory-free interval=10 110:50
        {"time": 120, "host": "web1", "plugin": "load", "type": "load", "values": [6, 1, 1]}
        PUTVAL web1/memory/memory-free interval=10 130:500
    """)
    )
    assert main(["test-rules", "--config", str(config), str(series)]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = [line for line in lines if "  run  " in line]
    assert len(runs) == 2
    assert runs[0].startswith("110.000") and "config.json::metric::mem-low" in runs[0]
    assert runs[1].startswith("120.000") and "example.py::metric::load_high" in runs[1]
    assert any("recovered" in line and line.startswith("130.000") for line in lines)


def test_test_rules_reports_bad_lines_and_broken_rules(tmp_path, capsys):
    config = write_setup(tmp_path)
    (tmp_path / "local" / "broken.py").write_text("def (:\n")
    series = tmp_path / "series.txt"
    series.write_text('{"time": 1}\n')
    assert main(["test-rules", "--config", str(config), str(series)]) == 1
    assert "broken.py line 1: syntax error" in capsys.readouterr().err
    series.write_text("PUTVAL nonsense 1:2\n")
    assert main(["test-rules", "--config", str(config), str(series)]) == 2
    assert "line 1: identifier 'nonsense'" in capsys.readouterr().err


def test_an_open_breaker_closes_on_ticks_alone():
    rules = {
        "Values": [
            {"Name": "a", "Plugin": "app", "Above": 5, "Action": ACTION, "Cooldown": 0,
             "MaxRuns": 1, "Window": 600, "ResumeAfter": 30},
            {"Name": "b", "Plugin": "other", "Above": 5, "Action": ACTION},
        ]
    }  # fmt: skip
    h = Harness(rules)
    h.value(10)
    h.finish()
    h.now += 1
    h.value(10)  # a second run within the window: the breaker opens
    assert ("suspended", "config.json::metric::a") in h.events
    h.now += 10
    h.engine.tick()
    assert ("resumed", "config.json::metric::a") not in h.events
    h.now += 30
    h.engine.tick()  # no value since: quiet long enough
    assert h.events[-1] == ("resumed", "config.json::metric::a")
    assert "circuit breaker closed" in h.emitted[-1].message
    h.now += 1
    h.value(10)  # active again: runs
    assert len(h.pending) == 1
