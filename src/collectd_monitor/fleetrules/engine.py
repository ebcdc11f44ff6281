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

Detection in C: value rules that :mod:`collectd_monitor.rules.threshold`
compiles (a ``Host`` given exactly or left out) are judged by collectd's
``threshold`` plugin on the central collectd, which puts the value's host in
its notifications; their FAILURE and OKAY notifications come in through
:meth:`CentralEngine.on_notification` (``data_source`` set) and reach the same
per-(rule, host) gates and decisions (:mod:`.decide`). Only the other value
rules are judged here, value by value (:mod:`.watch` keeps that cheap).

Nothing here blocks or sleeps; the clock is a parameter.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from collectd_monitor.codes import ResultCode
from collectd_monitor.fleet.history import RequestRecord, ResultRecord
from collectd_monitor.fleetrules import memory, notes
from collectd_monitor.fleetrules.decide import Decider, HostRule, Observer, Pending, Repair
from collectd_monitor.fleetrules.notes import Note
from collectd_monitor.fleetrules.outlet import Outlet
from collectd_monitor.fleetrules.settings import CentralSettings
from collectd_monitor.fleetrules.watch import (
    CompiledIndex,
    Identity,
    Watch,
    Watched,
    identity_text,
    watched_items,
)
from collectd_monitor.rules.condition import judged_value, step
from collectd_monitor.rules.declarative import NotificationRule, RuleSet, ValueRule
from collectd_monitor.rules.engine import random_task_id
from collectd_monitor.rules.index import MetricIndex
from collectd_monitor.rules.model import Metric, Notice, Severity
from collectd_monitor.rules.threshold import Compiled, Plan

__all__ = ["CentralEngine", "Observer", "Repair"]

log = logging.getLogger("collectd_monitor.central")

MIN_SCAN = 0.5
"""Seconds between two scans of a rule's series for missing data, at least."""
MAX_WATCHED = 200_000
"""Identities remembered at most (a fleet with churning series: start over, stay bounded)."""


