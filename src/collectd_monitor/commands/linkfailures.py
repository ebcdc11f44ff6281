"""Why a broker connection failed, said once, then quietly: the link's failure log.

Some failures never reach paho's callbacks with a reason. When the broker
closes or resets the socket before its CONNACK (plaintext to a TLS port, a TLS
port that wants a client certificate we did not send: TLS 1.3 reports that
only after the handshake), paho's ``loop()`` just returns an error code; the
socket error is only in paho's own log. :class:`SocketErrors` keeps the last
one of those, and :func:`explain` turns it into a line an operator can act on.

:class:`FailureLog` is the back-off for the log: the first failure with a
reason at WARNING, the same reason again at DEBUG (with a WARNING summary every
``summary_every`` seconds while the outage lasts), and the recovery at INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

SUMMARY_EVERY = 600.0
"""Seconds between two "still failing" lines of one long outage."""

_PAHO_SOCKET_ERROR = "failed to receive on socket: "


class SocketErrors:
    """paho's ``on_log`` hook that remembers the last socket error it reported."""

    def __init__(self) -> None:
        self.last: str | None = None

    def on_log(self, _client: Any, _userdata: Any, _level: Any, text: str) -> None:
        if isinstance(text, str) and text.startswith(_PAHO_SOCKET_ERROR):
            self.last = text[len(_PAHO_SOCKET_ERROR) :]

    def take(self) -> str | None:
        last, self.last = self.last, None
        return last


def explain(error: str | None, *, secure: bool, client_cert: bool) -> str:
    """The reason for a connection the broker dropped before accepting us, with a hint."""
    if error is None:
        text = "the broker closed the connection before accepting it"
    else:
        text = f"the connection broke before the broker accepted it: {error}"
    lowered = (error or "").lower()
    if not secure:
        return f"{text} (does this port expect TLS?)"
    if "wrong version number" in lowered or "record layer failure" in lowered:
        return f"{text} (this port does not seem to speak TLS)"
    if not client_cert and ("eof" in lowered or "alert" in lowered or error is None):
        return f"{text} (does the broker require a client certificate?)"
    return text


class FailureLog:
    """Connection failures of one link, logged with back-off."""

    def __init__(
        self,
        logger: logging.Logger,
        address: str,
        *,
        summary_every: float = SUMMARY_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.address = address
        self.summary_every = summary_every
        self.clock = clock
        self.failures = 0
        self._reasons: set[str] = set()
        self._last_warning = 0.0

    def failed(self, reason: str, *, kind: str | None = None) -> None:
        """One more failed attempt: WARNING for a new reason, DEBUG (or a summary) else.

        ``kind`` groups reasons whose text varies from one attempt to the next
        (the same refusal seen at a different point of the TLS handshake).
        """
        self.failures += 1
        now = self.clock()
        key = reason if kind is None else kind
        if key not in self._reasons:
            self._reasons.add(key)
            self._last_warning = now
            self.logger.warning("%s; retrying with back-off", reason)
        elif now - self._last_warning >= self.summary_every:
            self._last_warning = now
            self.logger.warning(
                "still cannot connect to %s after %d failed attempts; last: %s",
                self.address,
                self.failures,
                reason,
            )
        else:
            self.logger.debug("%s (failure %d)", reason, self.failures)

    def recovered(self) -> int:
        """The link is up again: say after how many failures; return that number."""
        failures = self.failures
        if failures:
            self.logger.info(
                "connected again to %s after %d failed attempt%s",
                self.address,
                failures,
                "" if failures == 1 else "s",
            )
        self.failures = 0
        self._reasons.clear()
        return failures
