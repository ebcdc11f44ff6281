"""Declarative value rules compiled to collectd's own C ``threshold`` plugin.

A Python write callback is what makes local monitoring expensive on a busy
collectd: every value crosses into Python. collectd's ``threshold`` plugin
judges values in C and dispatches a notification when a series changes state,
so a value rule it can express exactly costs what the C plugin costs, and the
local plugin only handles the (rare) notifications.

"Exactly" means: the rule fires for the same value of the same series as its
Python form (:mod:`collectd_monitor.rules.condition`). What collectd 5.12's
threshold plugin does, read from its source and checked on a real collectd:

* a threshold needs a ``Type``; ``Host``, ``Plugin`` (with ``Instance``) and
  the type's ``Instance`` are exact strings, an empty or missing one means
  *any*, and only the **most specific** block applies to a value (several
  blocks of the same identity: only the worst state is reported). So a rule
  compiles only with exact, non-empty selectors and a ``Type``, and only when
  no other compiled rule can match the same value;
* its state (and hit counter) belongs to the value list, the worst of its
  data sources: exact only for one data source (``DataSource`` named, or a
  type with one data source);
* rates come from collectd's cache: a ``derive`` rate is the same as ours; a
  ``counter`` that wraps or resets gets a (huge) wrap-around rate where we
  skip one interval, and an ``absolute`` value is divided by the time since
  the previous value where we divide by the interval: neither compiles;
* the cache turns a value outside the types.db range of its data source (a
  derive rate below 0, say) into NaN, and so does ``U``; NaN is *okay* to the
  threshold plugin (it resets the hits and ends a fault), while the Python
  form skips NaN and judges out-of-range values as they are. This is the one
  difference left: equality holds for values collectd considers valid, which
  is what ``test-rules --compiled`` models and the tests check;
* ``Hits k`` fires at the (k+2)-th consecutive value beyond the limit (``Hits
  0``, the default, at the first): our ``Hits`` 1 compiles to no ``Hits``,
  ``Hits n`` (n >= 3) to ``Hits n-2``; ``Hits 2`` has no counterpart;
* ``Hysteresis h`` keeps a failing series failing until it is ``h`` inside the
  limit: the same as ours;
* missing data (``Interesting`` with the global ``Timeout``) is checked once
  per global ``Interval`` and never reports a series that has not sent a
  value yet: a rule with ``Missing`` stays in Python. Every compiled rule gets
  ``Interesting false``.

The compiled block uses ``FailureMax``/``FailureMin`` only: a fault is a
FAILURE notification, its end an OKAY one (never WARNING).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from collectd_monitor.rules.declarative import ValueRule
from collectd_monitor.rules.matching import Pattern, Selector

DataSource = tuple[str, str, float, float]
"""One data source of a type: name, type (``gauge``...), min, max (NaN: none)."""
Datasets = Callable[[str], Sequence[DataSource] | None]
"""``type -> its data sources``, or None for a type collectd does not know."""

COMPILABLE_TYPES = ("gauge", "derive")
_UNSAFE = ('"', "\\", "\n", "/")


def read_types_db_ranges(path: str) -> dict[str, tuple[DataSource, ...]]:
    """``type -> data sources`` (name, type, min, max) from a collectd types.db file."""
    found: dict[str, tuple[DataSource, ...]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            parts = line.split(None, 1)
            if len(parts) < 2 or parts[0].startswith("#"):
                continue
            sources: list[DataSource] = []
            for spec in parts[1].split(","):
                fields = spec.strip().split(":")
                if len(fields) != 4:
                    continue
                name, kind, low, high = fields
                sources.append((name, kind.lower(), _bound(low), _bound(high)))
            found[parts[0]] = tuple(sources)
    return found


def _bound(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan  # "U": no limit


@dataclass(frozen=True)
class Compiled:
    """A rule the threshold plugin judges, with what its block needs."""

    rule: ValueRule
    data_source: str
    """The one data source it judges."""
    threshold_hits: int
    """``Hits`` for the threshold block (0: leave it out)."""


@dataclass(frozen=True)
class Kept:
    """A rule that stays in Python, and why."""

    rule: ValueRule
    reason: str


@dataclass(frozen=True)
class Plan:
    compiled: tuple[Compiled, ...] = ()
    kept: tuple[Kept, ...] = ()
    central: bool = False
    """Made for the central plugin (its block's comment names ``--central``)."""

    @property
    def block(self) -> str:
        return threshold_block(self.compiled, central=self.central)

    @property
    def digest(self) -> str:
        """Names the compiled block: the plugin compares it with the ``ThresholdRules``
        of its ``<Module>`` block, so a block pasted for other rules is never trusted."""
        if not self.compiled:
            return ""
        return hashlib.sha256(self.block.encode()).hexdigest()[:16]

    def find(
        self, host: str, plugin: str, plugin_instance: str, type_: str, type_instance: str
    ) -> Compiled | None:
        """The compiled rule a threshold notification of this identity belongs to."""
        for item in self.compiled:
            if item.rule.selector.matches(host, plugin, plugin_instance, type_, type_instance):
                return item
        return None


def _exact(pattern: Pattern | None, what: str) -> str | None:
    """Why ``pattern`` cannot be a threshold selector, or None if it can."""
    if pattern is None:
        return None
    if pattern.wild:
        return f"{what} {pattern.text!r} is a wildcard (threshold blocks match exact names)"
    if not pattern.text:
        return f"{what} is empty (an empty name means 'any' to the threshold plugin)"
    if any(c in pattern.text for c in _UNSAFE):
        return f"{what} {pattern.text!r} contains a character collectd names cannot carry"
    return None


MISSING = (
    "Missing: the threshold plugin checks missing values once per global Interval "
    "against the global Timeout and never reports a series that sent nothing; "
    "the firing time would differ"
)
HITS_2 = (
    "Hits 2 (the threshold plugin's Hits k fires at the (k+2)-th value: "
    "1, 3, 4... compile, 2 does not)"
)
OVERLAP = (
    "can match the same values as rule {other!r} "
    "(the threshold plugin applies only the most specific block)"
)


def _selector_problem(rule: ValueRule) -> str | None:
    sel = rule.selector
    if sel.type is None:
        return "no Type (every threshold block names a type)"
    for pattern, what in (
        (sel.host, "Host"),
        (sel.plugin, "Plugin"),
        (sel.plugin_instance, "PluginInstance"),
        (sel.type, "Type"),
        (sel.type_instance, "TypeInstance"),
        (rule.data_source, "DataSource"),
    ):
        reason = _exact(pattern, what)
        if reason:
            return reason
    if sel.plugin_instance is not None and sel.plugin is None:
        return "PluginInstance without Plugin (a threshold Instance lives in a Plugin block)"
    for pattern, what in ((sel.plugin, "Plugin"), (sel.type, "Type")):
        if pattern is not None and "-" in pattern.text:
            return f"{what} {pattern.text!r} contains '-' (ambiguous in collectd's identifiers)"
    return None


def _source(rule: ValueRule, datasets: Datasets) -> DataSource | str:
    """The one data source the rule judges, or why there is not exactly one."""
    assert rule.selector.type is not None
    type_ = rule.selector.type.text
    sources = datasets(type_)
    if not sources:
        return f"type {type_!r} is not in types.db"
    if rule.data_source is not None:
        chosen = [s for s in sources if s[0] == rule.data_source.text]
        if not chosen:
            return f"type {type_!r} has no data source {rule.data_source.text!r}"
        return chosen[0]
    if len(sources) == 1:
        return sources[0]
    return (
        f"type {type_!r} has {len(sources)} data sources and no DataSource is named "
        "(the threshold plugin keeps one state for all of them)"
    )


def _why_not(rule: ValueRule, datasets: Datasets) -> Compiled | str:
    """The rule as the threshold plugin would judge it, or why it cannot."""
    if rule.missing is not None:
        return MISSING
    problem = _selector_problem(rule)
    if problem:
        return problem
    source = _source(rule, datasets)
    if isinstance(source, str):
        return source
    name, kind, _low, _high = source
    if kind not in COMPILABLE_TYPES:
        return (
            f"data source {name!r} is a {kind} (the threshold plugin's {kind} rate "
            "differs from ours on wraps or uneven intervals)"
        )
    if rule.hits == 2:
        return HITS_2
    for limit in (rule.above, rule.below):
        if limit is not None and not math.isfinite(limit):
            return "a limit is not a finite number"
    return Compiled(rule, name, 0 if rule.hits == 1 else rule.hits - 2)


def _overlap(a: Selector, b: Selector) -> bool:
    """Whether one value can match both (exact-or-any selectors)."""
    for x, y in (
        (a.host, b.host),
        (a.plugin, b.plugin),
        (a.plugin_instance, b.plugin_instance),
        (a.type, b.type),
        (a.type_instance, b.type_instance),
    ):
        if x is not None and y is not None and x.text != y.text:
            return False
    return True


def compile_rules(rules: Iterable[ValueRule], datasets: Datasets, *, central: bool = False) -> Plan:
    """Split ``rules`` into those the threshold plugin judges exactly and the rest.

    ``central``: for the central plugin, whose rules judge every host's values; a
    ``Host`` given exactly becomes a ``<Host>`` block, one left out matches any host,
    and a host pattern keeps the rule in Python (as any wildcard does)."""
    candidates: list[Compiled] = []
    kept: list[Kept] = []
    for rule in rules:
        verdict = _why_not(rule, datasets)
        if isinstance(verdict, Compiled):
            candidates.append(verdict)
        else:
            kept.append(Kept(rule, verdict))
    by_type: dict[str, list[Compiled]] = {}
    for item in candidates:
        assert item.rule.selector.type is not None
        by_type.setdefault(item.rule.selector.type.text, []).append(item)
    clash: dict[int, str] = {}
    for group in by_type.values():
        if len(group) > 1:
            _clashes(group, clash)
    compiled = tuple(c for c in candidates if id(c) not in clash)
    kept += [Kept(c.rule, OVERLAP.format(other=clash[id(c)])) for c in candidates if id(c) in clash]
    order = {id(rule): i for i, rule in enumerate(rules if isinstance(rules, Sequence) else ())}
    kept.sort(key=lambda k: order.get(id(k.rule), 0))
    return Plan(compiled, tuple(kept), central)


def _clashes(group: list[Compiled], clash: dict[int, str]) -> None:
    """Mark every rule of ``group`` (one type) that overlaps another one."""
    exact: dict[tuple[str | None, ...], list[Compiled]] = {}
    for item in group:
        s = item.rule.selector
        key = tuple(
            p.text if p is not None else None
            for p in (s.host, s.plugin, s.plugin_instance, s.type_instance)
        )
        exact.setdefault(key, []).append(item)
    fully = {id(items[0]) for key, items in exact.items() if None not in key and len(items) == 1}
    partial = [item for item in group if id(item) not in fully]
    others = [item for item in group if id(item) in fully]
    # fully specified rules with distinct keys never overlap each other: compare the rest only
    for i, a in enumerate(partial):
        for b in (*partial[i + 1 :], *others):
            if _overlap(a.rule.selector, b.rule.selector):
                clash[id(a)] = b.rule.name
                clash[id(b)] = a.rule.name


def _number(value: float) -> str:
    return repr(float(value))


def threshold_block(compiled: Sequence[Compiled], *, central: bool = False) -> str:
    """The ``LoadPlugin threshold`` + ``<Plugin threshold>`` text for ``compiled``."""
    which = "central" if central else "local"
    lines = [
        "# Declarative value rules of collectd-monitor, judged by collectd's threshold",
        f"# plugin (collectd-monitor collectd-conf --{which}). Keep it in step with the",
        f"# ThresholdRules key of the collectd_monitor.{which} <Module> block.",
        "LoadPlugin threshold",
        "<Plugin threshold>",
    ]
    for item in compiled:
        rule, s = item.rule, item.rule.selector
        assert s.type is not None
        body = [f'<Type "{s.type.text}">']
        if s.type_instance is not None:
            body.append(f'  Instance "{s.type_instance.text}"')
        body.append(f'  DataSource "{item.data_source}"')
        if rule.above is not None:
            body.append(f"  FailureMax {_number(rule.above)}")
        if rule.below is not None:
            body.append(f"  FailureMin {_number(rule.below)}")
        if item.threshold_hits:
            body.append(f"  Hits {item.threshold_hits}")
        if rule.hysteresis > 0:
            body.append(f"  Hysteresis {_number(rule.hysteresis)}")
        body += ["  Interesting false", "</Type>"]
        if s.plugin is not None:
            head = [f'<Plugin "{s.plugin.text}">']
            if s.plugin_instance is not None:
                head.append(f'  Instance "{s.plugin_instance.text}"')
            body = [*head, *("  " + b for b in body), "</Plugin>"]
        if s.host is not None:
            body = [f'<Host "{s.host.text}">', *("  " + b for b in body), "</Host>"]
        lines.append(f"  # rule {rule.name}")
        lines += ["  " + b for b in body]
    lines.append("</Plugin>")
    return "\n".join(lines) + "\n"
