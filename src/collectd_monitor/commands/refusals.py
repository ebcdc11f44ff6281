"""Cheap refusals: a flood of bad messages must not cost more than it is worth.

A refusal is anything that did not run a command. Answering each one costs a
result, a publish and a log line; 20 000 junk messages once made 20 000
fsync'd results and 2.3 MB of warnings, and a legitimate command behind them
waited 35 s. So refusals are rate-limited (:class:`RefusalGate`, a token
bucket of ``MaxRefusalsPerSecond``): past the rate a refusal is only counted,
and one summary line per :data:`SUMMARY_INTERVAL` tells how many were
suppressed. The agent also keeps refusals off the fsync path of the outbox
and, with signatures required, drops unsigned or badly signed messages
without an answer (unless ``Security.AnswerUnsigned``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from collectd_monitor.codes import describe

log = logging.getLogger(__name__)

SUMMARY_INTERVAL = 60.0
"""Seconds between two summaries of suppressed refusals."""


class RefusalGate:
    """A token bucket for refusals: ``rate`` per second, bursts of up to ``rate`` (at least 1).

    :meth:`admit` says whether a refusal may be logged and answered; the ones
    it turns away are counted by result code and summed up in one log line at
    most every ``interval`` seconds (checked on every :meth:`admit` and
    :meth:`tick`, and in :meth:`flush`).
    """

    def __init__(
        self,
        rate: float,
        *,
        interval: float = SUMMARY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._last = clock()
        self._suppressed: Counter[int] = Counter()
        self._summary_at = self._last
        self.suppressed_total = 0
        """Refusals turned away since the start (for tests and the status)."""

    def admit(self, code: int) -> bool:
        """True when a refusal with ``code`` may be logged and answered now."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                admitted = True
            else:
                self._suppressed[code] += 1
                self.suppressed_total += 1
                admitted = False
        self.tick()
        return admitted

    def tick(self) -> None:
        """Log the summary if one is due."""
        with self._lock:
            due = self._suppressed and self.clock() - self._summary_at >= self.interval
        if due:
            self.flush()

    def flush(self) -> None:
        """Log what was suppressed since the last summary, if anything."""
        with self._lock:
            counts, self._suppressed = self._suppressed, Counter()
            now = self.clock()
            elapsed, self._summary_at = now - self._summary_at, now
        if counts:
            detail = ", ".join(
                f"{count} x {describe(code)}" for code, count in counts.most_common()
            )
            log.warning(
                "%d refusal(s) in the last %.0f s were not answered or logged one by one "
                "(more than MaxRefusalsPerSecond=%g): %s",
                sum(counts.values()),
                elapsed,
                self.rate,
                detail,
            )
