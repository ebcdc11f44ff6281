"""What collectd 5.12's ``threshold`` plugin would send for the compiled rules of a series.

``test-rules --compiled`` feeds a series through this model instead of the
Python conditions, then hands the notifications to the engine the way the
local plugin does inside collectd. The model follows ``threshold.c`` and
``utils_cache.c`` for what a compiled rule can use (see
:mod:`collectd_monitor.rules.threshold`): one state and one hit counter per
value list, starting *unknown*; rates from the cache (a derive's first value
is NaN); a value outside the data source's types.db range is NaN; NaN is
okay; ``Hits k`` reports at the (k+2)-th consecutive failing value; only
state changes are reported (``Persist false``), so the first value of a
series that is in range gives an OKAY notification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from collectd_monitor.rules.model import Metric, Severity
from collectd_monitor.rules.threshold import Compiled, Datasets, Plan

UNKNOWN, OKAY, ERROR = 0, 1, 3


@dataclass(frozen=True)
class ThresholdEvent:
    compiled: Compiled
    data_source: str
    severity: Severity
    value: float


@dataclass
class _State:
    state: int = UNKNOWN
    hits: int = 0
    prev_raw: float | None = None
    prev_time: float | None = None


class ThresholdModel:
    def __init__(self, plan: Plan, datasets: Datasets) -> None:
        self.plan = plan
        self.datasets = datasets
        self._states: dict[tuple[str, ...], _State] = {}

    def feed(self, metric: Metric) -> ThresholdEvent | None:
        item = self.plan.find(
            metric.host, metric.plugin, metric.plugin_instance, metric.type, metric.type_instance
        )
        if item is None:
            return None
        sources = self.datasets(metric.type) or ()
        names = [s[0] for s in sources]
        if item.data_source not in names or len(metric.values) != len(names):
            return None
        index = names.index(item.data_source)
        _, kind, low, high = sources[index]
        key = (
            metric.host,
            metric.plugin,
            metric.plugin_instance,
            metric.type,
            metric.type_instance,
        )
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
        elif state.prev_time is not None and metric.time <= state.prev_time:
            return None  # collectd drops it: "value too old"
        value = self._rate(state, kind, float(metric.values[index]), metric.time)
        if (not math.isnan(low) and value < low) or (not math.isnan(high) and value > high):
            value = math.nan
        return self._judge(item, state, value)

    @staticmethod
    def _rate(state: _State, kind: str, raw: float, time: float) -> float:
        prev_raw, prev_time = state.prev_raw, state.prev_time
        state.prev_raw, state.prev_time = raw, time
        if kind == "gauge":
            return raw
        if prev_raw is None or prev_time is None:
            return math.nan
        return (raw - prev_raw) / (time - prev_time)

    @staticmethod
    def _judge(item: Compiled, state: _State, value: float) -> ThresholdEvent | None:
        rule = item.rule
        slack = rule.hysteresis if rule.hysteresis > 0 and state.state == ERROR else 0.0
        failing = (rule.below is not None and rule.below + slack > value) or (
            rule.above is not None and rule.above - slack < value
        )
        new = ERROR if failing else OKAY
        if item.threshold_hits:
            if new == OKAY or state.hits > item.threshold_hits:
                state.hits = 0
            else:
                state.hits += 1
                return None
        if new == state.state:
            return None
        state.state = new
        severity = Severity.FAILURE if new == ERROR else Severity.OKAY
        return ThresholdEvent(item, item.data_source, severity, value)
