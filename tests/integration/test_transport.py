"""MqttLink against a real mosquitto: deliveries reported through on_publish."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectd_monitor.commands.acks import Done
from collectd_monitor.commands.transport import MqttLink
from collectd_monitor.config import BrokerSettings
from collectd_monitor.testing.sandbox import Broker, wait_for

from ..conftest import Peer

pytestmark = pytest.mark.integration


class Deliveries:
    def __init__(self) -> None:
        self.results: dict[str, bool] = {}
        self._cond = threading.Condition()

    def on_done(self, name: str) -> Done:
        def done(delivered: bool) -> None:
            with self._cond:
                self.results[name] = delivered
                self._cond.notify_all()

        return done

    def wait(self, *names: str, timeout: float = 20.0) -> dict[str, bool]:
        with self._cond:
            assert self._cond.wait_for(lambda: set(names) <= set(self.results), timeout), (
                f"deliveries so far: {self.results}"
            )
            return {name: self.results[name] for name in names}


def settings(broker: Broker, **extra: object) -> BrokerSettings:
    return BrokerSettings(
        host="127.0.0.1",
        port=broker.port,
        client_id=f"link-{uuid.uuid4().hex[:8]}",
        reconnect_interval=0.2,
        reconnect_max_interval=0.5,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def links() -> Iterator[list[MqttLink]]:
    made: list[MqttLink] = []
    yield made
    for link in made:
        link.stop(2)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_each_qos_is_reported_delivered_once(broker, links, protocol) -> None:
    topic = f"link/{uuid.uuid4().hex}"
    peer = Peer(broker)
    try:
        peer.subscribe(topic)
        link = MqttLink(settings(broker, protocol=protocol))
        links.append(link)
        link.start()
        wait_for(lambda: link.connected, 10, what="the link to connect")
        deliveries = Deliveries()
        for qos in (0, 1, 2):
            assert link.publish(
                topic, f"q{qos}".encode(), qos, on_done=deliveries.on_done(f"q{qos}")
            )
        assert deliveries.wait("q0", "q1", "q2") == {"q0": True, "q1": True, "q2": True}
        assert link.flush(5)
        wait_for(lambda: len(peer.messages) == 3, 10, what="three messages at the peer")
    finally:
        peer.close()


def test_messages_queued_while_the_broker_is_down_are_delivered_after_it_returns(
    tmp_path: Path, certs, links
) -> None:
    broker = Broker(tmp_path / "broker", certs=certs)  # not started yet
    link = MqttLink(settings(broker))
    links.append(link)
    link.start()
    deliveries = Deliveries()
    assert not link.publish("link/t", b"dropped", 0, on_done=deliveries.on_done("q0"))
    assert link.publish("link/t", b"kept", 1, on_done=deliveries.on_done("q1"))
    assert not link.flush(0)
    broker.start()
    try:
        assert deliveries.wait("q1") == {"q1": True}
        assert "q0" not in deliveries.results  # never taken, never reported
        assert link.flush(5)
    finally:
        broker.stop()


def test_messages_in_flight_across_a_broker_restart_are_delivered_once_it_is_back(
    tmp_path: Path, certs, links
) -> None:
    """paho resends QoS 1/2 after the reconnect with the same message id; on_publish follows."""
    broker = Broker(tmp_path / "broker", certs=certs).start()
    try:
        link = MqttLink(settings(broker))
        links.append(link)
        link.start()
        wait_for(lambda: link.connected, 10, what="the link to connect")
        broker.stop()
        wait_for(lambda: not link.connected, 10, what="the link to notice")
        deliveries = Deliveries()
        assert link.publish("link/t", b"one", 1, on_done=deliveries.on_done("q1"))
        assert link.publish("link/t", b"two", 2, on_done=deliveries.on_done("q2"))
        assert not link.flush(0)
        broker.start()
        assert deliveries.wait("q1", "q2") == {"q1": True, "q2": True}
        assert link.flush(5)
    finally:
        broker.stop()
