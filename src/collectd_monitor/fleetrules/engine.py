"""The central detection core: every host's values in, repairs to the right host out.

The same declarative rules as local monitoring (``Rules``), judged with the
same pieces (:mod:`collectd_monitor.rules.condition` for hits, hysteresis and
missing data, :mod:`collectd_monitor.rules.gate` for cooldown and circuit
breaker), but every piece of state is kept per (rule, host): a fault on web3
counts hits, cools down and trips a breaker for web3 alone. Above the
per-host gates sit the fleet-wide limits (:mod:`.limits`), and presence: no
repair goes to a host whose status topic says it is offline.

A repair is a :class:`Repair` handed to ``send`` (the MQTT side, which signs
and publishes it to the host's command topic); the host's result comes back
through :meth:`CentralEngine.on_result`, matched by (host, task_id), or is
given up after ``ResultTimeout``. Every decision and result is handed to
``emit`` as a :class:`~collectd_monitor.fleetrules.notes.Note` and, when a
history is configured, to ``record``.

Detection in C: notification rules judge collectd notifications per host, so
collectd's ``threshold`` plugin (which takes per-``<Host>`` blocks and sets the
notification's host to the value's) can do the detection and a notification
rule only the repair. Rules compiled to ``<Plugin threshold>`` blocks can
therefore feed this engine through :meth:`CentralEngine.on_notification`
without changing it: give each compiled rule a notification rule with the
same name and action.

Nothing here blocks or sleeps; the clock is a parameter.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from collectd_monitor.codes import ResultCode
from collectd_monitor.fleet.history import RequestRecord, ResultRecord
from collectd_monitor.fleetrules import notes
from collectd_monitor.fleetrules.limits import FleetLimits
from collectd_monitor.fleetrules.notes import Note
from collectd_monitor.fleetrules.settings import CentralSettings
from collectd_monitor.rules.condition import SeriesState, is_missing, judged_value, step
from collectd_monitor.rules.declarative import NotificationRule, RuleSet, ValueRule
from collectd_monitor.rules.engine import random_task_id
from collectd_monitor.rules.gate import Gate, Verdict
from collectd_monitor.rules.index import MetricIndex
from collectd_monitor.rules.model import Action, Metric, Notice, Severity

log = logging.getLogger("collectd_monitor.central")

MIN_SCAN = 0.5
"""Seconds between two scans of a rule's series for missing data, at least."""

Observer = Callable[[float, str, str, str, str], None]
"""(time, event, rule name, host, text): what ``test-rules --central`` prints."""


@dataclass(frozen=True, slots=True)
class Repair:
    """A command to send to ``host``."""

    rule: str
    host: str
    action: Action
    task_id: int
    reason: str


@dataclass(slots=True)
class _HostRule:
    """One rule on one host."""

    series: dict[tuple[str, ...], SeriesState] = field(default_factory=dict)
    open_faults: set[tuple[str, ...]] = field(default_factory=set)
    gate: Gate | None = None
    """Made on the first fault: most (rule, host) pairs never need one."""
    refused: int | None = None
    """Code of the last refusal reported in this fault; each refusal is reported once."""
    silent: bool = False


@dataclass(slots=True)
class _Pending:
    repair: Repair
    sent_at: float
    gate: Gate


@dataclass(slots=True)
class _Presence:
    online: bool
    services: dict[str, list[str]] | None


