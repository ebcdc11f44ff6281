"""Topic templates with a ``+`` where the host name goes (``collectd-monitor/+/result``)."""

from __future__ import annotations

DEFAULT_RESULT_TEMPLATE = "collectd-monitor/+/result"
DEFAULT_STATUS_TEMPLATE = "collectd-monitor/+/status"
DEFAULT_COMMAND_TEMPLATE = "collectd-monitor/+/command"
GLOB_CHARS = frozenset("*?[")
"""A host pattern (``--to``, a rule's hosts) with one of these is a glob, not a name."""


def is_glob(pattern: str) -> bool:
    return any(char in GLOB_CHARS for char in pattern)


def unshared(template: str) -> str:
    """The filter without an MQTT shared-subscription prefix (``$share/GROUP/``)."""
    if template.startswith("$share/"):
        parts = template.split("/", 2)
        return parts[2] if len(parts) == 3 else ""
    return template


def matches(template: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest; ``$share/GROUP/`` ignored)."""
    want, have = unshared(template).split("/"), topic.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return True
        if index >= len(have) or (level != "+" and level != have[index]):
            return False
    return len(want) == len(have)


def host_in(template: str, topic: str) -> str | None:
    """The level of ``topic`` under the template's first ``+``, when ``topic`` matches.

    A template without ``+`` names no host: then the level before the last one.
    """
    if not matches(template, topic):
        return None
    levels = topic.split("/")
    try:
        return levels[unshared(template).split("/").index("+")] or None
    except (ValueError, IndexError):
        return host_of(topic)


def host_of(topic: str) -> str:
    """The host in a per-host topic such as ``collectd-monitor/web1/command``."""
    levels = topic.split("/")
    return levels[-2] if len(levels) >= 2 and levels[-2] else topic
