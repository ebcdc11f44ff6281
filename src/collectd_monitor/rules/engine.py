"""The local monitoring core: rules in, gated command runs and notifications out.

The collectd glue hands it metrics (with the rules the index found for them)
and notifications, and calls :meth:`Engine.tick` now and then for missing data
and for breakers to close. This module judges (per-series state, missing data,
notification faults, threshold verdicts, what handlers return); every judgement
goes to a gate in its base class :class:`~collectd_monitor.rules.acting.Acting`,
and the acting (command lookup, ``runner``, the result notification) is the
:class:`~collectd_monitor.rules.dispatch.Dispatcher`'s. Its clock is a
parameter, so every state machine can be driven without sleeping.

Python handlers are called without the lock held; rule state and gates change
under one lock, since collectd calls the write callback from several threads.
In collectd the handlers run on a :class:`~collectd_monitor.rules.worker.HandlerPool`
(see :meth:`Engine.use_pool`), never on collectd's own threads; without one
(``test-rules``, unit tests) they run inline, in the caller's thread.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from collectd_monitor.config import MonitorConfig
from collectd_monitor.rules import notify
from collectd_monitor.rules.acting import Acting, Entry, EntryRun
from collectd_monitor.rules.condition import SeriesState, is_missing, judged_value, step
from collectd_monitor.rules.declarative import NotificationRule, RuleSet, ValueRule
from collectd_monitor.rules.dispatch import Emit, Observer, Runner
from collectd_monitor.rules.gate import Gate
from collectd_monitor.rules.index import MetricIndex
from collectd_monitor.rules.model import Action, Metric, Notice, Outgoing, Severity
from collectd_monitor.rules.pyfiles import METRIC, NOTIFICATION, Handler, RuleFiles
from collectd_monitor.rules.threshold import Compiled, Plan
from collectd_monitor.rules.worker import HandlerPool

log = logging.getLogger("collectd_monitor.local")


def _identity(host: str, plugin: str, plugin_instance: str, type_: str, type_instance: str) -> str:
    """collectd's way to write a series: ``host/plugin-instance/type-instance``."""
    plugin = f"{plugin}-{plugin_instance}" if plugin_instance else plugin
    type_ = f"{type_}-{type_instance}" if type_instance else type_
    return f"{host}/{plugin}/{type_}"


def random_task_id() -> int:
    return random.randint(1, 2**32)


