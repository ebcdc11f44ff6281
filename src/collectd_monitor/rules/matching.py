"""Field patterns of declarative rules: an exact string or a shell-style wildcard.

A pattern without ``*``, ``?`` or ``[`` is compared as a plain string (the
common case, and the one the index can look up in a dict); one with them is
compiled once to a regular expression.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

_WILD = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Pattern:
    text: str
    wild: bool = field(init=False)
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        wild = bool(_WILD.search(self.text))
        object.__setattr__(self, "wild", wild)
        regex = re.compile(fnmatch.translate(self.text)) if wild else None
        object.__setattr__(self, "_regex", regex)

    def matches(self, value: str) -> bool:
        if self._regex is None:
            return value == self.text
        return self._regex.match(value) is not None


@dataclass(frozen=True)
class Selector:
    """Patterns for the identity fields; a missing field matches anything."""

    host: Pattern | None = None
    plugin: Pattern | None = None
    plugin_instance: Pattern | None = None
    type: Pattern | None = None
    type_instance: Pattern | None = None

    def matches(
        self, host: str, plugin: str, plugin_instance: str, type_: str, type_instance: str
    ) -> bool:
        for pattern, value in (
            (self.plugin, plugin),
            (self.type, type_),
            (self.plugin_instance, plugin_instance),
            (self.type_instance, type_instance),
            (self.host, host),
        ):
            if pattern is not None and not pattern.matches(value):
                return False
        return True

    def exact_fields(self) -> dict[str, str]:
        """Field name -> value, for the fields this selector names without a wildcard."""
        found = {}
        for name in ("host", "plugin", "plugin_instance", "type", "type_instance"):
            pattern: Pattern | None = getattr(self, name)
            if pattern is not None and not pattern.wild:
                found[name] = pattern.text
        return found
