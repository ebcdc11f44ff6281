"""Keeping the central engine's rule state bounded: a cap on hosts, and forgetting the silent.

The engine keeps one :class:`~collectd_monitor.fleetrules.decide.HostRule` per
(rule, host) and in it one series state per series the rule has seen. A fleet
whose hosts come and go (autoscaling, renamed machines, a mistyped
``Hostname``) would grow that for ever. Two bounds:

* **forgetting**: a series not heard from for ``ForgetAfter`` seconds (for a
  rule with ``Missing``, at least :data:`MISSING_FACTOR` times its
  missing-data timeout, so the host's silence has been reported and acted on
  first) is dropped, and so is a (rule, host) state left with no series, no
  open fault, no repair in flight and no notification for as long;
* **a cap**: at most ``MaxHosts`` hosts have rule state; the values and
  notifications of a host beyond it are not judged, and a log line says so
  (at most once per :data:`CAP_LOG_EVERY` seconds). Each (rule, host) keeps
  at most :data:`MAX_SERIES` series, with the same kind of log line.

Not thread-safe: the engine holds its lock around every call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from collectd_monitor.fleetrules.decide import HostRule
from collectd_monitor.rules.declarative import NotificationRule, ValueRule

if TYPE_CHECKING:  # watch imports this module
    from collectd_monitor.fleetrules.watch import Watch

log = logging.getLogger("collectd_monitor.central")

MISSING_FACTOR = 3.0
"""A series of a ``Missing`` rule is kept at least this many missing-data timeouts."""
MAX_SERIES = 1_000
"""Series one rule keeps per host at most."""
CAP_LOG_EVERY = 60.0
"""Seconds between two log lines about the same cap."""
SWEEP_EVERY = 60.0
"""Seconds between two sweeps for state to forget, at most."""

SeriesKey = tuple[str, ...]
"""plugin, plugin_instance, type, type_instance, data source"""


class StateBook:
    """Which hosts have rule state (how many (rule, host) states each), and the caps."""

    def __init__(self, max_hosts: int, forget_after: float) -> None:
        self.max_hosts = max_hosts
        self.forget_after = forget_after
        self.sweep_every = min(SWEEP_EVERY, forget_after / 4)
        self.hosts: dict[str, int] = {}
        self.refused_hosts = 0
        """New hosts turned away by the cap since the last sweep (or log line)."""
        self.refused_series = 0
        self._logged: dict[str, float] = {}

    def admit(self, host: str, now: float) -> bool:
        """Whether a new (rule, host) state may be made for ``host`` (counted when True)."""
        count = self.hosts.get(host)
        if count is None:
            if len(self.hosts) >= self.max_hosts:
                self.refused_hosts += 1
                if self._may_log("hosts", now):
                    log.error(
                        "MaxHosts %d reached: %d new host(s) not judged, the last %s "
                        "(rule state is kept for %d hosts; raise MaxHosts or shard the "
                        "fleet over more central collectds)",
                        self.max_hosts,
                        self.refused_hosts,
                        host,
                        len(self.hosts),
                    )
                return False
            count = 0
        self.hosts[host] = count + 1
        return True

    def series_full(self, name: str, host: str, now: float) -> None:
        """A new series of ``name`` on ``host`` was not kept: MAX_SERIES reached."""
        self.refused_series += 1
        if self._may_log("series", now):
            log.error(
                "%s: %s has %d series of this rule (the most kept per host): %d new "
                "series not judged",
                name,
                host,
                MAX_SERIES,
                self.refused_series,
            )
            self.refused_series = 0

    def released(self, host: str) -> None:
        count = self.hosts.get(host, 0) - 1
        if count > 0:
            self.hosts[host] = count
        else:
            self.hosts.pop(host, None)

    def _may_log(self, what: str, now: float) -> bool:
        if now < self._logged.get(what, float("-inf")) + CAP_LOG_EVERY:
            return False
        self._logged[what] = now
        return True

    def series_age(self, rule: ValueRule | NotificationRule, interval: float) -> float:
        """Seconds of silence after which a series of ``rule`` is forgotten."""
        missing = rule.missing if isinstance(rule, ValueRule) else None
        if missing is None:
            return self.forget_after
        return max(self.forget_after, MISSING_FACTOR * missing * interval)


def forget(
    book: StateBook,
    rule: ValueRule | NotificationRule,
    hosts: dict[str, HostRule],
    now: float,
    dropped: list[tuple[str, SeriesKey]],
) -> int:
    """Drop what ``rule`` keeps of hosts gone silent; the (host, series) dropped are
    added to ``dropped``; returns the number of (rule, host) states dropped."""
    gone: list[str] = []
    for host, state in hosts.items():
        series = state.series
        if series:
            old = [
                key
                for key, s in series.items()
                if now - s.last_seen > book.series_age(rule, s.interval)
            ]
            for key in old:
                del series[key]
                dropped.append((host, key))
            if old and series:
                state.series = dict(series)  # a dict never shrinks its table
        if idle(state, now, book.forget_after):
            gone.append(host)
    for host in gone:
        del hosts[host]
        book.released(host)
    return len(gone)


def idle(state: HostRule, now: float, forget_after: float) -> bool:
    """Nothing left to remember: no series, no open fault, no repair in flight, and no
    notification of this (rule, host) for ``forget_after`` seconds."""
    if state.series or state.open_faults:
        return False
    if state.gate is not None and state.gate.running:
        return False
    return now - state.judged_at > forget_after


def identities(dropped: Iterable[tuple[str, SeriesKey]]) -> set[tuple[str, str, str, str, str]]:
    """The value identities (host, plugin, plugin_instance, type, type_instance) of
    dropped series."""
    return {(host, key[0], key[1], key[2], key[3]) for host, key in dropped}


def sweep(
    book: StateBook,
    rules: Sequence[ValueRule | NotificationRule],
    states: dict[int, dict[str, HostRule]],
    watches: dict[tuple[str, str, str, str, str], Watch],
    now: float,
) -> None:
    """Forget the state of hosts (and series) gone silent; drop the remembered
    identities (``watches``) that point at it, so a host that comes back starts afresh."""
    dropped: list[tuple[str, SeriesKey]] = []
    forgotten = 0
    for rule in rules:
        hosts = states[id(rule)]
        gone = forget(book, rule, hosts, now, dropped)
        if gone:
            states[id(rule)] = dict(hosts)  # a dict never shrinks its table
        forgotten += gone
    for key in identities(dropped):
        watches.pop(key, None)
    if book.refused_hosts and forgotten:
        # hosts turned away by MaxHosts were remembered with nothing to judge
        for key in list(watches):
            found = watches.get(key)
            if found is not None and not found.items:
                watches.pop(key, None)
        book.refused_hosts = 0
    if dropped or forgotten:
        # the plugin holds this very dict: copy, clear (frees its table), refill
        kept = dict(watches)
        watches.clear()
        watches.update(kept)
        log.info(
            "forgot %d series and %d (rule, host) state(s) not heard from for %g s or "
            "more; %d host(s) kept",
            len(dropped),
            forgotten,
            book.forget_after,
            len(book.hosts),
        )
