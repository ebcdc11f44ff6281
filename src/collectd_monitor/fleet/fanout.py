"""Fan-out scheduling: which host gets its request next, and when a run is over.

Pure logic: every method takes the current time (monotonic seconds) as an
argument, so tests drive it with a fake clock and the MQTT side
(:mod:`collectd_monitor.fleet.broadcast`) only asks it what to do.

Three limits shape a run: ``parallel`` requests in flight at most, ``rate``
requests started per second at most, and ``abort_after`` failures (a code
other than 0, or no result within ``timeout``) after which nothing new is
sent; requests already in flight are still waited for.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from collectd_monitor.fleet.topics import GLOB_CHARS as GLOB_CHARS  # moved; still found here
from collectd_monitor.fleet.topics import is_glob as is_glob

OK, FAILED, TIMED_OUT = "ok", "failed", "timed out"


@dataclass(frozen=True)
class Limits:
    parallel: int = 100
    rate: float | None = None
    """Requests started per second at most; None: no limit."""
    abort_after: int | None = None
    """Stop sending new requests after this many failures; None: never."""
    timeout: float = 30.0
    """Seconds to wait for each host's result, from when its request was sent."""

    def __post_init__(self) -> None:
        if self.parallel < 1:
            raise ValueError("--parallel must be at least 1")
        if self.rate is not None and not self.rate > 0:
            raise ValueError("--rate must be more than 0")
        if self.abort_after is not None and self.abort_after < 1:
            raise ValueError("--abort-after must be at least 1")
        if not self.timeout > 0:
            raise ValueError("--timeout must be more than 0")


@dataclass(frozen=True)
class Outcome:
    host: str
    status: str
    """:data:`OK`, :data:`FAILED` or :data:`TIMED_OUT`."""
    code: int | None
    duration: float


@dataclass(frozen=True)
class Progress:
    total: int
    ok: int
    failed: int
    timed_out: int
    in_flight: int
    unsent: int
    aborted: bool
    elapsed: float
    rate: float
    """Results (or timeouts) per second so far."""
    eta: float | None
    """Seconds until every host is done at the current rate; None when unknown."""

    @property
    def finished(self) -> int:
        return self.ok + self.failed + self.timed_out


