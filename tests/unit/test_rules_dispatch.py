"""The dispatcher alone: lookup, one run per command, runner, result notifications."""

from __future__ import annotations

import json

from collectd_monitor.codes import ResultCode
from collectd_monitor.config import build_config
from collectd_monitor.executor import Busy, Outcome
from collectd_monitor.rules.dispatch import Dispatcher, Refused, Run
from collectd_monitor.rules.model import Action, Severity

SERVICES = {"nginx": {"Commands": {"restart": "systemctl restart nginx", "reload": "true"}}}
RESTART = Action("nginx", "restart")


class Recorder:
    def __init__(self, services=SERVICES):
        self.pending = []
        self.emitted = []
        self.events = []
        self.finished = []
        ids = iter(range(100, 200))
        self.dispatcher = Dispatcher(
            build_config({"Services": services} if services else {}, source="/x/config.json"),
            lambda spec, done: self.pending.append((spec, done)),
            emit=self.emitted.append,
            clock=lambda: 5.0,
            new_task_id=lambda: next(ids),
            observe=lambda t, e, n, x: self.events.append((e, n, x)),
        )

    def prepare(self, action=RESTART, name="rule"):
        return self.dispatcher.prepare(name, action, "cpu=99", 1.0)

    def start(self, run, name="rule"):
        self.dispatcher.start(run, finished=lambda: self.finished.append(name))


def test_prepare_looks_the_command_up_and_start_hands_it_to_the_runner():
    r = Recorder()
    run = r.prepare()
    assert isinstance(run, Run)
    assert (run.task_id, run.spec.label, run.reason) == (100, "nginx/restart", "cpu=99")
    assert r.pending == []  # claiming runs nothing yet
    r.start(run)
    ((spec, _done),) = r.pending
    assert spec is run.spec
    assert ("run", "rule", "task 100: nginx/restart (cpu=99)") in r.events


def test_the_result_frees_the_command_and_becomes_a_notification():
    r = Recorder()
    r.start(r.prepare())
    _spec, done = r.pending.pop()
    done(Outcome(code=3, output="failed to restart"))
    assert r.finished == ["rule"]
    (note,) = r.emitted
    assert note.severity == Severity.FAILURE and note.type_instance == "rule"
    assert json.loads(note.message) == {"task_id": 100, "code": 3, "message": "failed to restart"}
    assert isinstance(r.prepare(), Run)  # free again


def test_a_running_command_is_not_claimed_twice_by_any_rule():
    r = Recorder()
    r.start(r.prepare(name="a"), name="a")
    assert r.prepare(name="b") is None
    assert ("skipped", "b", "nginx/restart is already running") in r.events
    assert isinstance(r.prepare(Action("nginx", "reload"), name="b"), Run)  # another command


def test_an_unknown_command_is_refused_with_its_code():
    r = Recorder()
    refused = r.prepare(Action("nginx", "explode"))
    assert isinstance(refused, Refused)
    body = json.loads(refused.notification.message)
    assert body["task_id"] == refused.task_id == 100
    assert body["code"] == ResultCode.UNKNOWN_COMMAND
    assert r.pending == [] and r.emitted == []  # the engine emits it with its gate's bookkeeping
    assert isinstance(r.prepare(Action("nginx", "explode")), Refused)  # nothing was claimed


def test_no_services_and_unknown_service_have_their_own_codes():
    refused = Recorder(services=None).prepare()
    assert json.loads(refused.notification.message)["code"] == ResultCode.NO_SERVICES
    refused = Recorder().prepare(Action("apache", "restart"))
    assert json.loads(refused.notification.message)["code"] == ResultCode.UNKNOWN_SERVICE


def test_a_full_executor_reports_busy_and_frees_the_command():
    r = Recorder()

    def full(spec, done):
        raise Busy("64 commands already waiting")

    r.dispatcher.runner = full
    r.start(r.prepare())
    assert r.finished == ["rule"]
    (note,) = r.emitted
    body = json.loads(note.message)
    assert body["code"] == ResultCode.BUSY and "64 commands already waiting" in body["message"]
    assert isinstance(r.prepare(), Run)
