"""Rule-file handlers on worker threads: queue, time budget, abandonment, suspension.

The pool's clock is injected and its watchdog is driven by calling ``check()``,
so "a call ran past its budget" is a clock step, not a sleep. The worker
threads are real; tests wait for conditions with a deadline.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.config import build_config
from collectd_monitor.rules import notify
from collectd_monitor.rules.declarative import GateSettings, parse_rules
from collectd_monitor.rules.engine import Engine
from collectd_monitor.rules.model import Action, Metric, Severity
from collectd_monitor.rules.overrun import OverrunGuard
from collectd_monitor.rules.pyfiles import Handler, RuleFiles
from collectd_monitor.rules.worker import EventQueue, HandlerPool, Job
from collectd_monitor.testing.sandbox import wait_for

DEADLINE = 5.0
SETTINGS = GateSettings(window=100.0, resume_after=50.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def metric(ti: str = "", value: float = 1.0) -> Metric:
    return Metric("h", "app", "", "gauge", ti, 0.0, 10.0, (value,), ("value",), ("gauge",))


def handler(name: str, func) -> Handler:
    return Handler(f"f.py::metric::{name}", func, "/r/f.py", 1)


def codes(notes) -> list[tuple[str, int, int]]:
    return [(n.type_instance, n.severity, json.loads(n.message)["code"]) for n in notes]


# --------------------------------------------------------------------------- queue


def test_a_full_queue_drops_counts_and_logs_at_most_once_a_minute(caplog):
    clock = Clock()
    queue = EventQueue(2, clock=clock, log_every=60.0)
    jobs = [Job(metric(str(i)), ()) for i in range(5)]
    caplog.set_level(logging.WARNING, "collectd_monitor.local")
    assert [queue.put(job) for job in jobs] == [True, True, False, False, False]
    assert queue.dropped == 3 and len(queue) == 2
    (record,) = caplog.records  # the first drop is reported, the next two only counted
    assert "queue full (2 events), 1 event(s) dropped" in record.getMessage()
    clock.now += 59
    assert queue.report_drops() is None
    clock.now += 1
    line = queue.report_drops()
    assert line is not None and "2 event(s) dropped since the last report (3 in all)" in line
    assert queue.report_drops() is None  # nothing new to say
    assert queue.get(0) is jobs[0] and queue.get(0) is jobs[1] and queue.get(0) is None
    assert queue.put(jobs[4])


# --------------------------------------------------------------------------- overrun books


def test_three_overruns_within_the_window_suspend_until_resume_after():
    guard = OverrunGuard(1.0, SETTINGS)
    first = guard.overran("x", 0.0, 1.5, abandoned=False)
    assert (first.count, first.suspended) == (1, False)
    assert codes(first.notes) == [("x", Severity.WARNING, ResultCode.HANDLER_OVERRUN)]
    assert "took 1.5 s, over its 1 s time budget" in json.loads(first.notes[0].message)["message"]
    guard.overran("x", 150.0, 9.0, abandoned=True)  # the first one fell out of the window
    assert not guard.suspended("x")
    third = guard.overran("x", 160.0, 2.0, abandoned=False)
    assert third.count == 2 and not third.suspended
    tripped = guard.overran("x", 170.0, 2.0, abandoned=False)
    assert tripped.suspended and guard.suspended("x") and not guard.suspended("y")
    assert codes(tripped.notes)[1] == ("x", Severity.FAILURE, notify.SUSPENDED)
    assert "suspended: 3 overruns" in tripped.text
    assert guard.resume_due(219.0) == []
    ((name, note),) = guard.resume_due(220.0)
    assert name == "x" and note.severity == Severity.OKAY and not guard.suspended("x")
    assert guard.overran("x", 221.0, 2.0, abandoned=False).count == 1  # books start afresh


# --------------------------------------------------------------------------- the pool


class Pool:
    """A pool with a fake clock, recording what it judges and emits."""

    def __init__(self, handlers, *, budget=1.0, max_abandoned=8):
        self.clock = Clock()
        self.handlers = handlers
        self.judged: list[tuple[str, str, Action | None]] = []
        self.emitted = []
        self.pool = HandlerPool(
            lambda h, e: h.func(e),
            lambda h, e, a: self.judged.append((h.name, e.type_instance, a)),
            self.emitted.append,
            OverrunGuard(budget, SETTINGS),
            clock=self.clock,
            max_abandoned=max_abandoned,
        )
        self.pool.start(watchdog=False)

    def send(self, ti: str) -> None:
        assert self.pool.submit(metric(ti), self.handlers)

    def wait_judged(self, count: int) -> None:
        wait_for(lambda: len(self.judged) >= count, DEADLINE, what=f"{count} judged")

    def wait_busy(self, name: str) -> None:
        wait_for(lambda: name in self.pool.busy_with(), DEADLINE, what=f"{name} running")

    def overrun(self) -> None:
        self.clock.now += 1.5
        self.pool.check()


@pytest.fixture
def release():
    gate = threading.Event()
    yield gate
    gate.set()  # never leave a thread hung behind a test


def test_events_reach_the_handlers_in_order_and_results_are_judged():
    seen = []
    a = handler("a", lambda m: seen.append(("a", m.type_instance)))
    b = handler("b", lambda m: {"service": "s", "command": "c"} if m.type_instance else None)
    p = Pool([a, b])
    for ti in ("1", "2", "3"):
        p.send(ti)
    p.wait_judged(6)
    assert seen == [("a", "1"), ("a", "2"), ("a", "3")]
    assert [(n, t) for n, t, _ in p.judged] == [
        (h, t) for t in ("1", "2", "3") for h in (a.name, b.name)
    ]
    assert p.judged[1][2] == {"service": "s", "command": "c"}
    assert p.emitted == []
    p.pool.stop()


def test_a_hung_call_is_abandoned_and_the_others_go_on(release):
    calls = []

    def hang(m):
        calls.append(m.type_instance)
        if m.type_instance == "hang":
            release.wait()
            return {"service": "late", "command": "result"}
        return None

    hung, other = handler("hung", hang), handler("other", lambda m: None)
    p = Pool([hung, other])
    p.send("hang")
    p.wait_busy(hung.name)
    p.send("next")
    p.overrun()
    assert (p.pool.abandoned, p.pool.active) == (1, 1)
    assert codes(p.emitted) == [(hung.name, Severity.WARNING, ResultCode.HANDLER_OVERRUN)]
    assert "its thread is abandoned" in json.loads(p.emitted[0].message)["message"]
    # The replacement finishes the abandoned event for the other handler, then goes on;
    # the hung handler is skipped while its call is still running.
    p.wait_judged(2)
    assert p.judged == [(other.name, "hang", None), (other.name, "next", None)]
    assert calls == ["hang"]
    release.set()
    wait_for(lambda: p.pool.abandoned == 0, DEADLINE, what="the abandoned call to return")
    assert (hung.name, "hang", Action("late", "result")) not in p.judged  # late: ignored
    p.send("again")
    p.wait_judged(4)
    assert calls == ["hang", "again"] and p.pool.active == 1
    p.pool.stop()


def test_abandoned_threads_are_capped(release, caplog):
    names = [f"h{i}" for i in range(3)]
    handlers = [handler(n, lambda m: release.wait()) for n in names]
    p = Pool(handlers, max_abandoned=1)
    p.send("x")
    p.wait_busy(handlers[0].name)
    p.overrun()
    p.wait_busy(handlers[1].name)  # the replacement moved on to the next handler
    caplog.set_level(logging.ERROR, "collectd_monitor.local")
    p.overrun()
    assert (p.pool.abandoned, p.pool.active) == (2, 0)
    assert "2 handler threads are stuck" in caplog.text
    assert p.pool.submit(metric("queued"), handlers)  # still queued, not lost
    release.set()
    wait_for(lambda: p.pool.abandoned == 0, DEADLINE, what="abandoned calls to return")
    assert p.pool.active == 1  # a replacement started once one came back
    p.wait_judged(3)  # h2 on "x", then h0 and h1 on "queued" (h2 may still follow)
    p.pool.stop()


def test_overruns_that_finish_are_judged_then_suspend_the_handler():
    p: Pool

    def slow(m):
        p.clock.now += 2.0  # each call "takes" two seconds on the pool's clock
        return None

    p = Pool([handler("slow", slow), handler("probe", lambda m: None)])
    for i in range(3):
        p.send(str(i))
        p.wait_judged(2 * (i + 1))
    name = "f.py::metric::slow"
    warn = (name, Severity.WARNING, ResultCode.HANDLER_OVERRUN)
    assert codes(p.emitted) == [warn, warn, warn, (name, Severity.FAILURE, notify.SUSPENDED)]
    p.send("skipped")
    p.wait_judged(7)  # the probe saw it; the suspended handler did not
    p.clock.now += SETTINGS.resume_after
    p.pool.check()
    assert codes(p.emitted)[-1] == (name, Severity.OKAY, 0)
    p.send("after")
    p.wait_judged(9)
    assert [t for n, t, _ in p.judged if n == name] == ["0", "1", "2", "after"]
    p.pool.stop()


def test_stop_returns_at_once_with_a_hung_handler(release):
    p = Pool([handler("hung", lambda m: release.wait())])
    p.send("x")
    p.wait_busy("f.py::metric::hung")
    p.pool.stop()  # must not wait for the hung call
    assert not p.pool.submit(metric("late"), p.handlers)


# --------------------------------------------------------------------------- with the engine


def test_declarative_rules_fire_while_a_handler_hangs(release):
    services = {"nginx": {"Commands": {"restart": "true"}}}
    raw = {
        "Defaults": {"HandlerTimeBudget": 0.5},
        "Values": [
            {
                "Name": "a",
                "Plugin": "app",
                "Above": 5,
                "Action": {"Service": "nginx", "Command": "restart"},
            }
        ],
    }
    config = build_config({"Services": services, "Rules": raw}, source="/x/config.json")
    rules = parse_rules(raw, config.services, source=config.source)
    assert rules.handler_time_budget == 0.5
    hung = handler("hung", lambda m: release.wait())
    pending = []
    clock = Clock()
    engine = Engine(
        config,
        rules,
        RuleFiles(metric=(hung,)),
        runner=lambda spec, done: pending.append(spec),
        emit=lambda note: None,
        clock=clock,
    )
    pool = HandlerPool(
        engine.call_handler,
        engine.handled,
        lambda note: None,
        OverrunGuard(rules.handler_time_budget, rules.defaults),
        clock=clock,
    )
    engine.use_pool(pool)
    pool.start(watchdog=False)
    engine.on_metric(metric(value=1), engine.index.rules_for(metric()))
    wait_for(lambda: pool.busy_with(), DEADLINE, what="the handler to hang")
    engine.on_metric(metric(value=10), engine.index.rules_for(metric()))  # returns at once
    assert [spec.label for spec in pending] == ["nginx/restart"]
    pool.stop()


@pytest.mark.parametrize("bad", [0, -1, "soon", True])
def test_handler_time_budget_must_be_a_positive_number(bad):
    rules = parse_rules({"Defaults": {"HandlerTimeBudget": bad}}, {}, source="c.json")
    (error,) = rules.errors
    assert "HandlerTimeBudget" in str(error)
