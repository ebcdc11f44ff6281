"""How to reach the broker: :class:`BrokerSettings`, host parsing and the default topics.

Kept apart from :mod:`collectd_monitor.config` (which re-exports all of it)
so that ``send-command`` can build its settings from options alone without
loading the config.json schema: the CLI imports this module only, and
``config`` only when ``--config`` names a file.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to talk to it."""

    host: str = "localhost"
    port: int = DEFAULT_PORT
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    secure: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    clean_session: bool = False
    qos: int = 2
    keepalive: int = 60
    reconnect_interval: float = 5.0
    reconnect_max_interval: float = 60.0
    client_id: str = ""
    protocol: str = "auto"
    """MQTT version: "5", "3.1.1", or "auto" (5, falling back to 3.1.1)."""

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def default_topics(hostname: str | None = None) -> tuple[str, str]:
    host = hostname or socket.gethostname()
    return f"collectd-monitor/{host}/command", f"collectd-monitor/{host}/result"


def default_status_topic(hostname: str | None = None) -> str:
    return f"collectd-monitor/{hostname or socket.gethostname()}/status"


def parse_host(value: str, secure: bool) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6addr]:port`` or a bare IPv6 address."""
    default = DEFAULT_TLS_PORT if secure else DEFAULT_PORT
    text = value.strip()
    if not text:
        raise ValueError("is empty")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"unbalanced '[' in {value!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' in {value!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a name, an IPv4 address or a bare IPv6 address
        host, port_text = text, None
    if not host:
        raise ValueError(f"no host name in {value!r}")
    if port_text is None:
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {value!r}")
    return host, int(port_text)