class CentralEngine:
    def __init__(
        self,
        rules: RuleSet,
        settings: CentralSettings,
        *,
        send: Callable[[Repair], None],
        emit: Callable[[Note], None],
        record: Callable[[RequestRecord | ResultRecord], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        new_task_id: Callable[[], int] = random_task_id,
        observe: Observer | None = None,
        source: str | None = None,
    ) -> None:
        self.rules = rules
        self.settings = settings
        self.send = send
        self.emit = emit
        self.record = record
        self.clock = clock
        self.wall = wall
        self.new_task_id = new_task_id
        self.observe = observe
        self.index = MetricIndex(rules.values)
        self.limits = FleetLimits(settings.fleet)
        prefix = os.path.basename(source) if source else "config.json"
        self._names: dict[int, str] = {id(r): f"{prefix}::metric::{r.name}" for r in rules.values}
        self._names.update(
            {id(r): f"{prefix}::notification::{r.name}" for r in rules.notifications}
        )
        self._state: dict[int, dict[str, _HostRule]] = {id(r): {} for r in self._rules()}
        """rule -> host -> state"""
        self._presence: dict[str, _Presence] = {}
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._next_scan: dict[int, float] = {}
        self._lock = threading.Lock()

    def _rules(self) -> tuple[ValueRule | NotificationRule, ...]:
        return (*self.rules.values, *self.rules.notifications)

    @property
    def wants_values(self) -> bool:
        return bool(self.rules.values)

    @property
    def wants_notifications(self) -> bool:
        return bool(self.rules.notifications)

    def name(self, rule: ValueRule | NotificationRule) -> str:
        return self._names[id(rule)]

    def host_state(self, rule: ValueRule | NotificationRule, host: str) -> object | None:
        """The state of ``rule`` on ``host`` (for tests and the memory bench)."""
        return self._state[id(rule)].get(host)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- input ---------------------------------------------------------------------------

    def on_metric(self, metric: Metric, rules: Iterable[ValueRule]) -> None:
        now = self.clock()
        out: list[Note] = []
        sends: list[Repair] = []
        with self._lock:
            for rule in rules:
                self._value_rule(rule, metric, now, out, sends)
        self._flush(out, sends)

    def on_notification(self, notice: Notice) -> None:
        if notice.plugin == notes.PLUGIN_NAME:
            return  # our own decisions never feed our own rules
        now = self.clock()
        out: list[Note] = []
        sends: list[Repair] = []
        key = (notice.plugin, notice.plugin_instance, notice.type, notice.type_instance)
        with self._lock:
            for rule in self.rules.notifications:
                if not rule.selector.matches(notice.host, *key):
                    continue
                if rule.message is not None and not rule.message.matches(notice.message):
                    continue
                self._notification_rule(rule, notice, key, now, out, sends)
        self._flush(out, sends)

    def on_status(
        self, host: str, online: bool, services: dict[str, list[str]] | None, reason: str = ""
    ) -> None:
        """A host's status message (presence): online with its services, or offline."""
        out: list[Note] = []
        now = self.clock()
        with self._lock:
            before = self._presence.get(host)
            self._presence[host] = _Presence(online, services if online else None)
            if before is not None and before.online == online:
                return
            if online and before is None:
                return  # the normal case at start-up: not worth 1 000 notifications
            what = "online again" if online else f"offline ({reason or 'status offline'})"
            self._observe(now, "online" if online else "offline", notes.PRESENCE, host, what)
            (log.info if online else log.warning)("%s: %s", host, what)
            out.append(notes.presence(host, online, f"host {what}"))
        self._flush(out, [])

    def on_result(self, host: str, task_id: int, code: int, message: str) -> None:
        """A result on ``host``'s result topic; results of other senders are ignored."""
        now = self.clock()
        out: list[Note] = []
        with self._lock:
            pending = self._pending.pop((host, task_id), None)
            if pending is None:
                return
            self._finished(pending, code, message, now, out)
        self._flush(out, [])
        self._record(ResultRecord(task_id, host, code, message, self.wall(), None))

    def send_failed(self, repair: Repair, text: str) -> None:
        """The MQTT side could not hand ``repair`` to the broker."""
        now = self.clock()
        out: list[Note] = []
        with self._lock:
            pending = self._pending.pop((repair.host, repair.task_id), None)
            if pending is None:
                return
            self._finished(pending, ResultCode.CENTRAL_SEND_FAILED, text, now, out)
        self._flush(out, [])

    def tick(self) -> None:
        """Missing data, result timeouts, breakers and aborts that may lift."""
        now = self.clock()
        out: list[Note] = []
        sends: list[Repair] = []
        timed_out: list[_Pending] = []
        with self._lock:
            for key, pending in list(self._pending.items()):
                if now - pending.sent_at >= self.settings.result_timeout:
                    del self._pending[key]
                    timed_out.append(pending)
                    text = f"no result within {self.settings.result_timeout:g} s"
                    self._finished(pending, ResultCode.CENTRAL_NO_RESULT, text, now, out)
            for rule in self.rules.values:
                if rule.missing is not None and now >= self._next_scan.get(id(rule), now):
                    # a scan looks at every host's series: a quarter of the silence a
                    # rule waits for is soon enough, and keeps the scan off the hot path
                    self._next_scan[id(rule)] = now + max(
                        MIN_SCAN, rule.missing * rule.interval / 4
                    )
                    self._missing(rule, now, out, sends)
            for name in self._names.values():
                if self.limits.try_resume(name, now):
                    text = f"rule resumed after {self.settings.fleet.resume_after:g} s"
                    log.info("%s: %s", name, text)
                    self._observe(now, "resumed", name, "*", text)
                    out.append(notes.note(notes.FLEET, Severity.OKAY, name, 0, text))
            for rule_id, hosts in self._state.items():
                for host, state in hosts.items():
                    if state.gate is None or not state.gate.try_resume(now):
                        continue
                    name = self._names[rule_id]
                    quiet = state.gate.settings.resume_after
                    self._observe(now, "resumed", name, host, f"no fault for {quiet:g} s")
                    out.append(notes.resumed(host, name, quiet))
        self._flush(out, sends)
        for pending in timed_out:
            repair = pending.repair
            text = f"no result within {self.settings.result_timeout:g} s"
            self._record(ResultRecord(repair.task_id, repair.host, None, text, self.wall()))

    # -- rules -------------------------------------------------------------------------

    def _host_rule(self, rule: ValueRule | NotificationRule, host: str) -> _HostRule:
        hosts = self._state[id(rule)]
        state = hosts.get(host)
        if state is None:
            state = hosts[host] = _HostRule()
        return state

    def _value_rule(
        self, rule: ValueRule, metric: Metric, now: float, out: list[Note], sends: list[Repair]
    ) -> None:
        host_rule = self._host_rule(rule, metric.host)
        name = self.name(rule)
        if host_rule.silent:
            host_rule.silent = False
            self._observe(now, "values", name, metric.host, "values again")
        interval = metric.interval or rule.interval
        for i, raw in enumerate(metric.values):
            dsname = metric.dsnames[i] if i < len(metric.dsnames) else str(i)
            if rule.data_source is not None and not rule.data_source.matches(dsname):
                continue
            key = (metric.plugin, metric.plugin_instance, metric.type, metric.type_instance, dsname)
            state = host_rule.series.get(key)
            if state is None:
                state = host_rule.series[key] = SeriesState(last_seen=now, interval=interval)
            state.last_seen, state.interval = now, interval
            was = state.faulty or state.missing
            dstype = metric.dstypes[i] if i < len(metric.dstypes) else "gauge"
            value = judged_value(state, float(raw), dstype, metric.time, interval)
            if value is None:
                state.missing = False
                continue
            fault = step(rule, state, value)
            if not fault and not was:  # the common case: nothing to say, nothing to format
                host_rule.refused = None
                continue
            where = f"{metric.identity} {dsname}={value:g}"
            if fault and not was:
                self._observe(now, "fault", name, metric.host, where)
            elif was and not fault:
                self._observe(now, "recovered", name, metric.host, where)
            self._judge(rule, name, metric.host, host_rule, fault, now, out, sends, where)

    def _missing(self, rule: ValueRule, now: float, out: list[Note], sends: list[Repair]) -> None:
        name = self.name(rule)
        for host, host_rule in self._state[id(rule)].items():
            for key, state in host_rule.series.items():
                if not is_missing(rule, state, now):
                    continue
                what = f"no value from {host} {'/'.join(k for k in key if k)} for "
                what += f"{now - state.last_seen:.3g} s"
                if not host_rule.silent:
                    host_rule.silent = True
                    self._observe(now, "silent", name, host, what)
                    log.warning("%s: %s is silent: %s", name, host, what)
                    out.append(notes.silent(host, name, f"host silent: {what}"))
                self._judge(rule, name, host, host_rule, True, now, out, sends, what)
                break

    def _notification_rule(
        self,
        rule: NotificationRule,
        notice: Notice,
        key: tuple[str, ...],
        now: float,
        out: list[Note],
        sends: list[Repair],
    ) -> None:
        host_rule = self._host_rule(rule, notice.host)
        name = self.name(rule)
        level = notice.severity
        where = Severity(level).name if level in (1, 2, 4) else str(level)
        where += f": {notice.message[:80]}"
        if level in rule.severities:
            if rule.recover_on_okay:
                host_rule.open_faults.add(key)
            self._observe(now, "fault", name, notice.host, where)
            self._judge(rule, name, notice.host, host_rule, True, now, out, sends, where)
        elif level == Severity.OKAY and key in host_rule.open_faults:
            host_rule.open_faults.discard(key)
            self._observe(now, "recovered", name, notice.host, where)
            fault = bool(host_rule.open_faults)
            self._judge(rule, name, notice.host, host_rule, fault, now, out, sends, where)

    # -- decisions ---------------------------------------------------------------------

    def _judge(
        self,
        rule: ValueRule | NotificationRule,
        name: str,
        host: str,
        host_rule: _HostRule,
        fault: bool,
        now: float,
        out: list[Note],
        sends: list[Repair],
        reason: str,
    ) -> None:
        if not fault:
            host_rule.refused = None
            return
        gate = host_rule.gate
        if gate is None:
            gate = host_rule.gate = Gate(rule.gate)
        verdict = gate.report(now, True)
        if verdict is Verdict.TRIPPED:
            s = gate.settings
            self._observe(now, "suspended", name, host, f"{s.max_runs} runs in {s.window:g} s")
            out.append(notes.suspended(host, name, gate.last_task_id, s))
        elif verdict is Verdict.RUN:
            self._decide(rule, name, host, host_rule, gate, now, out, sends, reason)

    def _decide(
        self,
        rule: ValueRule | NotificationRule,
        name: str,
        host: str,
        host_rule: _HostRule,
        gate: Gate,
        now: float,
        out: list[Note],
        sends: list[Repair],
        reason: str,
    ) -> None:
        action = rule.action
        presence = self._presence.get(host)
        refusal: tuple[int, str] | None = None
        if presence is not None and not presence.online:
            refusal = (ResultCode.CENTRAL_HOST_OFFLINE, f"not sent: {host} is offline")
        elif (
            presence is not None
            and presence.services is not None
            and action.command not in presence.services.get(action.service, ())
        ):
            text = f"not sent: {host} does not offer {action.label}"
            refusal = (ResultCode.CENTRAL_NOT_OFFERED, text)
        if refusal is None:
            blocked = self.limits.blocked(name, host, now)
            if blocked is not None:
                refusal = (blocked.code, blocked.reason)
        if refusal is not None:
            code, text = refusal
            if host_rule.refused != code:
                host_rule.refused = code
                self._observe(
                    now,
                    "held" if code == ResultCode.CENTRAL_HELD else "refused",
                    name,
                    host,
                    f"{action.label}: {text} ({reason})",
                )
                log.warning("%s: %s: %s (%s)", name, host, text, reason)
                out.append(notes.refused(host, name, code, f"{action.label} {text}"))
            return
        host_rule.refused = None
        task_id = self.new_task_id()
        repair = Repair(name, host, action, task_id, reason)
        gate.started(now, task_id)
        self.limits.started(name, host, now)
        self._pending[(host, task_id)] = _Pending(repair, now, gate)
        self._observe(now, "send", name, host, f"task {task_id}: {action.label} ({reason})")
        log.info("%s: task %d: sending %s to %s (%s)", name, task_id, action.label, host, reason)
        out.append(notes.sent(host, name, task_id, action.label, reason))
        sends.append(repair)

    def _finished(
        self, pending: _Pending, code: int, message: str, now: float, out: list[Note]
    ) -> None:
        repair = pending.repair
        pending.gate.finished(now)
        tripped = self.limits.finished(repair.rule, code != 0, now)
        text = f"task {repair.task_id}: code {code}: {message[:100]}"
        self._observe(now, "result", repair.rule, repair.host, text)
        level = logging.INFO if code == 0 else logging.WARNING
        log.log(
            level,
            "%s: %s: task %d ended with code %d",
            repair.rule,
            repair.host,
            repair.task_id,
            code,
        )
        out.append(notes.result(repair.host, repair.rule, repair.task_id, code, message))
        if tripped is not None:
            log.error("%s: %s", repair.rule, tripped)
            self._observe(now, "aborted", repair.rule, "*", tripped)
            out.append(
                notes.note(
                    notes.FLEET, Severity.FAILURE, repair.rule, ResultCode.CENTRAL_ABORTED, tripped
                )
            )

    # -- output --------------------------------------------------------------------------

    def _flush(self, out: list[Note], sends: list[Repair]) -> None:
        for item in out:
            try:
                self.emit(item)
            except Exception:
                log.exception("cannot dispatch the notification for %s", item.type_instance)
        for repair in sends:
            self._record(
                RequestRecord(
                    repair.task_id,
                    repair.host,
                    "command",
                    repair.action.service,
                    repair.action.command,
                    sent_at=self.wall(),
                    sender=notes.PLUGIN_NAME,
                )
            )
            try:
                self.send(repair)
            except Exception as exc:
                log.exception("cannot send task %d to %s", repair.task_id, repair.host)
                self.send_failed(repair, f"not sent: {exc}")

    def _record(self, item: RequestRecord | ResultRecord) -> None:
        if self.record is None:
            return
        try:
            self.record(item)
        except Exception:
            log.exception("cannot record task %d in the history", item.task_id)

    def _observe(self, now: float, event: str, name: str, host: str, text: str) -> None:
        if self.observe is not None:
            self.observe(now, event, name, host, text)
