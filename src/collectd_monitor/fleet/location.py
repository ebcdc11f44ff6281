"""Where the history lives: a URL (or path), its default, and how to show it safely."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from collectd_monitor.errors import MonitorError

if TYPE_CHECKING:
    from pathlib import Path  # imported where used: send-command parses its options without it

HISTORY_ENV = "COLLECTD_MONITOR_HISTORY"
SQLITE_NAME = "history.sqlite3"


class HistoryError(MonitorError):
    """The history store cannot be opened or used. The message never holds a password."""


class HistoryURLError(HistoryError):
    """The history URL itself is malformed (a usage error, not an outage)."""


@dataclass(frozen=True)
class Location:
    """A parsed history URL: ``sqlite`` with a path, or ``postgresql`` with a DSN."""

    kind: str
    target: str
    """The SQLite file path, or the PostgreSQL URL as given (with its password)."""

    @property
    def shown(self) -> str:
        """The URL for messages: never with its password."""
        return self.target if self.kind == "sqlite" else redact(self.target)


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/collectd-monitor/history.sqlite3`` (``~/.local/state`` by default)."""
    from pathlib import Path

    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "collectd-monitor" / SQLITE_NAME


def resolve(url: str | None, environ: Mapping[str, str] | None = None) -> Location:
    """The location named by ``url``, else ``$COLLECTD_MONITOR_HISTORY``, else the default.

    Accepted: ``sqlite:///abs/path``, ``sqlite:relative/path``, a plain path, and
    ``postgresql://user:pass@host:port/db`` (``postgres://`` too).
    """
    env = os.environ if environ is None else environ
    text = url or env.get(HISTORY_ENV) or ""
    if not text:
        return Location("sqlite", str(default_path(env)))
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower() if sep else ""
    if scheme in ("postgresql", "postgres"):
        if not rest.startswith("//"):
            raise HistoryURLError(f"not a PostgreSQL URL: {redact(text)}")
        return Location("postgresql", "postgresql:" + rest)
    if scheme == "sqlite":
        path = unquote(rest[2:] if rest.startswith("//") else rest)
        if path.startswith("//"):  # sqlite:////abs/path, as SQLAlchemy writes it
            path = "/" + path.lstrip("/")
        if not path:
            raise HistoryURLError(f"no file in the SQLite URL {text!r}")
        return Location("sqlite", path)
    if sep and "/" not in scheme and len(scheme) > 1 and rest.startswith("//"):
        raise HistoryURLError(f"unsupported history URL scheme {scheme!r} (sqlite or postgresql)")
    return Location("sqlite", os.path.expanduser(text))


def redact(url: str) -> str:
    """``url`` without its password (``user:pass@host`` -> ``user@host``) nor its query."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}@{hostport}" if user else hostport
    # the query may hold a password too (?password=...): leave it out altogether
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
