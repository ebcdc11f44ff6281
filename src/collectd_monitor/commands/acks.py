"""Which published messages still wait for the broker, keyed by paho's message id.

paho reports a delivery through its public ``on_publish`` callback with the
message id (``mid``) that ``publish()`` returned: for QoS 0 once the packet is
written to the socket, for QoS 1 on PUBACK, for QoS 2 on PUBCOMP. It calls it
once per message. What it does *not* report is a loss:

* QoS 1/2 messages stay in the client (same ``mid``) across reconnects and are
  sent again after each CONNACK, with or without a kept session; they are only
  lost when the client object itself is replaced (:meth:`Acks.forget_all`).
* A QoS 0 message not yet written when the connection drops is discarded by
  paho's next ``reconnect()``; nothing calls back (:meth:`Acks.connection_lost`).

Each tracked message therefore ends in exactly one call of its ``on_done``:
``True`` when the broker has it, ``False`` when paho will never deliver it.
``on_publish`` may run before ``publish()`` has returned the ``mid`` (QoS 0
is written at once by the publishing thread), so an acknowledgement that
comes first is kept until its publish is registered.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Generation = tuple[int, int]
"""(connection, client) counters: see :meth:`Acks.track`."""

Done = Callable[[bool], None]
"""Called once per tracked message: True when acknowledged, False when lost."""

EARLY_LIMIT = 4096
"""Acknowledgements remembered for publishes that have not registered yet."""


@dataclass(frozen=True)
class _Waiting:
    qos: int
    on_done: Done | None


class Acks:
    """The message ids awaiting acknowledgement, and a condition to wait for none."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: dict[int, _Waiting] = {}
        self._early: OrderedDict[int, None] = OrderedDict()
        self._connection = 0
        self._client = 0

    @property
    def generation(self) -> Generation:
        """Which connection and client a publish starts on; read it before ``publish()``."""
        with self._cond:
            return (self._connection, self._client)

    def __len__(self) -> int:
        with self._cond:
            return len(self._waiting)

    def track(
        self, mid: int, qos: int, generation: Generation, on_done: Done | None = None
    ) -> None:
        """Register the message ``publish()`` just queued under ``mid``.

        ``generation`` is :attr:`generation` as read before that publish: a
        message queued on a client replaced since, or a QoS 0 message queued on
        a connection that has died since, is already lost.
        """
        with self._cond:
            result: bool | None
            if mid in self._early:
                del self._early[mid]
                result = True
            elif generation[1] != self._client or (qos == 0 and generation[0] != self._connection):
                result = False
            else:
                self._waiting[mid] = _Waiting(qos, on_done)
                result = None
        if result is not None:
            _call(on_done, result, mid)

    def acknowledged(self, mid: int) -> None:
        """paho's ``on_publish`` for ``mid``: the broker has the message."""
        with self._cond:
            waiting = self._waiting.pop(mid, None)
            if waiting is None:
                self._early[mid] = None
                while len(self._early) > EARLY_LIMIT:
                    self._early.popitem(last=False)
            self._cond.notify_all()
        if waiting is not None:
            _call(waiting.on_done, True, mid)

    def connection_lost(self) -> None:
        """The connection is gone: QoS 0 messages not yet written never will be."""
        self._drop(lambda waiting: waiting.qos == 0)

    def forget_all(self) -> None:
        """The client is replaced: it carries none of the waiting messages any more."""
        with self._cond:
            self._client += 1
            self._early.clear()
        self._drop(lambda _waiting: True)

    def _drop(self, doomed: Callable[[_Waiting], bool]) -> None:
        with self._cond:
            self._connection += 1
            lost = {mid: w for mid, w in self._waiting.items() if doomed(w)}
            for mid in lost:
                del self._waiting[mid]
            self._cond.notify_all()
        for mid, waiting in lost.items():
            _call(waiting.on_done, False, mid)

    def wait_all(self, timeout: float) -> bool:
        """Wait until no message waits any more, at most ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting, timeout)


def _call(on_done: Done | None, acknowledged: bool, mid: int) -> None:
    if on_done is None:
        return
    try:
        on_done(acknowledged)
    except Exception:  # runs on paho's thread: never let it die
        log.exception("error handling the delivery of message %d", mid)
