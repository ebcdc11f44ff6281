"""Getting outbox entries to the broker: each once in flight, again after a fault.

The agent writes a result to the outbox and hands it here. A :class:`Delivery`
publishes it through the link unless paho carries it already, removes it from
the outbox once the broker acknowledged it, publishes what the outbox holds
after every (re)connect, and moves aside a result the broker will not take:
one larger than the broker's announced maximum packet size, or one that was
first in line each time the broker dropped the connection (an unannounced
packet limit), so that the host always gets its connection back.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from collectd_monitor.commands.limits import StuckResults, payload_limit
from collectd_monitor.commands.outbox import Entry, Outbox
from collectd_monitor.commands.transport import Link

log = logging.getLogger(__name__)


class Delivery:
    """Which outbox entries paho carries now, and what to do when it is done with them."""

    def __init__(self, outbox: Outbox, link: Link, qos: Callable[[], int]) -> None:
        self.outbox = outbox
        self.link = link
        self._qos = qos
        """The QoS of results, read at each publish (from the agent's current config)."""
        self._in_flight: dict[str, Entry] = {}
        """Outbox entries that paho carries now: removed when delivered or dropped."""
        self._lock = threading.Lock()
        self._stuck = StuckResults()

    def send(self, entry: Entry) -> None:
        """Hand ``entry`` to the link unless paho already carries it."""
        with self._lock:
            if entry.name in self._in_flight:
                return
            self._in_flight[entry.name] = entry
        carried = False
        try:
            carried = self.link.publish(
                entry.topic,
                entry.payload,
                self._qos(),
                on_done=lambda delivered: self._settle(entry, delivered),
            )
        finally:
            if not carried:  # kept for the next connect
                with self._lock:
                    self._in_flight.pop(entry.name, None)

    def _settle(self, entry: Entry, delivered: bool) -> None:
        """The link is done with ``entry``: delivered, or to be sent again on connect."""
        with self._lock:
            self._in_flight.pop(entry.name, None)
            if delivered:
                self._stuck.settled(entry.name)
        if delivered:
            self.outbox.remove(entry)

    def quarantine_stuck(self) -> bool:
        """Move aside the result the broker keeps dropping the connection over, if any.

        True when one was: the link then replaces its client (paho would send
        the result first again) and connects anew.
        """
        with self._lock:
            name = self._stuck.connected(list(self._in_flight))
            entry = self._in_flight.pop(name, None) if name else None
        if entry is None:
            return False
        kept = self.outbox.quarantine(entry)
        log.error(
            "the broker dropped the connection %d times while a %d-byte result for %s was "
            "first in line; moved it to %s and reconnecting without it",
            self._stuck.strikes,
            len(entry.payload),
            entry.topic,
            kept or "nowhere (memory only: dropped)",
        )
        self.link.discard_unsent()
        return True

    def _too_large(self, entry: Entry) -> bool:
        """A stored result larger than the broker now takes: quarantined, never sent."""
        biggest = self.link.max_packet_size
        if not biggest or len(entry.payload) <= payload_limit(
            len(entry.payload), biggest, entry.topic
        ):
            return False
        kept = self.outbox.quarantine(entry)
        log.error(
            "a %d-byte result for %s exceeds the broker's maximum packet size (%s); moved to %s",
            len(entry.payload),
            entry.topic,
            self.link.max_packet_size,
            kept or "nowhere (memory only: dropped)",
        )
        return True

    def republish(self) -> None:
        """Publish what the outbox holds and paho does not already carry (a former run's)."""
        with self._lock:
            flying = set(self._in_flight)
        waiting = [entry for entry in self.outbox.pending() if entry.name not in flying]
        if waiting:
            log.info("publishing %d result(s) kept in the outbox", len(waiting))
        for entry in waiting:
            try:
                if not self._too_large(entry):
                    self.send(entry)
            except Exception as exc:  # one bad entry must not stop the others
                log.error("cannot publish outbox entry %s: %s", entry.name, exc)

    def deliver_foreign(self) -> None:
        """Publish entries other processes dropped into the outbox (the replacement helper's).

        Entries this process wrote are published when written and after every
        reconnect; only the ones another pid wrote need looking for.
        """
        if not self.link.connected:
            return
        for entry in self.outbox.pending():
            if entry.writer != os.getpid():
                with self._lock:
                    if entry.name in self._in_flight:
                        continue
                log.info("publishing %s, left in the outbox by pid %s", entry.name, entry.writer)
                self.send(entry)
