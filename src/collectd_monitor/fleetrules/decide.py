"""The decisions of central detection: a fault on one host becomes a repair, or does not.

:class:`Decider` takes "rule R is in fault on host H" from the engine and
applies, in order, the per-(rule, host) gate (one run at a time, cooldown,
circuit breaker), the host's presence (no repair to an offline host, nor a
command it does not offer) and the fleet-wide limits (:mod:`.limits`). What it
decides goes out as :class:`~collectd_monitor.fleetrules.notes.Note` items and
:class:`Repair` items in the lists the caller passes, so that the caller sends
them after releasing its lock. It also matches results to the repairs in
flight.

Not thread-safe: the engine holds its lock around every call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from collectd_monitor.codes import ResultCode
from collectd_monitor.fleetrules import notes
from collectd_monitor.fleetrules.limits import FleetLimits
from collectd_monitor.fleetrules.notes import Note
from collectd_monitor.fleetrules.settings import FleetSettings
from collectd_monitor.rules.condition import SeriesState
from collectd_monitor.rules.declarative import NotificationRule, ValueRule
from collectd_monitor.rules.gate import Gate, Verdict
from collectd_monitor.rules.model import Action, Notice, Severity

log = logging.getLogger("collectd_monitor.central")

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
class HostRule:
    """One rule on one host."""

    series: dict[tuple[str, ...], SeriesState] = field(default_factory=dict)
    open_faults: set[tuple[str, ...]] = field(default_factory=set)
    gate: Gate | None = None
    """Made on the first fault: most (rule, host) pairs never need one."""
    refused: int | None = None
    """Code of the last refusal reported in this fault; each refusal is reported once."""
    silent: bool = False
    judged_at: float = float("-inf")
    """When the threshold plugin last reported on this rule and host (a compiled rule)."""


@dataclass(slots=True)
class Pending:
    repair: Repair
    sent_at: float
    gate: Gate


@dataclass(slots=True)
class Presence:
    online: bool
    services: dict[str, list[str]] | None


class Decider:
    def __init__(
        self,
        fleet: FleetSettings,
        new_task_id: Callable[[], int],
        observe: Callable[[float, str, str, str, str], None],
        max_hosts: int = 10_000,
    ) -> None:
        self.limits = FleetLimits(fleet)
        self.max_hosts = max_hosts
        """Hosts whose presence is kept at most (a host beyond it counts as reachable)."""
        self.new_task_id = new_task_id
        self.observe = observe
        self.presence: dict[str, Presence] = {}
        self.faulty: dict[str, dict[str, None]] = {}
        """compiled rule name -> hosts with an open threshold fault (what :meth:`recheck`
        looks at, instead of every host)."""
        self.suspended: dict[str, set[str]] = {}
        """rule name -> hosts whose circuit breaker of that rule is open (what
        :meth:`resume_hosts` looks at, instead of every host)."""
        self.pending: dict[tuple[str, int], Pending] = {}

    def status(
        self, host: str, online: bool, services: dict[str, list[str]] | None, reason: str
    ) -> str | None:
        """Record a host's status; the text to report when it changed, else None."""
        before = self.presence.get(host)
        if before is None and len(self.presence) >= self.max_hosts:
            log.error(
                "MaxHosts %d reached: the status of %s is not kept (it counts as reachable)",
                self.max_hosts,
                host,
            )
            return None
        self.presence[host] = Presence(online, services if online else None)
        if before is not None and before.online == online:
            return None
        if online and before is None:
            return None  # the normal case at start-up: not worth 1 000 notifications
        return "online again" if online else f"offline ({reason or 'status offline'})"

    def judge(
        self,
        rule: ValueRule | NotificationRule,
        name: str,
        host: str,
        host_rule: HostRule,
        fault: bool,
        now: float,
        out: list[Note],
        sends: list[Repair],
        reason: str,
    ) -> None:
        """Report fault or no fault of ``rule`` on ``host`` to its gate, and act on it."""
        if not fault:
            host_rule.refused = None
            return
        gate = host_rule.gate
        if gate is None:
            gate = host_rule.gate = Gate(rule.gate)
        verdict = gate.report(now, True)
        if verdict is Verdict.TRIPPED:
            self.suspended.setdefault(name, set()).add(host)
            s = gate.settings
            self.observe(now, "suspended", name, host, f"{s.max_runs} runs in {s.window:g} s")
            out.append(notes.suspended(host, name, gate.last_task_id, s))
        elif verdict is Verdict.RUN:
            self._decide(rule.action, name, host, host_rule, gate, now, out, sends, reason)

    def threshold(
        self,
        rule: ValueRule,
        name: str,
        host: str,
        host_rule: HostRule,
        series: tuple[str, ...],
        severity: int,
        now: float,
        where: str,
    ) -> None:
        """The threshold plugin's verdict on a compiled rule's series of ``host``: FAILURE
        opens a fault, OKAY ends it; :meth:`recheck` reports an open fault again."""
        host_rule.judged_at = now
        if severity == Severity.OKAY:
            if series in host_rule.open_faults:
                host_rule.open_faults.discard(series)
                self.observe(now, "recovered", name, host, where)
                if not host_rule.open_faults:
                    self.faulty.get(name, {}).pop(host, None)
        elif series not in host_rule.open_faults:
            host_rule.open_faults.add(series)
            self.faulty.setdefault(name, {})[host] = None
            self.observe(now, "fault", name, host, where)

    def recheck(
        self,
        rule: ValueRule,
        name: str,
        hosts: dict[str, HostRule],
        now: float,
        out: list[Note],
        sends: list[Repair],
    ) -> None:
        """Report the open faults of a compiled rule to their gates again (its Python
        form does so on every faulty value: a repair is retried after the cooldown)."""
        faulty = self.faulty.get(name)
        if not faulty:
            return
        for host in list(faulty):  # in the order their faults opened
            host_rule = hosts.get(host)
            if host_rule is None or not host_rule.open_faults:
                del faulty[host]
            elif host_rule.judged_at < now:
                reason = "threshold fault not yet cleared"
                self.judge(rule, name, host, host_rule, True, now, out, sends, reason)

    def missing(
        self,
        rule: ValueRule,
        name: str,
        hosts: dict[str, HostRule],
        now: float,
        out: list[Note],
        sends: list[Repair],
    ) -> None:
        """Scan every host's series of ``rule`` for missing data.

        The test of :func:`is_missing`, inlined: this loop visits every series of
        the fleet. A value resets ``state.missing``, so only a silent series is
        written to.
        """
        periods = rule.missing
        if periods is None:
            return
        for host, host_rule in hosts.items():
            for key, state in host_rule.series.items():
                if now - state.last_seen <= periods * state.interval:
                    continue
                state.missing = True
                what = f"no value from {host} {'/'.join(k for k in key if k)} for "
                what += f"{now - state.last_seen:.3g} s"
                if not host_rule.silent:
                    host_rule.silent = True
                    self.observe(now, "silent", name, host, what)
                    log.warning("%s: %s is silent: %s", name, host, what)
                    out.append(notes.silent(host, name, f"host silent: {what}"))
                self.judge(rule, name, host, host_rule, True, now, out, sends, what)
                break

    def resume_rule(self, name: str, now: float, out: list[Note]) -> None:
        """Let rule ``name`` act again once its abort has lasted ``ResumeAfter``."""
        if self.limits.try_resume(name, now):
            text = f"rule resumed after {self.limits.settings.resume_after:g} s"
            log.info("%s: %s", name, text)
            self.observe(now, "resumed", name, "*", text)
            out.append(notes.note(notes.FLEET, Severity.OKAY, name, 0, text))

    def resume_hosts(
        self, name: str, hosts: dict[str, HostRule], now: float, out: list[Note]
    ) -> None:
        """Close the per-host circuit breakers of rule ``name`` that may close."""
        open_ = self.suspended.get(name)
        if not open_:
            return
        for host in list(open_):
            state = hosts.get(host)
            if state is None or state.gate is None or not state.gate.suspended:
                open_.discard(host)  # forgotten, or closed some other way
                continue
            if not state.gate.try_resume(now):
                continue
            open_.discard(host)
            quiet = state.gate.settings.resume_after
            self.observe(now, "resumed", name, host, f"no fault for {quiet:g} s")
            out.append(notes.resumed(host, name, quiet))

    def notification(
        self,
        rule: NotificationRule,
        name: str,
        host_rule: HostRule,
        notice: Notice,
        key: tuple[str, ...],
        now: float,
        out: list[Note],
        sends: list[Repair],
    ) -> None:
        """A notification that ``rule`` selects: a fault of its severities, or an OKAY
        that ends one (with ``Recover``)."""
        level, host = notice.severity, notice.host
        where = Severity(level).name if level in (1, 2, 4) else str(level)
        where += f": {notice.message[:80]}"
        if level in rule.severities:
            if rule.recover_on_okay:
                host_rule.open_faults.add(key)
            self.observe(now, "fault", name, host, where)
            self.judge(rule, name, host, host_rule, True, now, out, sends, where)
        elif level == Severity.OKAY and key in host_rule.open_faults:
            host_rule.open_faults.discard(key)
            self.observe(now, "recovered", name, host, where)
            fault = bool(host_rule.open_faults)
            self.judge(rule, name, host, host_rule, fault, now, out, sends, where)

    def _refusal(self, action: Action, name: str, host: str, now: float) -> tuple[int, str] | None:
        presence = self.presence.get(host)
        if presence is not None and not presence.online:
            return (ResultCode.CENTRAL_HOST_OFFLINE, f"not sent: {host} is offline")
        if (
            presence is not None
            and presence.services is not None
            and action.command not in presence.services.get(action.service, ())
        ):
            return (
                ResultCode.CENTRAL_NOT_OFFERED,
                f"not sent: {host} does not offer {action.label}",
            )
        blocked = self.limits.blocked(name, host, now)
        if blocked is not None:
            return (blocked.code, blocked.reason)
        return None

    def _decide(
        self,
        action: Action,
        name: str,
        host: str,
        host_rule: HostRule,
        gate: Gate,
        now: float,
        out: list[Note],
        sends: list[Repair],
        reason: str,
    ) -> None:
        refusal = self._refusal(action, name, host, now)
        if refusal is not None:
            code, text = refusal
            if host_rule.refused != code:
                host_rule.refused = code
                event = "held" if code == ResultCode.CENTRAL_HELD else "refused"
                self.observe(now, event, name, host, f"{action.label}: {text} ({reason})")
                log.warning("%s: %s: %s (%s)", name, host, text, reason)
                out.append(notes.refused(host, name, code, f"{action.label} {text}"))
            return
        host_rule.refused = None
        task_id = self.new_task_id()
        repair = Repair(name, host, action, task_id, reason)
        gate.started(now, task_id)
        self.limits.started(name, host, now)
        self.pending[(host, task_id)] = Pending(repair, now, gate)
        self.observe(now, "send", name, host, f"task {task_id}: {action.label} ({reason})")
        log.info("%s: task %d: sending %s to %s (%s)", name, task_id, action.label, host, reason)
        out.append(notes.sent(host, name, task_id, action.label, reason))
        sends.append(repair)

    def finished(
        self, pending: Pending, code: int, message: str, now: float, out: list[Note]
    ) -> None:
        """A repair in flight ended (its result, a timeout, or a failed send)."""
        repair = pending.repair
        pending.gate.finished(now)
        tripped = self.limits.finished(repair.rule, code != 0, now)
        text = f"task {repair.task_id}: code {code}: {message[:100]}"
        self.observe(now, "result", repair.rule, repair.host, text)
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
            self.observe(now, "aborted", repair.rule, "*", tripped)
            out.append(
                notes.note(
                    notes.FLEET, Severity.FAILURE, repair.rule, ResultCode.CENTRAL_ABORTED, tripped
                )
            )
