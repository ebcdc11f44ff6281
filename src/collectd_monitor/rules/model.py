"""Plain value objects the rules see: metrics, notifications, actions.

The collectd glue converts collectd's ``Values`` and ``Notification`` objects
into these, so rule files, declarative rules and ``test-rules`` all work on the
same frozen data, with or without collectd. Attribute names are the ones the
original's rule files use (README, "Local monitoring").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Severity(enum.IntEnum):
    """collectd's notification severities (``NOTIF_FAILURE`` ...)."""

    FAILURE = 1
    WARNING = 2
    OKAY = 4

    @classmethod
    def parse(cls, value: object) -> Severity:
        """``"failure"``, ``"FAILURE"``, ``1``... -> a severity; ``ValueError`` otherwise."""
        if isinstance(value, bool):
            raise ValueError(f"not a severity: {value!r}")
        if isinstance(value, int | float):
            return cls(int(value))
        if isinstance(value, str):
            name = value.strip().upper()
            name = {"OK": "OKAY", "WARN": "WARNING", "ERROR": "FAILURE"}.get(name, name)
            if name in cls.__members__:
                return cls[name]
        raise ValueError(f"not a severity: {value!r} (failure, warning or okay)")


@dataclass(frozen=True, slots=True)
class Metric:
    """One collectd value list, as a rule file's ``metric_handlers`` receive it."""

    host: str
    plugin: str
    plugin_instance: str
    type: str
    type_instance: str
    time: float
    interval: float
    values: tuple[float, ...]
    dsnames: tuple[str, ...]
    dstypes: tuple[str, ...]
    """``"gauge"``, ``"derive"``, ``"counter"`` or ``"absolute"`` per value."""

    @property
    def identity(self) -> str:
        """collectd's identifier ``host/plugin-instance/type-instance``."""
        plugin = f"{self.plugin}-{self.plugin_instance}" if self.plugin_instance else self.plugin
        type_ = f"{self.type}-{self.type_instance}" if self.type_instance else self.type
        return f"{self.host}/{plugin}/{type_}"


@dataclass(frozen=True, slots=True)
class Notice:
    """One collectd notification, as a rule file's ``notification_handlers`` receive it."""

    host: str
    plugin: str
    plugin_instance: str
    type: str
    type_instance: str
    time: float
    severity: int
    message: str

    @classmethod
    def of(cls, n: Any) -> tuple[Notice, str | None, float | None]:
        """collectd's notification ``n`` as a Notice, with the data source and current
        value the threshold plugin puts in its meta data (None when absent)."""
        meta = getattr(n, "meta", None)
        source = meta.get("DataSource") if isinstance(meta, dict) else None
        current = meta.get("CurrentValue") if isinstance(meta, dict) else None
        notice = cls(
            n.host,
            n.plugin,
            n.plugin_instance,
            n.type,
            n.type_instance,
            n.time,
            int(n.severity),
            n.message,
        )
        return (
            notice,
            None if source is None else str(source),
            (current if isinstance(current, float) else None),
        )


@dataclass(frozen=True, slots=True)
class Action:
    """A recovery command named by service and command, as config.json defines them."""

    service: str
    command: str

    @property
    def label(self) -> str:
        return f"{self.service}/{self.command}"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A notification the local plugin dispatches (a result or a breaker event)."""

    severity: Severity
    type_instance: str
    """The rule's name, ``<file>::<metric|notification>::<name>``."""
    message: str
    """JSON ``{"task_id", "code", "message"}``, at most 255 characters."""
