"""What the central engine keeps per value identity, so that a quiet value costs little
(and, for rules compiled to the threshold plugin, which rule a notification is about).

A central collectd calls the write callback 5 000 times a second, and almost
every value is quiet: inside its rule's limits, in a series that is neither in
fault nor missing. The first value of an identity (host, plugin,
plugin_instance, type, type_instance) is resolved once into a :class:`Watch`:
one :class:`Watched` entry per (rule, data source) that judges it, holding
that rule's per-host state and series state and the limits as plain floats.
Every later value of the identity is one dict lookup and, per entry, a few
attribute reads and two float comparisons; nothing is allocated and nothing
is formatted unless the series changes state (:meth:`CentralEngine.on_values
<collectd_monitor.fleetrules.engine.CentralEngine.on_values>`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from collectd_monitor.fleetrules.decide import HostRule
from collectd_monitor.fleetrules.memory import MAX_SERIES
from collectd_monitor.rules.condition import SeriesState
from collectd_monitor.rules.declarative import ValueRule
from collectd_monitor.rules.threshold import Compiled, Plan

Identity = tuple[str, str, str, str, str]
"""host, plugin, plugin_instance, type, type_instance"""


@dataclass(slots=True)
class Watched:
    """One rule judging one data source of one identity."""

    rule: ValueRule
    name: str
    host_rule: HostRule
    state: SeriesState
    index: int
    """Position of the data source in the value list."""
    dsname: str
    dstype: str
    below: float
    """The rule's ``Below``, or -inf."""
    above: float
    """The rule's ``Above``, or +inf."""


@dataclass(frozen=True, slots=True)
class Watch:
    """Every (rule, data source) that judges values of ``key``; ``items`` empty: none."""

    key: Identity
    size: int
    """The number of values it was made for (a value list of another size is re-resolved)."""
    dsnames: tuple[str, ...]
    dstypes: tuple[str, ...]
    items: tuple[Watched, ...]


class CompiledIndex:
    """The compiled rule a threshold notification of an identity belongs to (cached)."""

    def __init__(self, plan: Plan, max_cached: int) -> None:
        self.plan = plan
        self._cache: dict[Identity, Compiled | None] = {}
        self._max_cached = max_cached

    def find(self, key: Identity) -> Compiled | None:
        try:
            return self._cache[key]
        except KeyError:
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            found = self._cache[key] = self.plan.find(*key)
            return found


def watched_items(
    rules: Sequence[tuple[ValueRule, str, HostRule]],
    key: Identity,
    dsnames: Sequence[str],
    dstypes: Sequence[str],
    size: int,
    now: float,
) -> tuple[tuple[Watched, ...], list[str]]:
    """An entry per (rule, data source) for ``rules`` (each with its name and its state
    on the identity's host) over a value list of ``size`` values; and the names of the
    rules that could not keep a new series (:data:`~.memory.MAX_SERIES` reached)."""
    items: list[Watched] = []
    full: list[str] = []
    for rule, name, host_rule in rules:
        for i in range(size):
            dsname = dsnames[i] if i < len(dsnames) else str(i)
            if rule.data_source is not None and not rule.data_source.matches(dsname):
                continue
            dstype = dstypes[i] if i < len(dstypes) else "gauge"
            item = watched(rule, name, host_rule, key, i, dsname, dstype, now)
            if item is None:
                full.append(name)
            else:
                items.append(item)
    return tuple(items), full


def watched(
    rule: ValueRule,
    name: str,
    host_rule: HostRule,
    key: Identity,
    index: int,
    dsname: str,
    dstype: str,
    now: float,
) -> Watched | None:
    """The entry for ``rule`` on data source ``index`` of ``key``, with its series state
    (made here the first time the series is seen, as a value would); None for a new
    series when the host already has :data:`~.memory.MAX_SERIES` of this rule."""
    series = (*key[1:], dsname)
    state = host_rule.series.get(series)
    if state is None:
        if len(host_rule.series) >= MAX_SERIES:
            return None
        state = host_rule.series[series] = SeriesState(last_seen=now, interval=rule.interval)
    return Watched(
        rule,
        name,
        host_rule,
        state,
        index,
        dsname,
        dstype or "gauge",
        -math.inf if rule.below is None else rule.below,
        math.inf if rule.above is None else rule.above,
    )


def identity_text(key: Identity) -> str:
    """collectd's identifier ``host/plugin-instance/type-instance``."""
    host, plugin, plugin_instance, type_, type_instance = key
    plugin = f"{plugin}-{plugin_instance}" if plugin_instance else plugin
    type_ = f"{type_}-{type_instance}" if type_instance else type_
    return f"{host}/{plugin}/{type_}"
