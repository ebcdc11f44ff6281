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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collectd_monitor.errors import ConfigError
from collectd_monitor.rules.matching import Pattern, Selector
from collectd_monitor.rules.model import Action, Severity
from collectd_monitor.schema import Section, as_bool, as_float, as_str, integer, number
from collectd_monitor.services import Service


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
    "Host": "host",
    "Plugin": "plugin",
    "PluginInstance": "plugin_instance",
    "Type": "type",
    "TypeInstance": "type_instance",
}
_GATE_KEYS = ("Cooldown", "MaxRuns", "Window", "ResumeAfter")
_COMMON_KEYS = ("Name", "Action", *_SELECTOR_KEYS, *_GATE_KEYS)
_VALUE_KEYS = (
    *_COMMON_KEYS,
    "DataSource",
    "Above",
    "Below",
    "Hits",
    "Hysteresis",
    "Missing",
    "Interval",
)
_NOTIFICATION_KEYS = (*_COMMON_KEYS, "Severity", "Message", "Recover")

_non_negative = number(minimum=0)
_window = number(minimum=0.001)
_count = integer(minimum=1)


def _severities(value: Any) -> frozenset[int]:
    items = value if isinstance(value, list) else [value]
    severities = frozenset(int(Severity.parse(item)) for item in items)
    if not severities:
        raise ValueError("lists no severity")
    return severities


def _pattern(rule: Section, key: str) -> Pattern | None:
    text = rule.get(key, as_str)
    return Pattern(text) if text is not None else None


def _gate(section: Section, base: GateSettings) -> GateSettings:
    return GateSettings(
        cooldown=section.get("Cooldown", _non_negative, base.cooldown),
        max_runs=section.get("MaxRuns", _count, base.max_runs),
        window=section.get("Window", _window, base.window),
        resume_after=section.get("ResumeAfter", _non_negative, base.resume_after),
    )


def _selector(rule: Section) -> Selector:
    patterns = {attr: _pattern(rule, key) for key, attr in _SELECTOR_KEYS.items()}
    return Selector(**{attr: pattern for attr, pattern in patterns.items() if pattern is not None})


def _action(rule: Section, services: Mapping[str, Service] | None) -> Action:
    body = rule.section("Action")
    if body is None:
        raise rule.error('missing: {"Service": ..., "Command": ...}', "Action")
    body.reject_unknown(("Service", "Command"))
    if "Service" not in body or "Command" not in body:
        raise body.error("needs both Service and Command")
    action = Action(body.require("Service", as_str), body.require("Command", as_str))
    if services is None:  # central rules: the command runs on the host the value came from
        return action
    service = services.get(action.service)
    if service is None:
        raise body.error(f"no service {action.service!r} in Services", "Service")
    if action.command not in service.commands:
        raise body.error(f"service {action.service!r} has no command {action.command!r}", "Command")
    return action


def _name(rule: Section, seen: set[str]) -> str:
    name = rule.require("Name", as_str, "missing (every rule needs a unique name)").strip()
    if not name or "::" in name:
        raise rule.error("must be non-empty and must not contain '::'", "Name")
    if name in seen:
        raise rule.error(f"{name!r} is used by another rule", "Name")
    return name


def parse_value_rule(
    rule: Section, services: Mapping[str, Service] | None, defaults: GateSettings, seen: set[str]
) -> ValueRule:
    rule.reject_unknown(_VALUE_KEYS)
    name = _name(rule, seen)
    above = rule.get("Above", as_float)
    below = rule.get("Below", as_float)
    missing = rule.get("Missing", _count)
    if above is None and below is None and missing is None:
        raise rule.error("needs Above, Below or Missing")
    if above is not None and below is not None and below >= above:
        raise rule.error("must be less than Above (a fault is outside them)", "Below")
    parsed = ValueRule(
        name=name,
        selector=_selector(rule),
        action=_action(rule, services),
        gate=_gate(rule, defaults),
        data_source=_pattern(rule, "DataSource"),
        above=above,
        below=below,
        hits=rule.get("Hits", _count, 1),
        hysteresis=rule.get("Hysteresis", _non_negative, 0.0),
        missing=missing,
        interval=rule.get("Interval", _window, 10.0),
    )
    seen.add(name)
    return parsed


def parse_notification_rule(
    rule: Section, services: Mapping[str, Service] | None, defaults: GateSettings, seen: set[str]
) -> NotificationRule:
    rule.reject_unknown(_NOTIFICATION_KEYS)
    name = _name(rule, seen)
    parsed = NotificationRule(
        name=name,
        selector=_selector(rule),
        action=_action(rule, services),
        gate=_gate(rule, defaults),
        severities=rule.get("Severity", _severities, frozenset({int(Severity.FAILURE)})),
        message=_pattern(rule, "Message"),
        recover_on_okay=rule.get("Recover", as_bool, True),
    )
    seen.add(name)
    return parsed


RuleParser = Callable[
    [Section, Mapping[str, Service] | None, GateSettings, set[str]], ValueRule | NotificationRule
]


def parse_rules(
    value: Section | Mapping[str, Any] | None,
    services: Mapping[str, Service] | None,
    *,
    source: str | None = None,
) -> RuleSet:
    """Parse the ``Rules`` key. Bad rules land in ``errors``; the rest are kept.

    ``services`` None leaves actions unchecked (the central plugin's rules name
    commands of other hosts, which it checks against their presence instead).
    """
    if value is None:
        return RuleSet()
    try:
        top = Section.of(value, source=source, path="Rules")
        top.reject_unknown(("Defaults", "Values", "Notifications"))
        defaults_section = top.section_or_empty("Defaults")
        defaults_section.reject_unknown((*_GATE_KEYS, "HandlerTimeBudget"))
        defaults = _gate(defaults_section, GateSettings())
        budget = defaults_section.get(
            "HandlerTimeBudget", number(minimum=0.01), RuleSet.handler_time_budget
        )
    except ConfigError as exc:
        return RuleSet(errors=(exc,))
    errors: list[ConfigError] = []
    seen: set[str] = set()
    parsed: dict[str, list[Any]] = {"Values": [], "Notifications": []}
    parsers: dict[str, RuleParser] = {
        "Values": parse_value_rule,
        "Notifications": parse_notification_rule,
    }
    for key, parser in parsers.items():
        try:
            items = top.elements(key)
        except ConfigError as exc:
            errors.append(exc)
            continue
        for path, body in items:
            try:
                rule = Section.of(body, source=top.source, path=path)
                parsed[key].append(parser(rule, services, defaults, seen))
            except ConfigError as exc:
                errors.append(exc)
    return RuleSet(
        values=tuple(parsed["Values"]),
        notifications=tuple(parsed["Notifications"]),
        defaults=defaults,
        errors=tuple(errors),
        handler_time_budget=budget,
    )
