"""The link's delivery bookkeeping (message id -> on_done), without a broker."""

from __future__ import annotations

import threading

from collectd_monitor.commands.acks import EARLY_LIMIT, Acks, Done


class Calls:
    def __init__(self) -> None:
        self.seen: dict[str, list[bool]] = {}

    def __call__(self, name: str) -> Done:
        def done(delivered: bool) -> None:
            self.seen.setdefault(name, []).append(delivered)

        return done


def test_an_acknowledged_message_is_done_once_and_flush_sees_it() -> None:
    acks, calls = Acks(), Calls()
    acks.track(1, 1, acks.generation, calls("a"))
    acks.track(2, 2, acks.generation, calls("b"))
    assert len(acks) == 2 and not acks.wait_all(0)
    acks.acknowledged(2)
    acks.acknowledged(1)
    acks.acknowledged(1)  # a second PUBACK for one id changes nothing
    assert calls.seen == {"b": [True], "a": [True]}
    assert acks.wait_all(0)


def test_an_acknowledgement_before_publish_returned_is_kept_for_it() -> None:
    """QoS 0 is written (and on_publish called) inside publish(), before the mid is known."""
    acks, calls = Acks(), Calls()
    generation = acks.generation
    acks.acknowledged(7)
    acks.track(7, 0, generation, calls("early"))
    assert calls.seen == {"early": [True]}
    assert len(acks) == 0
    acks.track(7, 1, acks.generation, calls("reused id"))  # the early ack was used up
    assert calls.seen == {"early": [True]}
    assert len(acks) == 1


def test_a_lost_connection_drops_unsent_qos0_and_keeps_qos1_and_2() -> None:
    acks, calls = Acks(), Calls()
    acks.track(1, 0, acks.generation, calls("qos0"))
    acks.track(2, 1, acks.generation, calls("qos1"))
    acks.track(3, 2, acks.generation, calls("qos2"))
    acks.connection_lost()
    assert calls.seen == {"qos0": [False]}
    acks.connection_lost()  # paho's pre-connect after on_disconnect: nothing new
    assert calls.seen == {"qos0": [False]}
    acks.acknowledged(2)  # resent by paho with the same id after the reconnect
    acks.acknowledged(3)
    assert calls.seen == {"qos0": [False], "qos1": [True], "qos2": [True]}


def test_a_qos0_publish_racing_a_lost_connection_is_lost() -> None:
    acks, calls = Acks(), Calls()
    generation = acks.generation  # read before publish()
    acks.connection_lost()  # the link broke while publish() ran
    acks.track(4, 0, generation, calls("qos0"))
    acks.track(5, 1, generation, calls("qos1"))  # paho keeps QoS 1 messages
    assert calls.seen == {"qos0": [False]}
    assert len(acks) == 1


def test_a_replaced_client_loses_every_waiting_message() -> None:
    acks, calls = Acks(), Calls()
    before = acks.generation
    acks.track(1, 1, before, calls("qos1"))
    acks.acknowledged(9)  # an early ack from the old client
    acks.forget_all()
    assert calls.seen == {"qos1": [False]}
    acks.track(9, 1, acks.generation, calls("new client, same id"))
    acks.track(10, 2, before, calls("published on the old client"))
    assert calls.seen == {"qos1": [False], "published on the old client": [False]}
    assert len(acks) == 1


def test_untracked_acknowledgements_are_bounded() -> None:
    acks = Acks()
    for mid in range(EARLY_LIMIT + 100):
        acks.acknowledged(mid)
    calls = Calls()
    acks.track(0, 1, acks.generation, calls("oldest forgotten"))
    acks.track(EARLY_LIMIT + 99, 1, acks.generation, calls("newest kept"))
    assert calls.seen == {"newest kept": [True]}


def test_an_exception_in_on_done_does_not_escape() -> None:
    acks = Acks()

    def broken(_delivered: bool) -> None:
        raise RuntimeError("boom")

    acks.track(1, 1, acks.generation, broken)
    acks.acknowledged(1)  # runs on paho's thread: must not raise
    assert acks.wait_all(0)


def test_wait_all_wakes_when_the_last_message_is_acknowledged() -> None:
    acks = Acks()
    acks.track(1, 1, acks.generation)
    acks.track(2, 0, acks.generation)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(acks.wait_all(30)))
    waiter.start()
    acks.acknowledged(1)
    acks.connection_lost()  # the QoS 0 one is dropped: nothing is left to wait for
    waiter.join(30)
    assert result == [True]
