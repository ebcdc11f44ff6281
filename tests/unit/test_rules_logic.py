"""Pure logic of local monitoring: messages, gates, conditions, parsing, index."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectd_monitor.config import parse_services
from collectd_monitor.rules import notify
from collectd_monitor.rules.condition import SeriesState, is_missing, judged_value, step
from collectd_monitor.rules.declarative import GateSettings, ValueRule, parse_rules
from collectd_monitor.rules.gate import Gate, Verdict
from collectd_monitor.rules.index import MetricIndex
from collectd_monitor.rules.matching import Pattern, Selector
from collectd_monitor.rules.model import Action

SERVICES = parse_services({"nginx": {"Commands": {"restart": "true"}}})


# --------------------------------------------------------------------------- notify


def test_short_result_message_is_plain_json():
    text = notify.result_message(7, 0, "Hello World!")
    assert json.loads(text) == {"task_id": 7, "code": 0, "message": "Hello World!"}


@given(st.text(max_size=2000), st.integers(0, 2**32), st.integers(0, 0xFFFF))
def test_result_message_always_fits_and_stays_valid_json(message, task_id, code):
    text = notify.result_message(task_id, code, message)
    assert len(text.encode()) <= notify.MAX_MESSAGE
    decoded = json.loads(text)
    assert decoded["task_id"] == task_id and decoded["code"] == code
    if decoded["message"] != message:
        assert decoded["message"].endswith(f"[cut, {len(message)} chars]")
        assert message.startswith(decoded["message"][: -len(f" [cut, {len(message)} chars]")])


def test_cut_keeps_as_much_as_fits():
    text = notify.result_message(1, 0, "x" * 1000)
    assert len(text) in (notify.MAX_MESSAGE, notify.MAX_MESSAGE - 1)


def test_names_are_clipped_for_type_instance():
    assert notify.clip_name("a" * 10) == "a" * 10
    clipped = notify.clip_name("é" * 100)
    assert len(clipped.encode()) <= notify.MAX_TYPE_INSTANCE and clipped.endswith("...")


def test_severity_follows_the_code():
    assert notify.result("r", 1, 0, "").severity == 4
    assert notify.result("r", 1, 3, "").severity == 1


# --------------------------------------------------------------------------- gate


def test_gate_runs_then_cools_down():
    gate = Gate(GateSettings(cooldown=10, max_runs=5, window=100, resume_after=5))
    assert gate.report(0, True) is Verdict.RUN
    gate.started(0)
    assert gate.report(1, True) is Verdict.RUNNING
    gate.finished(2)
    assert gate.report(5, True) is Verdict.COOLDOWN
    assert gate.report(12, True) is Verdict.RUN
    assert gate.report(13, False) is Verdict.QUIET


def test_breaker_opens_after_max_runs_and_closes_after_quiet_time():
    gate = Gate(GateSettings(cooldown=0, max_runs=2, window=100, resume_after=30))
    for t in (0, 10):
        assert gate.report(t, True) is Verdict.RUN
        gate.started(t)
        gate.finished(t)
    assert gate.report(20, True) is Verdict.TRIPPED
    assert gate.report(25, True) is Verdict.SUSPENDED
    assert not gate.try_resume(50)  # last fault at 25: quiet for only 25 s
    assert gate.report(51, False) is Verdict.QUIET
    assert gate.try_resume(56)
    assert gate.report(57, True) is Verdict.RUN


def test_runs_older_than_the_window_do_not_count():
    gate = Gate(GateSettings(cooldown=0, max_runs=2, window=10, resume_after=30))
    for t in (0, 5, 16, 21, 32):
        assert gate.report(t, True) is Verdict.RUN, t
        gate.started(t)
        gate.finished(t)


# --------------------------------------------------------------------------- conditions


def rule(**kw):
    base = {
        "name": "r",
        "selector": Selector(),
        "action": Action("nginx", "restart"),
        "gate": GateSettings(),
    }
    return ValueRule(**{**base, **kw})


def feed(r, values):
    state = SeriesState(last_seen=0, interval=10)
    return [step(r, state, v) for v in values]


def test_hits_must_be_consecutive():
    assert feed(rule(above=90, hits=3), [95, 95, 50, 95, 95, 95]) == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]


def test_below_and_above_together_fault_outside_the_band():
    assert feed(rule(above=90, below=10), [50, 5, 50, 95]) == [False, True, False, True]


def test_hysteresis_holds_the_fault_until_well_inside():
    assert feed(rule(above=90, hysteresis=10), [95, 85, 81, 80, 85]) == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert feed(rule(below=10, hysteresis=5), [5, 12, 15, 12]) == [True, True, False, False]


def test_missing_data_counts_intervals():
    state = SeriesState(last_seen=100, interval=10)
    r = rule(missing=3)
    assert not is_missing(r, state, 129)
    assert is_missing(r, state, 131)
    assert not step(r, state, 1.0) and not state.missing


def test_counters_are_judged_by_rate():
    state = SeriesState(last_seen=0, interval=10)
    assert judged_value(state, 100, "derive", 0, 10) is None
    assert judged_value(state, 200, "derive", 10, 10) == 10
    assert judged_value(state, 50, "counter", 20, 10) is None  # wrapped
    assert judged_value(state, 70, "counter", 30, 10) == 2
    assert judged_value(state, 30, "absolute", 40, 10) == 3
    assert judged_value(state, float("nan"), "gauge", 50, 10) is None


# --------------------------------------------------------------------------- parsing


def test_rules_parse_with_defaults_and_case_insensitive_keys():
    rules = parse_rules(
        {
            "defaults": {"cooldown": 5, "MaxRuns": 2},
            "Values": [
                {
                    "name": "a",
                    "plugin": "memory",
                    "BELOW": 10,
                    "action": {"service": "nginx", "command": "restart"},
                    "Window": 60,
                }
            ],
            "Notifications": [
                {
                    "Name": "b",
                    "Severity": ["warning", "FAILURE"],
                    "Action": {"Service": "nginx", "Command": "restart"},
                }
            ],
        },
        SERVICES,
    )
    assert not rules.errors
    (a,), (b,) = rules.values, rules.notifications
    assert a.below == 10 and a.gate == GateSettings(
        cooldown=5, max_runs=2, window=60, resume_after=600
    )
    assert b.severities == {1, 2} and b.gate.cooldown == 5


@pytest.mark.parametrize(
    ("body", "key", "text"),
    [
        ({"Name": "x", "Above": 1}, "Rules.Values[0].Action", "missing"),
        (
            {"Name": "x", "Above": "high", "Action": {"Service": "nginx", "Command": "restart"}},
            "Rules.Values[0].Above",
            "expected a number",
        ),
        (
            {"Name": "x", "Action": {"Service": "nginx", "Command": "restart"}},
            "Rules.Values[0]",
            "needs Above, Below or Missing",
        ),
        (
            {"Name": "x", "Above": 1, "Action": {"Service": "nope", "Command": "restart"}},
            "Rules.Values[0].Action.Service",
            "no service 'nope'",
        ),
        (
            {"Name": "x", "Above": 1, "Action": {"Service": "nginx", "Command": "stop"}},
            "Rules.Values[0].Action.Command",
            "has no command 'stop'",
        ),
        (
            {
                "Name": "x",
                "Above": 1,
                "Hits": 0,
                "Action": {"Service": "nginx", "Command": "restart"},
            },
            "Rules.Values[0].Hits",
            "at least 1",
        ),
        ({"Name": "x", "Abov": 1}, "Rules.Values[0].Abov", "unknown key"),
        ({"Above": 1}, "Rules.Values[0].Name", "missing"),
    ],
)
def test_a_bad_rule_is_reported_with_its_key_and_left_out(body, key, text):
    good = {"Name": "good", "Above": 1, "Action": {"Service": "nginx", "Command": "restart"}}
    rules = parse_rules({"Values": [body, good]}, SERVICES, source="/etc/config.json")
    assert [r.name for r in rules.values] == ["good"]
    (error,) = rules.errors
    assert error.key == key and text in str(error) and "/etc/config.json" in str(error)


def test_duplicate_names_are_refused():
    body = {"Name": "a", "Above": 1, "Action": {"Service": "nginx", "Command": "restart"}}
    rules = parse_rules({"Values": [body, body]}, SERVICES)
    assert len(rules.values) == 1 and "used by another rule" in str(rules.errors[0])


# --------------------------------------------------------------------------- index


def values(plugin="memory", type_="memory", host="h", pi="", ti="free"):
    return SimpleNamespace(
        host=host, plugin=plugin, plugin_instance=pi, type=type_, type_instance=ti
    )


def test_patterns_exact_and_wild():
    assert Pattern("eth0").matches("eth0") and not Pattern("eth0").matches("eth1")
    assert Pattern("eth*").wild and Pattern("eth*").matches("eth1")
    assert not Pattern("eth?").matches("eth10")


def test_index_finds_rules_and_turns_other_plugins_away():
    a = rule(
        name="a",
        above=1,
        selector=Selector(plugin=Pattern("memory"), type_instance=Pattern("free")),
    )
    b = rule(name="b", above=1, selector=Selector(plugin=Pattern("cpu")))
    index = MetricIndex([a, b])
    assert index.plugins == {"memory", "cpu"}
    assert index.rules_for(values()) == (a,)
    assert index.rules_for(values(ti="used")) == ()
    assert index.rules_for(values(plugin="disk")) == ()
    assert index.rules_for(values(plugin="cpu", type_="percent")) == (b,)


def test_a_wildcard_plugin_disables_the_plugin_filter():
    wild = rule(name="w", above=1, selector=Selector(plugin=Pattern("proc*")))
    index = MetricIndex([wild])
    assert index.plugins is None
    assert index.rules_for(values(plugin="processes")) == (wild,)
    assert index.rules_for(values(plugin="memory")) == ()


def test_index_lookup_does_not_scan_the_rules_again():
    rules = [
        rule(
            name=f"r{i}",
            above=1,
            selector=Selector(plugin=Pattern("app"), plugin_instance=Pattern(f"i{i}")),
        )
        for i in range(1000)
    ]
    index = MetricIndex(rules)
    assert index.rules_for(values(plugin="app", pi="i500")) == (rules[500],)
    index.rules = ()  # the cache answers from now on
    index._groups = {}
    assert index.rules_for(values(plugin="app", pi="i500")) == (rules[500],)


def bench_shaped(count):
    """Rules naming host, plugin and type exactly, as bench/bench_local.py makes them."""
    return [
        rule(
            name=f"r{i}",
            above=1,
            selector=Selector(
                host=Pattern(f"host{i:04d}"),
                plugin=Pattern(f"plugin{i % 20:03d}"),
                type=Pattern("gauge"),
            ),
        )
        for i in range(count)
    ]


def test_index_turns_away_on_every_field_all_rules_name_exactly():
    rules = bench_shaped(1000)
    index = MetricIndex(rules)
    assert index.fields == ("host", "plugin", "type")
    assert len(index.plugins or ()) == 20
    assert index.rules_for(values("plugin003", "gauge", "host0003", ti="x")) == (rules[3],)
    # plugin and host are both named by some rule, but not together: turned away, not cached
    assert index.rules_for(values("plugin004", "gauge", "host0003", ti="x")) == ()
    assert index.rules_for(values("plugin003", "counter", "host0003", ti="x")) == ()
    assert index._cache == {("host0003", "plugin003", "", "gauge", "x"): (rules[3],)}


def test_glob_selectors_still_match_next_to_exact_ones():
    exact = rule(name="e", above=1, selector=Selector(plugin=Pattern("cpu"), type=Pattern("x")))
    glob_type = rule(
        name="g", above=1, selector=Selector(plugin=Pattern("cpu"), type=Pattern("p*"))
    )
    glob_all = rule(name="w", above=1, selector=Selector(type_instance=Pattern("idle?")))
    index = MetricIndex([exact, glob_type, glob_all])
    assert index.fields == () and index.plugins is None
    assert index.rules_for(values("cpu", "percent", ti="idle1")) == (glob_type, glob_all)
    assert index.rules_for(values("cpu", "x", ti="idle")) == (exact,)
    assert index.rules_for(values("disk", "x", ti="idle2")) == (glob_all,)
    only_cpu = MetricIndex([exact, glob_type])
    assert only_cpu.fields == ("plugin",) and only_cpu.plugins == {"cpu"}
    assert only_cpu.rules_for(values("cpu", "pct")) == (glob_type,)
    assert only_cpu.rules_for(values("disk", "pct")) == ()


def test_rules_naming_their_plugin_come_before_wildcard_plugins():
    wild = rule(name="w", above=1, selector=Selector(plugin=Pattern("c*")))
    named = rule(name="n", above=1, selector=Selector(plugin=Pattern("cpu")))
    assert MetricIndex([wild, named]).rules_for(values("cpu")) == (named, wild)


def test_a_new_series_after_many_others_is_matched():
    rules = bench_shaped(100)
    index = MetricIndex(rules)
    for n in range(5000):
        index.rules_for(values(f"plugin{n % 20:03d}", "gauge", f"host{n % 10:04d}", ti=f"t{n}"))
    assert index.rules_for(values("plugin007", "gauge", "host0007", ti="new")) == (rules[7],)
    assert index.rules_for(values("plugin007", "gauge", "host0007", pi="i", ti="new")) == (
        rules[7],
    )


def test_the_identity_cache_stays_bounded():
    rules = [rule(name="a", above=1, selector=Selector(plugin=Pattern("app")))]
    index = MetricIndex(rules, max_cached=100)
    for n in range(1000):
        assert index.rules_for(values("app", ti=f"t{n}")) == (rules[0],)
        assert len(index._cache) <= 100


def test_an_index_without_rules_turns_everything_away():
    index = MetricIndex([])
    assert index.plugins == frozenset()
    assert index.rules_for(values()) == ()
    assert index._cache == {}
