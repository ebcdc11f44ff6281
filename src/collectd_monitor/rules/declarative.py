"""Declarative rules from config.json's ``Rules`` key: schema and parsing.

Schema (keys case-insensitive, every part optional)::

    "Rules": {
      "Defaults": {"Cooldown": 300, "MaxRuns": 3, "Window": 3600, "ResumeAfter": 600,
                   "HandlerTimeBudget": 1},
      "Values": [
        {"Name": "nginx-down",
         "Plugin": "processes", "PluginInstance": "nginx", "Type": "ps_count",
         "DataSource": "processes",
         "Below": 1, "Hits": 2, "Hysteresis": 0, "Missing": 3,
         "Action": {"Service": "nginx", "Command": "restart"}}
      ],
      "Notifications": [
        {"Name": "swap-threshold", "Plugin": "swap", "Severity": ["failure"],
         "Action": {"Service": "workers", "Command": "restart"}}
      ]
    }

A bad rule is reported (file, key, reason) and left out; the other rules run.
The gate settings (cooldown, circuit breaker) in ``Defaults`` also apply to
the handlers of Python rule files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from collectd_monitor.config import Service
from collectd_monitor.errors import ConfigError
from collectd_monitor.rules.matching import Pattern, Selector
from collectd_monitor.rules.model import Action, Severity


@dataclass(frozen=True)
class GateSettings:
    """How often a rule may run its command. The defaults are deliberately slow:
    a check that fails for good restarts a service three times an hour, not
    once per interval."""

    cooldown: float = 300.0
    """Seconds after a run ends before the rule may run again."""
    max_runs: int = 3
    """Runs allowed within ``window`` before the circuit breaker opens."""
    window: float = 3600.0
    resume_after: float = 600.0
    """An open breaker closes after the rule reported no fault for this long."""


@dataclass(frozen=True)
class ValueRule:
    name: str
    selector: Selector
    action: Action
    gate: GateSettings
    data_source: Pattern | None = None
    above: float | None = None
    below: float | None = None
    hits: int = 1
    """Consecutive values beyond the limit before the rule fires."""
    hysteresis: float = 0.0
    """A firing rule recovers only once the value is this far back inside the limit."""
    missing: int | None = None
    """No value for this many intervals is itself a fault."""
    interval: float = 10.0
    """The interval assumed for missing data until a value tells the real one."""


@dataclass(frozen=True)
class NotificationRule:
    name: str
    selector: Selector
    action: Action
    gate: GateSettings
    severities: frozenset[int] = frozenset({Severity.FAILURE})
    message: Pattern | None = None
    recover_on_okay: bool = True


@dataclass(frozen=True)
class RuleSet:
    values: tuple[ValueRule, ...] = ()
    notifications: tuple[NotificationRule, ...] = ()
    defaults: GateSettings = field(default_factory=GateSettings)
    errors: tuple[ConfigError, ...] = ()
    handler_time_budget: float = 1.0
    """Seconds a rule-file handler may take per call (``Defaults.HandlerTimeBudget``)."""


_SELECTOR_KEYS = {
    "host": "host",
    "plugin": "plugin",
    "plugininstance": "plugin_instance",
    "type": "type",
    "typeinstance": "type_instance",
}
_GATE_KEYS = {"cooldown", "maxruns", "window", "resumeafter"}
_VALUE_KEYS = {
    "name",
    "action",
    "datasource",
    "above",
    "below",
    "hits",
    "hysteresis",
    "missing",
    "interval",
    *_SELECTOR_KEYS,
    *_GATE_KEYS,
}
_NOTIFICATION_KEYS = {
    "name",
    "action",
    "severity",
    "message",
    "recover",
    *_SELECTOR_KEYS,
    *_GATE_KEYS,
}


class _Invalid(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _lower(obj: Mapping[str, Any], where: str, allowed: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or key.lower() not in allowed:
            raise _Invalid(f"{where}.{key}", "unknown key")
        out[key.lower()] = value
    return out


def _number(value: Any, key: str, *, minimum: float | None = None, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Invalid(key, f"expected a number, got {value!r}")
    if integer and float(value) != int(value):
        raise _Invalid(key, f"expected a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise _Invalid(key, f"must be at least {minimum:g}, got {value!r}")
    return float(value)


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(key, f"expected a string, got {value!r}")
    return value


def _gate(raw: Mapping[str, Any], where: str, base: GateSettings) -> GateSettings:
    window = _number(raw["window"], f"{where}.Window", minimum=0.001) if "window" in raw else None
    return GateSettings(
        cooldown=_number(raw["cooldown"], f"{where}.Cooldown", minimum=0)
        if "cooldown" in raw
        else base.cooldown,
        max_runs=int(_number(raw["maxruns"], f"{where}.MaxRuns", minimum=1, integer=True))
        if "maxruns" in raw
        else base.max_runs,
        window=window if window is not None else base.window,
        resume_after=_number(raw["resumeafter"], f"{where}.ResumeAfter", minimum=0)
        if "resumeafter" in raw
        else base.resume_after,
    )


def _selector(raw: Mapping[str, Any], where: str) -> Selector:
    fields = {
        attr: Pattern(_string(raw[key], f"{where}.{key}"))
        for key, attr in _SELECTOR_KEYS.items()
        if key in raw
    }
    return Selector(**fields)


def _action(raw: Mapping[str, Any], where: str, services: Mapping[str, Service]) -> Action:
    if "action" not in raw:
        raise _Invalid(f"{where}.Action", 'missing: {"Service": ..., "Command": ...}')
    body = raw["action"]
    if not isinstance(body, Mapping):
        raise _Invalid(f"{where}.Action", 'expected {"Service": ..., "Command": ...}')
    fields = _lower(body, f"{where}.Action", {"service", "command"})
    if "service" not in fields or "command" not in fields:
        raise _Invalid(f"{where}.Action", "needs both Service and Command")
    action = Action(
        _string(fields["service"], f"{where}.Action.Service"),
        _string(fields["command"], f"{where}.Action.Command"),
    )
    service = services.get(action.service)
    if service is None:
        raise _Invalid(f"{where}.Action.Service", f"no service {action.service!r} in Services")
    if action.command not in service.commands:
        raise _Invalid(
            f"{where}.Action.Command",
            f"service {action.service!r} has no command {action.command!r}",
        )
    return action


def _name(raw: Mapping[str, Any], where: str, seen: set[str]) -> str:
    if "name" not in raw:
        raise _Invalid(f"{where}.Name", "missing (every rule needs a unique name)")
    name = _string(raw["name"], f"{where}.Name").strip()
    if not name or "::" in name:
        raise _Invalid(f"{where}.Name", "must be non-empty and must not contain '::'")
    if name in seen:
        raise _Invalid(f"{where}.Name", f"{name!r} is used by another rule")
    return name


def parse_value_rule(
    body: Any, where: str, services: Mapping[str, Service], defaults: GateSettings, seen: set[str]
) -> ValueRule:
    if not isinstance(body, Mapping):
        raise _Invalid(where, "expected an object")
    raw = _lower(body, where, _VALUE_KEYS)
    name = _name(raw, where, seen)
    above = _number(raw["above"], f"{where}.Above") if "above" in raw else None
    below = _number(raw["below"], f"{where}.Below") if "below" in raw else None
    missing = raw.get("missing")
    if missing is not None:
        missing = int(_number(missing, f"{where}.Missing", minimum=1, integer=True))
    if above is None and below is None and missing is None:
        raise _Invalid(where, "needs Above, Below or Missing")
    if above is not None and below is not None and below >= above:
        raise _Invalid(f"{where}.Below", "must be less than Above (a fault is outside them)")
    source = raw.get("datasource")
    rule = ValueRule(
        name=name,
        selector=_selector(raw, where),
        action=_action(raw, where, services),
        gate=_gate(raw, where, defaults),
        data_source=Pattern(_string(source, f"{where}.DataSource")) if source is not None else None,
        above=above,
        below=below,
        hits=int(_number(raw.get("hits", 1), f"{where}.Hits", minimum=1, integer=True)),
        hysteresis=_number(raw.get("hysteresis", 0), f"{where}.Hysteresis", minimum=0),
        missing=missing,
        interval=_number(raw.get("interval", 10), f"{where}.Interval", minimum=0.001),
    )
    seen.add(name)
    return rule


def parse_notification_rule(
    body: Any, where: str, services: Mapping[str, Service], defaults: GateSettings, seen: set[str]
) -> NotificationRule:
    if not isinstance(body, Mapping):
        raise _Invalid(where, "expected an object")
    raw = _lower(body, where, _NOTIFICATION_KEYS)
    name = _name(raw, where, seen)
    severity = raw.get("severity", ["failure"])
    items = severity if isinstance(severity, list) else [severity]
    try:
        severities = frozenset(int(Severity.parse(item)) for item in items)
    except ValueError as exc:
        raise _Invalid(f"{where}.Severity", str(exc)) from None
    if not severities:
        raise _Invalid(f"{where}.Severity", "lists no severity")
    message = raw.get("message")
    recover = raw.get("recover", True)
    if not isinstance(recover, bool):
        raise _Invalid(f"{where}.Recover", "expected true or false")
    rule = NotificationRule(
        name=name,
        selector=_selector(raw, where),
        action=_action(raw, where, services),
        gate=_gate(raw, where, defaults),
        severities=severities,
        message=Pattern(_string(message, f"{where}.Message")) if message is not None else None,
        recover_on_okay=recover,
    )
    seen.add(name)
    return rule


def parse_rules(
    value: Any, services: Mapping[str, Service], *, source: str | None = None
) -> RuleSet:
    """Parse the ``Rules`` key. Bad rules land in ``errors``; the rest are kept."""
    if value is None:
        return RuleSet()
    errors: list[ConfigError] = []

    def fail(exc: _Invalid) -> None:
        errors.append(ConfigError(str(exc), path=source, key=exc.key))

    if not isinstance(value, Mapping):
        fail(_Invalid("Rules", 'expected an object {"Defaults", "Values", "Notifications"}'))
        return RuleSet(errors=tuple(errors))
    try:
        top = _lower(value, "Rules", {"defaults", "values", "notifications"})
        defaults_raw = top.get("defaults", {})
        if not isinstance(defaults_raw, Mapping):
            raise _Invalid("Rules.Defaults", "expected an object")
        lowered = _lower(defaults_raw, "Rules.Defaults", {*_GATE_KEYS, "handlertimebudget"})
        defaults = _gate(lowered, "Rules.Defaults", GateSettings())
        budget = lowered.get("handlertimebudget", RuleSet.handler_time_budget)
        budget = _number(budget, "Rules.Defaults.HandlerTimeBudget", minimum=0.01)
    except _Invalid as exc:
        fail(exc)
        return RuleSet(errors=tuple(errors))
    seen: set[str] = set()
    parsed: dict[str, list[Any]] = {"values": [], "notifications": []}
    parsers: dict[str, Callable[..., Any]] = {
        "values": parse_value_rule,
        "notifications": parse_notification_rule,
    }
    for key, parser in parsers.items():
        items = top.get(key, [])
        label = "Rules." + key.capitalize()
        if not isinstance(items, Sequence) or isinstance(items, str):
            fail(_Invalid(label, "expected a list of rules"))
            continue
        for i, body in enumerate(items):
            try:
                parsed[key].append(parser(body, f"{label}[{i}]", services, defaults, seen))
            except _Invalid as exc:
                fail(exc)
    return RuleSet(
        values=tuple(parsed["values"]),
        notifications=tuple(parsed["notifications"]),
        defaults=defaults,
        errors=tuple(errors),
        handler_time_budget=budget,
    )