class CentralEngine(Outlet):
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
        plan: Plan | None = None,
    ) -> None:
        self.rules = rules
        self.settings = settings
        self.send = send
        self.emit = emit
        self.record = record
        self.clock = clock
        self.wall = wall
        self.observe = observe
        self.plan = plan or Plan()
        compiled = {id(item.rule) for item in self.plan.compiled}
        self.python_rules = tuple(r for r in rules.values if id(r) not in compiled)
        """The value rules judged here, value by value; the rest are the threshold plugin's."""
        self.index = MetricIndex(self.python_rules)
        self.decider = Decider(settings.fleet, new_task_id, self._observe, settings.max_hosts)
        self.limits = self.decider.limits
        prefix = os.path.basename(source) if source else "config.json"
        self._names: dict[int, str] = {id(r): f"{prefix}::metric::{r.name}" for r in rules.values}
        self._names.update(
            {id(r): f"{prefix}::notification::{r.name}" for r in rules.notifications}
        )
        self._state: dict[int, dict[str, HostRule]] = {id(r): {} for r in self._rules()}
        """rule -> host -> state"""
        self.watches: dict[Identity, Watch] = {}
        """identity -> what judges its values (:meth:`watch`); cleared, never replaced."""
        self._compiled = CompiledIndex(self.plan, MAX_WATCHED)
        self._next_scan: dict[int, float] = {}
        self.book = memory.StateBook(settings.max_hosts, settings.forget_after)
        """Hosts with rule state, the caps (``MaxHosts``) and what forgetting needs."""
        self._next_sweep = clock() + self.book.sweep_every
        self._lock = threading.Lock()

    def _rules(self) -> tuple[ValueRule | NotificationRule, ...]:
        return (*self.rules.values, *self.rules.notifications)

    @property
    def wants_values(self) -> bool:
        return bool(self.python_rules)

    @property
    def wants_notifications(self) -> bool:
        return bool(self.rules.notifications or self.plan.compiled)

    def name(self, rule: ValueRule | NotificationRule) -> str:
        return self._names[id(rule)]

    def host_state(self, rule: ValueRule | NotificationRule, host: str) -> object | None:
        """The state of ``rule`` on ``host`` (for tests and the memory bench)."""
        return self._state[id(rule)].get(host)

    @property
    def in_flight(self) -> int:
        return len(self.decider.pending)

    # -- values ------------------------------------------------------------------------

    def watch(self, key: Identity, dsnames: Sequence[str], dstypes: Sequence[str]) -> Watch:
        """What judges values of ``key`` (remembered in :attr:`watches`); the caller
        passes the type's data source names and types."""
        return self._watch(key, tuple(dsnames), tuple(dstypes), len(dsnames))

    def _watch(
        self, key: Identity, dsnames: tuple[str, ...], dstypes: tuple[str, ...], size: int
    ) -> Watch:
        rules = self.index.matching(key)
        items: tuple[Watched, ...] = ()
        if rules:
            now = self.clock()
            with self._lock:
                hosts: list[tuple[ValueRule, str, HostRule]] = []
                for r in rules:
                    host_rule = self._host_rule(r, key[0], now)
                    if host_rule is not None:
                        hosts.append((r, self.name(r), host_rule))
                items, full = watched_items(hosts, key, dsnames, dstypes, size, now)
                for name in full:
                    self.book.series_full(name, key[0], now)
        found = Watch(key, size, dsnames, dstypes, items)
        if len(self.watches) >= MAX_WATCHED:
            self.watches.clear()
        self.watches[key] = found
        return found

    def on_metric(self, metric: Metric) -> None:
        """A value list as a dataclass (``test-rules``, tests); the plugin calls
        :meth:`on_values` with collectd's fields instead."""
        m = metric
        key = (m.host, m.plugin, m.plugin_instance, m.type, m.type_instance)
        found = self.watches.get(key) or self.watch(key, metric.dsnames, metric.dstypes)
        if found.items:
            self.on_values(found, metric.time, metric.interval, metric.values)

    def on_values(
        self, found: Watch, time_: float, interval: float, values: Sequence[float]
    ) -> None:
        """Judge one value list of ``found.key``. A quiet value (inside the limits, in a
        series neither faulty nor missing) updates its series state and nothing else."""
        if len(values) != found.size:
            found = self._watch(found.key, found.dsnames, found.dstypes, len(values))
        now = self.clock()
        out: list[Note] | None = None
        sends: list[Repair] = []
        with self._lock:
            for item in found.items:
                state = item.state
                if item.host_rule.silent:
                    item.host_rule.silent = False
                    self._observe(now, "values", item.name, found.key[0], "values again")
                state.last_seen = now
                state.interval = interval or item.rule.interval
                raw = values[item.index]
                if item.dstype == "gauge":
                    if raw != raw:  # NaN: nothing to judge
                        state.missing = False
                        continue
                    value = raw
                else:
                    judged = judged_value(state, float(raw), item.dstype, time_, state.interval)
                    if judged is None:
                        state.missing = False
                        continue
                    value = judged
                if item.below <= value <= item.above and not (state.faulty or state.missing):
                    state.hits = 0  # the common case: nothing to say, nothing to format
                    item.host_rule.refused = None
                    continue
                if out is None:
                    out = []
                self._series_value(found.key, item, value, now, out, sends)
        if out is not None:
            self._flush(out, sends)

    def _series_value(
        self,
        key: Identity,
        item: Watched,
        value: float,
        now: float,
        out: list[Note],
        sends: list[Repair],
    ) -> None:
        state, host_rule, name = item.state, item.host_rule, item.name
        was = state.faulty or state.missing
        fault = step(item.rule, state, value)
        if not fault and not was:
            host_rule.refused = None
            return
        where = f"{identity_text(key)} {item.dsname}={value:g}"
        if fault and not was:
            self._observe(now, "fault", name, key[0], where)
        elif was and not fault:
            self._observe(now, "recovered", name, key[0], where)
        self.decider.judge(item.rule, name, key[0], host_rule, fault, now, out, sends, where)

    # -- notifications -------------------------------------------------------------------

    def on_notification(
        self, notice: Notice, data_source: str | None = None, value: float | None = None
    ) -> None:
        """A notification; ``data_source`` is the ``DataSource`` meta data the threshold
        plugin attaches: such a notification of a compiled rule's series is that rule's
        verdict on the notification's host and reaches no notification rule."""
        if notice.plugin == notes.PLUGIN_NAME:
            return  # our own decisions never feed our own rules
        key = (notice.plugin, notice.plugin_instance, notice.type, notice.type_instance)
        if data_source is not None and self.plan.compiled:
            item = self._compiled.find((notice.host, *key))
            if item is not None:
                if data_source == item.data_source:
                    self._threshold(item, notice, key, data_source, value)
                return
        now = self.clock()
        out: list[Note] = []
        sends: list[Repair] = []
        with self._lock:
            for rule in self.rules.notifications:
                if not rule.selector.matches(notice.host, *key):
                    continue
                if rule.message is not None and not rule.message.matches(notice.message):
                    continue
                host_rule = self._host_rule(rule, notice.host, now)
                if host_rule is None:
                    continue
                host_rule.judged_at = now
                self.decider.notification(
                    rule, self.name(rule), host_rule, notice, key, now, out, sends
                )
        self._flush(out, sends)

    def _threshold(
        self,
        item: Compiled,
        notice: Notice,
        key: tuple[str, str, str, str],
        data_source: str,
        value: float | None,
    ) -> None:
        """The threshold plugin's verdict on a compiled rule's series of ``notice.host``:
        FAILURE starts a fault, OKAY ends it; :meth:`tick` reports an open fault again."""
        now = self.clock()
        out: list[Note] = []
        sends: list[Repair] = []
        rule, host, series = item.rule, notice.host, (*key, data_source)
        name = self.name(rule)
        where = f"{identity_text((host, *key))} {data_source}"
        if value is not None:
            where += f"={value:g}"
        with self._lock:
            if notice.severity == Severity.OKAY and host not in self._state[id(rule)]:
                return  # the first value of a series (or one long forgotten): nothing to end
            host_rule = self._host_rule(rule, host, now)
            if host_rule is None:
                return
            self.decider.threshold(rule, name, host, host_rule, series, notice.severity, now, where)
            fault = bool(host_rule.open_faults)
            self.decider.judge(rule, name, host, host_rule, fault, now, out, sends, where)
        self._flush(out, sends)

    # -- status and results --------------------------------------------------------------

    def on_status(
        self, host: str, online: bool, services: dict[str, list[str]] | None, reason: str = ""
    ) -> None:
        """A host's status message (presence): online with its services, or offline."""
        now = self.clock()
        with self._lock:
            what = self.decider.status(host, online, services, reason)
        if what is None:
            return
        self._observe(now, "online" if online else "offline", notes.PRESENCE, host, what)
        (log.info if online else log.warning)("%s: %s", host, what)
        self._flush([notes.presence(host, online, f"host {what}")], [])

    def on_result(self, host: str, task_id: int, code: int, message: str) -> None:
        """A result on ``host``'s result topic; results of other senders are ignored."""
        now = self.clock()
        out: list[Note] = []
        with self._lock:
            pending = self.decider.pending.pop((host, task_id), None)
            if pending is None:
                return
            self.decider.finished(pending, code, message, now, out)
        self._flush(out, [])
        self._record(ResultRecord(task_id, host, code, message, self.wall(), None))

    def send_failed(self, repair: Repair, text: str) -> None:
        """The MQTT side could not hand ``repair`` to the broker."""
        now = self.clock()
        out: list[Note] = []
        with self._lock:
            pending = self.decider.pending.pop((repair.host, repair.task_id), None)
            if pending is None:
                return
            self.decider.finished(pending, ResultCode.CENTRAL_SEND_FAILED, text, now, out)
        self._flush(out, [])

    # -- periodic ------------------------------------------------------------------------

    def tick(self) -> None:
        """Missing data, open threshold faults, result timeouts, breakers and aborts."""
        now = self.clock()
        out: list[Note] = []
        sends: list[Repair] = []
        timed_out: list[Pending] = []
        timeout = self.settings.result_timeout
        with self._lock:
            pending_items = self.decider.pending
            for key, pending in list(pending_items.items()):
                if now - pending.sent_at >= timeout:
                    del pending_items[key]
                    timed_out.append(pending)
                    text = f"no result within {timeout:g} s"
                    self.decider.finished(pending, ResultCode.CENTRAL_NO_RESULT, text, now, out)
            for rule in self.python_rules:
                if rule.missing is not None and now >= self._next_scan.get(id(rule), now):
                    # a scan looks at every host's series: a quarter of the silence a
                    # rule waits for is soon enough, and keeps the scan off the hot path
                    self._next_scan[id(rule)] = now + max(
                        MIN_SCAN, rule.missing * rule.interval / 4
                    )
                    hosts = self._state[id(rule)]
                    self.decider.missing(rule, self.name(rule), hosts, now, out, sends)
            for item in self.plan.compiled:
                hosts = self._state[id(item.rule)]
                self.decider.recheck(item.rule, self.name(item.rule), hosts, now, out, sends)
            self._resume(now, out)
            if now >= self._next_sweep:
                self._next_sweep = now + self.book.sweep_every
                self._sweep(now)
        self._flush(out, sends)
        for pending in timed_out:
            repair = pending.repair
            text = f"no result within {timeout:g} s"
            self._record(ResultRecord(repair.task_id, repair.host, None, text, self.wall()))

    def _resume(self, now: float, out: list[Note]) -> None:
        for name in self._names.values():
            self.decider.resume_rule(name, now, out)
        for rule_id, name in self._names.items():
            self.decider.resume_hosts(name, self._state[rule_id], now, out)

    def _host_rule(
        self, rule: ValueRule | NotificationRule, host: str, now: float
    ) -> HostRule | None:
        """The state of ``rule`` on ``host``, made when new; None when ``MaxHosts`` is
        reached and ``host`` is not one of the hosts kept."""
        hosts = self._state[id(rule)]
        state = hosts.get(host)
        if state is None:
            if not self.book.admit(host, now):
                return None
            state = hosts[host] = HostRule()
        return state

    def _sweep(self, now: float) -> None:
        """Forget the state of hosts (and series) gone silent (:func:`.memory.sweep`)."""
        memory.sweep(self.book, self._rules(), self._state, self.watches, now)