class Scheduler:
    """The state of one fan-out run over ``hosts`` (each host once, in the given order)."""

    def __init__(self, hosts: Sequence[str], limits: Limits, now: float) -> None:
        self.limits = limits
        self.started = now
        self.total = len(hosts)
        self._queue: deque[str] = deque(hosts)
        self._in_flight: OrderedDict[str, float] = OrderedDict()
        """host -> time sent; in send order, which is deadline order."""
        self._next_slot = now
        self._first_sent: float | None = None
        self.ok = self.failed = self.timed_out = 0
        self.aborted = False

    # -- sending --------------------------------------------------------------------------

    def due(self, now: float) -> list[str]:
        """Hosts whose request should go out now; the caller sends them and we count them sent."""
        hosts: list[str] = []
        rate = self.limits.rate
        while self._queue and not self.aborted and len(self._in_flight) < self.limits.parallel:
            if rate is not None:
                if now < self._next_slot:
                    break
                self._next_slot = max(self._next_slot, now - 1.0 / rate) + 1.0 / rate
            host = self._queue.popleft()
            self._in_flight[host] = now
            hosts.append(host)
        if hosts and self._first_sent is None:
            self._first_sent = now
        return hosts

    # -- answers --------------------------------------------------------------------------

    def answered(self, host: str, code: int, now: float) -> Outcome | None:
        """Count a result; None when ``host`` has no request in flight (late or duplicate)."""
        sent = self._in_flight.pop(host, None)
        if sent is None:
            return None
        if code == 0:
            self.ok += 1
            status = OK
        else:
            self.failed += 1
            status = FAILED
        self._check_abort()
        return Outcome(host, status, code, now - sent)

    def expire(self, now: float) -> list[Outcome]:
        """The requests whose time is up, counted as timed out."""
        expired: list[Outcome] = []
        timeout = self.limits.timeout
        while self._in_flight:
            host, sent = next(iter(self._in_flight.items()))
            if now - sent < timeout:
                break
            del self._in_flight[host]
            self.timed_out += 1
            expired.append(Outcome(host, TIMED_OUT, None, now - sent))
        if expired:
            self._check_abort()
        return expired

    def _check_abort(self) -> None:
        limit = self.limits.abort_after
        if limit is not None and self.failed + self.timed_out >= limit:
            self.aborted = True

    # -- state ----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return not self._in_flight and (not self._queue or self.aborted)

    @property
    def in_flight(self) -> list[str]:
        return list(self._in_flight)

    @property
    def unsent(self) -> list[str]:
        return list(self._queue)

    def wake_in(self, now: float) -> float:
        """Seconds until something may change without an answer: a rate slot or a deadline."""
        waits = [3600.0]
        if self._in_flight:
            first = next(iter(self._in_flight.values()))
            waits.append(first + self.limits.timeout - now)
        if (
            self._queue
            and not self.aborted
            and self.limits.rate is not None
            and len(self._in_flight) < self.limits.parallel
        ):
            waits.append(self._next_slot - now)
        return max(min(waits), 0.0)

    def progress(self, now: float) -> Progress:
        finished = self.ok + self.failed + self.timed_out
        since = self._first_sent if self._first_sent is not None else self.started
        elapsed = max(now - since, 0.0)
        rate = finished / elapsed if elapsed > 0 else 0.0
        left = self.total - finished - (len(self._queue) if self.aborted else 0)
        eta = left / rate if rate > 0 else None
        return Progress(
            total=self.total,
            ok=self.ok,
            failed=self.failed,
            timed_out=self.timed_out,
            in_flight=len(self._in_flight),
            unsent=len(self._queue),
            aborted=self.aborted,
            elapsed=now - self.started,
            rate=rate,
            eta=eta,
        )


# -- choosing the hosts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """A host known from presence: its name and whether it is online."""

    host: str
    online: bool


@dataclass(frozen=True)
class Selection:
    hosts: list[str]
    """Matching hosts, each once: pattern matches (sorted per pattern) first, then listed ones."""
    unmatched: list[str]
    """Patterns that matched no host (offline hosts count only with ``include_offline``)."""
    offline: list[str]
    """Hosts that a pattern matched but were left out because they are offline."""


def select_hosts(
    patterns: Sequence[str],
    known: Iterable[Known],
    *,
    include_offline: bool = False,
    listed: Sequence[str] = (),
) -> Selection:
    """The hosts that ``patterns`` (names or globs, case-insensitive) match, plus ``listed``.

    Patterns are matched against hosts known from presence, online ones only
    unless ``include_offline``; ``listed`` hosts (a hosts file) are taken as
    they are.
    """
    fleet = sorted({k.host: k for k in known}.values(), key=lambda k: k.host)
    chosen: dict[str, None] = {}
    unmatched: list[str] = []
    offline: dict[str, None] = {}
    for pattern in patterns:
        wanted = pattern.lower()
        hits = [k for k in fleet if fnmatch.fnmatchcase(k.host.lower(), wanted)]
        usable = [k for k in hits if k.online or include_offline]
        offline.update((k.host, None) for k in hits if not (k.online or include_offline))
        if not usable:
            unmatched.append(pattern)
        chosen.update((k.host, None) for k in usable)
    chosen.update((host, None) for host in listed)
    return Selection(list(chosen), unmatched, [h for h in offline if h not in chosen])


def read_hosts_file(text: str) -> list[str]:
    """Host names from a hosts file: one per line; blank lines and ``#`` comments ignored."""
    hosts: list[str] = []
    for line in text.splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            if any(c.isspace() for c in name) or "/" in name or "+" in name:
                raise ValueError(f"not a host name: {name!r}")
            hosts.append(name)
    return hosts
