"""Logging for the plugins: to collectd's log by default, or stdout / syslog.

All package loggers hang below ``collectd_monitor``; this module gives that
logger its one handler. A filter masks every configured secret in every
record, so a password never reaches a log even through an exception text, and
escapes control characters, so every record is exactly one line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

ROOT = "collectd_monitor"

LEVELS = {
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

MASK = "********"


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def escape_text(text: str) -> str:
    """``text`` as one printable line: control characters, line separators and
    lone surrogates become ``\\n``-style escapes (a newline in a task_id must
    not forge a log line; a surrogate must not break collectd's UTF-8 logging)."""
    return _UNSAFE.sub(
        lambda m: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(m[0]) or _escape(m[0]), text
    )


ECHO_LIMIT = 120
"""Characters of a message's own text that a refusal or a log line repeats."""


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` escaped to one printable line and cut at ``limit`` characters (never
    inside an escape), with the original length shown when cut."""
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = escape_text(char)
        if used + len(piece) > limit:
            return "".join(pieces) + f"...[{len(text)} chars]"
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces)


def quote(text: str, limit: int = ECHO_LIMIT) -> str:
    """:func:`clip` in quotes: what a refusal message shows of a name it did not know."""
    return f"'{clip(text, limit)}'"


class SafeRecord(logging.Filter):
    """Masks every secret and escapes the message to one printable line.

    Applied to the whole formatted message, so a value taken from a message is
    escaped wherever a log call puts it. Tracebacks keep their line breaks (they
    are ours) but lose every other control character.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string must not lose the event
            text = f"{record.msg!r} % {record.args!r}"
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, MASK)
        if record.exc_text:
            record.exc_text = "\n".join(escape_text(line) for line in record.exc_text.split("\n"))
        record.msg, record.args = escape_text(text), None
        return True


class CollectdHandler(logging.Handler):
    """Hands records to collectd's logging functions (``collectd.error``...)."""

    def __init__(self, collectd: Any, debug_as_info: bool = False) -> None:
        super().__init__()
        self.collectd = collectd
        self.debug_as_info = debug_as_info

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self.collectd.error(text)
            elif record.levelno >= logging.WARNING:
                self.collectd.warning(text)
            elif record.levelno >= logging.INFO or self.debug_as_info:
                # collectd drops debug() unless built with debugging.
                self.collectd.info(text)
            else:
                self.collectd.debug(text)
        except Exception:
            self.handleError(record)


def configure(
    device: str = "collectd",
    level: str = "info",
    secrets: Iterable[str] = (),
    collectd: Any = None,
) -> logging.Logger:
    """(Re)configure the package logger. Safe to call from each plugin."""
    logger = logging.getLogger(ROOT)
    for old in list(logger.handlers):
        if getattr(old, "_collectd_monitor", False):
            logger.removeHandler(old)
    handler: logging.Handler
    if device == "stdout":
        handler = logging.StreamHandler(sys.stdout)
        fmt = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
    elif device == "syslog":
        from logging.handlers import SysLogHandler  # here: it brings pickle, queue and more

        handler = SysLogHandler(address="/dev/log")
        fmt = "collectd-monitor[%(process)d]: %(name)s: %(message)s"
    elif collectd is not None:
        handler = CollectdHandler(collectd, debug_as_info=level == "debug")
        fmt = "%(name)s: %(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(SafeRecord(secrets))
    setattr(handler, "_collectd_monitor", True)  # noqa: B010 - a marker on a stdlib object
    logger.addHandler(handler)
    logger.setLevel(LEVELS.get(level, logging.INFO))
    logger.propagate = False
    return logger


def update(level: str, secrets: Iterable[str]) -> None:
    """Change the level and the masked secrets of the configured handler (a reloaded config)."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(LEVELS.get(level, logging.INFO))
    for handler in logger.handlers:
        if getattr(handler, "_collectd_monitor", False):
            for old in list(handler.filters):
                if isinstance(old, SafeRecord):
                    old.secrets = tuple(s for s in secrets if s)