class Engine(Acting):
    """Judges values, notifications and handler returns; :class:`Acting` acts on it."""

    def __init__(
        self,
        config: MonitorConfig,
        rules: RuleSet,
        files: RuleFiles,
        *,
        runner: Runner,
        emit: Emit,
        clock: Callable[[], float] = time.monotonic,
        observe: Observer | None = None,
        new_task_id: Callable[[], int] = random_task_id,
        plan: Plan | None = None,
    ) -> None:
        super().__init__(
            config, runner, emit=emit, clock=clock, observe=observe, new_task_id=new_task_id
        )
        self.config = config
        self.plan = plan or Plan()
        compiled = {id(item.rule) for item in self.plan.compiled}
        self.python_rules = tuple(r for r in rules.values if id(r) not in compiled)
        """The value rules judged here, on values; the rest are the threshold plugin's."""
        self._missing_rules = tuple(r for r in self.python_rules if r.missing is not None)
        self._compiled_names: dict[tuple[str, ...], Compiled | None] = {}
        self.rules = rules
        self.files = files
        self.index = MetricIndex(self.python_rules)
        source = os.path.basename(config.source) if config.source else "config.json"
        self._entries: dict[int, Entry] = {}
        declared: list[tuple[str, ValueRule | NotificationRule]] = [
            *((METRIC, r) for r in rules.values),
            *((NOTIFICATION, r) for r in rules.notifications),
        ]
        for kind, rule in declared:
            name = f"{source}::{kind}::{rule.name}"
            self._entries[id(rule)] = Entry(name, Gate(rule.gate), rule.action)
        for handler in (*files.metric, *files.notification):
            self._entries[id(handler)] = Entry(handler.name, Gate(rules.defaults))
        self._started = clock()
        self._pool: HandlerPool | None = None

    def use_pool(self, pool: HandlerPool) -> None:
        """Hand rule-file handlers to ``pool`` instead of calling them inline."""
        self._pool = pool

    # -- what the glue needs to know ------------------------------------------------

    @property
    def wants_values(self) -> bool:
        return bool(self.python_rules or self.files.metric)

    @property
    def wants_notifications(self) -> bool:
        return bool(self.rules.notifications or self.files.notification or self.plan.compiled)

    @property
    def metric_handlers(self) -> bool:
        return bool(self.files.metric)

    def restart_clock(self) -> None:
        """Count "no value at all" from now (``test-rules``: from the first record)."""
        self._started = self.clock()

    # -- input -----------------------------------------------------------------------

    def on_metric(self, metric: Metric, rules: Iterable[ValueRule] = ()) -> None:
        now = self.clock()
        runs: list[EntryRun] = []
        out: list[Outgoing] = []
        with self._lock:
            for rule in rules:
                self._value_rule(rule, metric, now, runs, out)
        self._run_handlers(self.files.metric, metric, now, runs, out)
        self._flush(runs, out)

    def on_notification(
        self, notice: Notice, data_source: str | None = None, value: float | None = None
    ) -> None:
        """A notification; ``data_source`` is the ``DataSource`` meta data the threshold
        plugin attaches (None when absent): such a notification of a compiled rule's
        series is that rule's verdict and reaches no notification rule or handler."""
        if notice.plugin == notify.PLUGIN_NAME:
            return  # our own results never feed our own rules
        if data_source is not None and self.plan.compiled:
            item = self.compiled_for(notice)
            if item is not None:
                if data_source == item.data_source:
                    self.on_threshold(item, notice, data_source, value)
                return
        now = self.clock()
        runs: list[EntryRun] = []
        out: list[Outgoing] = []
        key = (
            notice.host,
            notice.plugin,
            notice.plugin_instance,
            notice.type,
            notice.type_instance,
        )
        with self._lock:
            for rule in self.rules.notifications:
                self._notification_rule(rule, notice, key, now, runs, out)
        self._run_handlers(self.files.notification, notice, now, runs, out)
        self._flush(runs, out)

    def compiled_for(self, notice: Notice) -> Compiled | None:
        key = (
            notice.host,
            notice.plugin,
            notice.plugin_instance,
            notice.type,
            notice.type_instance,
        )
        try:
            return self._compiled_names[key]
        except KeyError:
            found = self._compiled_names[key] = self.plan.find(*key)
            if len(self._compiled_names) > 200_000:
                self._compiled_names.clear()
            return found

    def on_threshold(
        self, item: Compiled, notice: Notice, data_source: str, value: float | None = None
    ) -> None:
        """The threshold plugin's verdict on a compiled rule's series: FAILURE starts a
        fault, OKAY ends it. While it lasts, :meth:`tick` reports it to the gate."""
        now = self.clock()
        runs: list[EntryRun] = []
        out: list[Outgoing] = []
        entry = self._entries[id(item.rule)]
        key = (
            notice.host,
            notice.plugin,
            notice.plugin_instance,
            notice.type,
            notice.type_instance,
            data_source,
        )
        where = f"{_identity(*key[:5])} {data_source}"
        if value is not None:
            where += f"={value:g}"
        with self._lock:
            entry.judged_at = now
            if notice.severity == Severity.OKAY:
                if key in entry.open_faults:
                    entry.open_faults.discard(key)
                    self._note(now, "recovered", entry.name, where)
                    log.info("%s: recovered (%s)", entry.name, where)
                self._judge(entry, False, now, runs, out, where)
            else:
                if key not in entry.open_faults:
                    entry.open_faults.add(key)
                    self._note(now, "fault", entry.name, where)
                self._judge(entry, True, now, runs, out, where)
        self._flush(runs, out)

    def _run_handlers(
        self,
        handlers: Iterable[Any],
        event: Metric | Notice,
        now: float,
        runs: list[EntryRun],
        out: list[Outgoing],
    ) -> None:
        """Call each rule-file handler on ``event`` and judge what it returned.

        With a pool, the handlers are only queued: the pool's workers call them
        and hand each result to :meth:`handled`.
        """
        if self._pool is not None:
            self._pool.submit(event, tuple(handlers))
            return
        for handler in handlers:
            action = self._call(handler, event, now)
            with self._lock:
                self._judge_handler(handler, action, now, runs, out)

    def call_handler(self, handler: Handler, event: Metric | Notice) -> Action | None:
        """Call one handler (on a pool worker); its errors are reported here."""
        return self._call(handler, event, self.clock())

    def handled(self, handler: Handler, event: Metric | Notice, action: Action | None) -> None:
        """Judge what a handler returned (on a pool worker) and start what it asks for."""
        now = self.clock()
        runs: list[EntryRun] = []
        out: list[Outgoing] = []
        with self._lock:
            self._judge_handler(handler, action, now, runs, out)
        self._flush(runs, out)

    def _judge_handler(
        self,
        handler: Handler,
        action: Action | None,
        now: float,
        runs: list[EntryRun],
        out: list[Outgoing],
    ) -> None:
        entry = self._entries[id(handler)]
        entry.action = action or entry.action
        reason = f"handler returned {action.label}" if action else ""
        self._judge(entry, action is not None, now, runs, out, reason)

    def tick(self, *, compiled: bool = True) -> None:
        """Missing data, open notification faults, breakers that may close; with
        ``compiled``, also the open faults of rules the threshold plugin judges."""
        now = self.clock()
        runs: list[EntryRun] = []
        out: list[Outgoing] = []
        with self._lock:
            for rule in self._missing_rules:
                self._missing(rule, now, runs, out)
            for note_rule in self.rules.notifications:
                entry = self._entries[id(note_rule)]
                if entry.open_faults:
                    self._judge(entry, True, now, runs, out, "fault notification not yet cleared")
            if compiled:
                self._recheck_compiled(now, runs, out)
            if self._suspended:  # no breaker open (the usual case): no entry to look at
                for entry in self._entries.values():
                    self._maybe_resume(entry, now, out)
        self._flush(runs, out)

    def recheck_compiled(self) -> None:
        """Report the open faults of compiled rules to their gates (a repair is retried
        once the cooldown is over, as the Python form does on the next value)."""
        now = self.clock()
        runs: list[EntryRun] = []
        out: list[Outgoing] = []
        with self._lock:
            self._recheck_compiled(now, runs, out)
        self._flush(runs, out)

    def _recheck_compiled(self, now: float, runs: list[EntryRun], out: list[Outgoing]) -> None:
        for item in self.plan.compiled:
            entry = self._entries[id(item.rule)]
            if entry.open_faults and entry.judged_at < now:
                self._judge(entry, True, now, runs, out, "threshold fault not yet cleared")

    # -- declarative rules ---------------------------------------------------------

    def _value_rule(
        self, rule: ValueRule, metric: Metric, now: float, runs: list[EntryRun], out: list[Outgoing]
    ) -> None:
        entry = self._entries[id(rule)]
        interval = metric.interval or rule.interval
        for i, raw in enumerate(metric.values):
            dsname = metric.dsnames[i] if i < len(metric.dsnames) else str(i)
            if rule.data_source is not None and not rule.data_source.matches(dsname):
                continue
            key = (
                metric.host,
                metric.plugin,
                metric.plugin_instance,
                metric.type,
                metric.type_instance,
                dsname,
            )
            state = entry.series.get(key)
            if state is None:
                state = entry.series[key] = SeriesState(last_seen=now, interval=interval)
            state.last_seen, state.interval = now, interval
            was = state.faulty or state.missing
            dstype = metric.dstypes[i] if i < len(metric.dstypes) else "gauge"
            value = judged_value(state, float(raw), dstype, metric.time, interval)
            if value is None:
                state.missing = False
                continue
            fault = step(rule, state, value)
            if not fault and not was:
                self._judge(entry, False, now, runs, out, "")  # the common case: no text
                continue
            where = f"{metric.identity} {dsname}={value:g}"
            if fault and not was:
                self._note(now, "fault", entry.name, where)
            elif was and not fault:
                self._note(now, "recovered", entry.name, where)
                log.info("%s: recovered (%s)", entry.name, where)
            self._judge(entry, fault, now, runs, out, where)

    def _missing(
        self, rule: ValueRule, now: float, runs: list[EntryRun], out: list[Outgoing]
    ) -> None:
        entry = self._entries[id(rule)]
        assert rule.missing is not None
        if not entry.series:
            limit = rule.missing * rule.interval
            if now - self._started > limit:
                self._judge(entry, True, now, runs, out, f"no value at all for {limit:g} s")
            return
        for key, state in entry.series.items():
            was = state.missing
            if is_missing(rule, state, now):
                series = _identity(*key[:5])
                what = f"no value from {series} {key[-1]} for {now - state.last_seen:.3g} s"
                if not was:
                    self._note(now, "fault", entry.name, what)
                self._judge(entry, True, now, runs, out, what)

    def _notification_rule(
        self,
        rule: NotificationRule,
        notice: Notice,
        key: tuple[str, ...],
        now: float,
        runs: list[EntryRun],
        out: list[Outgoing],
    ) -> None:
        if not rule.selector.matches(*key):
            return
        if rule.message is not None and not rule.message.matches(notice.message):
            return
        entry = self._entries[id(rule)]
        level = notice.severity
        where = Severity(level).name if level in (1, 2, 4) else str(level)
        where += f" from {_identity(*key)}: {notice.message[:80]}"
        if notice.severity in rule.severities:
            if rule.recover_on_okay:
                entry.open_faults.add(key)
            self._note(now, "fault", entry.name, where)
            self._judge(entry, True, now, runs, out, where)
        elif notice.severity == Severity.OKAY and key in entry.open_faults:
            entry.open_faults.discard(key)
            self._note(now, "recovered", entry.name, where)
            log.info("%s: recovered (%s)", entry.name, where)
            self._judge(entry, bool(entry.open_faults), now, runs, out, where)
