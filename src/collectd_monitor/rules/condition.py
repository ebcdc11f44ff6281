"""The state of one declarative value rule on one series (one data source).

Consecutive hits, hysteresis and missing data live here, apart from the
gate, so they can be tested value by value. Derive, counter and absolute data
sources are judged by their rate per second, as collectd's threshold plugin
does; a gauge by its value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from collectd_monitor.rules.declarative import ValueRule


@dataclass(slots=True)
class SeriesState:
    last_seen: float
    interval: float
    hits: int = 0
    faulty: bool = False
    missing: bool = False
    prev_raw: float | None = None
    prev_time: float | None = None


def judged_value(
    state: SeriesState, raw: float, dstype: str, time: float, interval: float
) -> float | None:
    """The number a rule compares: the value of a gauge, the rate of a counter.

    None when there is nothing to judge yet (a first counter value, a wrap, NaN).
    """
    if dstype == "gauge" or not dstype:
        return None if math.isnan(raw) else raw
    if dstype == "absolute":
        return raw / interval if interval > 0 else None
    prev_raw, prev_time = state.prev_raw, state.prev_time
    state.prev_raw, state.prev_time = raw, time
    if prev_raw is None or prev_time is None or time <= prev_time:
        return None
    if dstype == "counter" and raw < prev_raw:
        return None  # a wrap or a reset: skip one interval rather than guess
    return (raw - prev_raw) / (time - prev_time)


def beyond(rule: ValueRule, value: float) -> bool:
    return (rule.above is not None and value > rule.above) or (
        rule.below is not None and value < rule.below
    )


def back_inside(rule: ValueRule, value: float) -> bool:
    """Inside the limits by at least the hysteresis: a firing rule recovers."""
    return (rule.above is None or value <= rule.above - rule.hysteresis) and (
        rule.below is None or value >= rule.below + rule.hysteresis
    )


def step(rule: ValueRule, state: SeriesState, value: float) -> bool:
    """Feed one value; return whether the series is in fault afterwards."""
    state.missing = False
    if rule.above is None and rule.below is None:
        state.faulty = False  # a missing-data-only rule: a value is all it wants
        return False
    if state.faulty:
        if back_inside(rule, value):
            state.faulty = False
            state.hits = 0
        return state.faulty
    if beyond(rule, value):
        state.hits += 1
        if state.hits >= rule.hits:
            state.faulty = True
    else:
        state.hits = 0
    return state.faulty


def is_missing(rule: ValueRule, state: SeriesState, now: float) -> bool:
    if rule.missing is None:
        return False
    state.missing = now - state.last_seen > rule.missing * state.interval
    return state.missing
