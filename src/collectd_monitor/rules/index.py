"""Finding the rules for a value without looking at every rule.

collectd calls the write callback for every value, so the lookup is the hot
path. It costs one set test on the plugin name (when no rule takes a
wildcard plugin) and then one dict lookup on the value's identity; the rules
for an identity are worked out once, the first time it is seen. Neither step
grows with the number of rules, and a value of a plugin no rule names is
turned away before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collectd_monitor.rules.declarative import ValueRule

Identity = tuple[str, str, str, str, str]
NOTHING: tuple[ValueRule, ...] = ()


class MetricIndex:
    def __init__(self, rules: Sequence[ValueRule], max_cached: int = 200_000) -> None:
        self.rules = tuple(rules)
        by_plugin: dict[str | None, list[ValueRule]] = {}
        for rule in self.rules:
            by_plugin.setdefault(rule.selector.exact_plugin(), []).append(rule)
        self._by_plugin = {key: tuple(value) for key, value in by_plugin.items()}
        self._wild = self._by_plugin.get(None, NOTHING)
        self.plugins: frozenset[str] | None = (
            None if self._wild else frozenset(k for k in self._by_plugin if k is not None)
        )
        """Plugins any rule can match, or None when some rule takes a wildcard plugin."""
        self._cache: dict[Identity, tuple[ValueRule, ...]] = {}
        self._max_cached = max_cached

    def __len__(self) -> int:
        return len(self.rules)

    def rules_for(self, values: Any) -> tuple[ValueRule, ...]:
        """The rules matching a collectd ``Values`` (or anything with its attributes)."""
        plugins = self.plugins
        if plugins is not None and values.plugin not in plugins:
            return NOTHING
        key = (
            values.host,
            values.plugin,
            values.plugin_instance,
            values.type,
            values.type_instance,
        )
        found = self._cache.get(key)
        if found is None:
            found = self._resolve(key)
        return found

    def matching(self, key: Identity) -> tuple[ValueRule, ...]:
        """The rules for ``key`` (host, plugin, plugin_instance, type, type_instance),
        worked out afresh (for a caller that keeps its own cache)."""
        candidates = self._by_plugin.get(key[1], NOTHING) + self._wild
        return tuple(rule for rule in candidates if rule.selector.matches(*key))

    def _resolve(self, key: Identity) -> tuple[ValueRule, ...]:
        found = self.matching(key)
        if len(self._cache) >= self._max_cached:
            self._cache.clear()  # a host with churning series: start over, stay bounded
        self._cache[key] = found
        return found
