"""The package's exception tree.

MonitorError
├── ConfigError        a config file or key is missing or invalid (names both)
├── ProtocolError      a message cannot be accepted (carries a result code)
└── TransportError     the MQTT link cannot be set up or used
    └── AuthError      the broker refused our credentials
"""

from __future__ import annotations

from typing import Any


class MonitorError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(MonitorError):
    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        where = []
        if path:
            where.append(path)
        if key:
            where.append(f"key {key!r}")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ProtocolError(MonitorError):
    """A message was refused. ``task_id`` is ``None`` when none could be read."""

    def __init__(self, code: int, message: str, task_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.task_id = task_id


class TransportError(MonitorError):
    pass


class AuthError(TransportError):
    pass
