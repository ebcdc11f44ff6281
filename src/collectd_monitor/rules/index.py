"""Finding the rules for a value without looking at every rule.

collectd calls the write callback for every value, so the lookup is the hot
path, and its cost must not grow with the number of rules:

1. the *shared fields*: the identity fields every rule names exactly (no
   wildcard). Their values, read in one C call (:func:`operator.attrgetter`),
   are looked up in a set of the rules' values; a value no rule can select is
   turned away there, before anything else is read or allocated. Rules that
   all name plugin, type and host turn away every host, plugin and type pair
   they do not name, however many rules there are;
2. the identity (host, plugin, plugin_instance, type, type_instance) is then
   looked up in a cache of the rules matching it; the first time an identity
   is seen only the rules with its shared field values are tried (the rules
   are grouped by them), and the answer is cached. The cache is cleared when
   it reaches ``max_cached`` identities, so a host whose series churn keeps it
   bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from collectd_monitor.rules.declarative import ValueRule

Identity = tuple[str, str, str, str, str]
FIELDS = ("host", "plugin", "plugin_instance", "type", "type_instance")
"""The identity fields, in the order of :data:`Identity`."""
NOTHING: tuple[ValueRule, ...] = ()

identity_of: Any = attrgetter(*FIELDS)
"""A collectd ``Values`` (or anything with its attributes) -> its :data:`Identity`."""


class MetricIndex:
    def __init__(self, rules: Sequence[ValueRule], max_cached: int = 200_000) -> None:
        self.rules = tuple(rules)
        exact = [rule.selector.exact_fields() for rule in self.rules]
        self.fields = tuple(f for f in FIELDS if all(f in names for names in exact))
        """The fields every rule names exactly (all of them when there is no rule)."""
        self._positions = tuple(FIELDS.index(f) for f in self.fields)
        groups: dict[tuple[str, ...], list[ValueRule]] = {}
        # rules naming their plugin first, then the others: the order of the index so far
        order = sorted(range(len(self.rules)), key=lambda i: "plugin" not in exact[i])
        for i in order:
            key = tuple(exact[i][f] for f in self.fields)
            groups.setdefault(key, []).append(self.rules[i])
        self._groups = {key: tuple(found) for key, found in groups.items()}
        self._project: Any = attrgetter(*self.fields) if self.fields else None
        # attrgetter of one field returns the value itself, of several a tuple
        single = len(self.fields) == 1
        self._keys = frozenset(key[0] if single else key for key in self._groups)
        self.plugins: frozenset[str] | None = None
        """Plugins any rule can match, or None when some rule takes a wildcard plugin."""
        if "plugin" in self.fields:
            at = self.fields.index("plugin")
            self.plugins = frozenset(key[at] for key in self._groups)
        self._cache: dict[Identity, tuple[ValueRule, ...]] = {}
        self._max_cached = max_cached

    def __len__(self) -> int:
        return len(self.rules)

    def rules_for(self, values: Any) -> tuple[ValueRule, ...]:
        """The rules matching a collectd ``Values`` (or anything with its attributes)."""
        project = self._project
        if project is not None and project(values) not in self._keys:
            return NOTHING
        key = identity_of(values)
        found = self._cache.get(key)
        if found is None:
            found = self._resolve(key)
        return found

    def matching(self, key: Identity) -> tuple[ValueRule, ...]:
        """The rules for ``key`` (host, plugin, plugin_instance, type, type_instance),
        worked out afresh (for a caller that keeps its own cache)."""
        candidates = self._groups.get(tuple(key[i] for i in self._positions), NOTHING)
        return tuple(rule for rule in candidates if rule.selector.matches(*key))

    def _resolve(self, key: Identity) -> tuple[ValueRule, ...]:
        found = self.matching(key)
        if len(self._cache) >= self._max_cached:
            self._cache.clear()  # a host with churning series: start over, stay bounded
        self._cache[key] = found
        return found
