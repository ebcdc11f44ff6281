"""Fixtures: a real mosquitto and real collectd processes on 127.0.0.1.

* ``certs``: throwaway CA, server and client certificates (session).
* ``broker``: one mosquitto for the session, with anonymous, password, TLS
  and mutual-TLS listeners. Tests isolate themselves with unique topics.
* ``fresh_broker``: a mosquitto of the test's own, for tests that stop it.
* ``monitor``: a factory that writes a config.json and starts collectd with
  our plugin(s); every collectd it started is stopped after the test.
* ``peer``: an MQTT client that sends raw payloads and collects results.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collectd_monitor.commands.protocol import format_timestamp
from collectd_monitor.testing.sandbox import Broker, Certs, Collectd, make_certs, wait_for

HELLO_SERVICES: dict[str, Any] = {
    "hello": {"commands": {"exec": 'echo "Hello World!"'}},
}

_task_ids = itertools.count(1000)


def next_task_id() -> int:
    return next(_task_ids)


def command_message(service: str, command: str, task_id: int | None = None) -> dict[str, Any]:
    return {
        "task_id": task_id if task_id is not None else next_task_id(),
        "timestamp": format_timestamp(),
        "service": service,
        "command": command,
    }


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Broker]:
    server = Broker(tmp_path_factory.mktemp("broker"), certs=certs).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_broker(tmp_path: Path, certs: Certs) -> Iterator[Broker]:
    server = Broker(tmp_path / "own-broker", certs=certs).start()
    yield server
    server.stop()


@dataclass
class Monitor:
    """A running collectd with our plugin, and the topics it listens on."""

    collectd: Collectd
    config_path: Path
    command_topic: str
    result_topic: str
    broker: Broker

    def log(self) -> str:
        return self.collectd.log_text()


@dataclass
class MonitorFactory:
    tmp_path: Path
    broker: Broker
    started: list[Collectd] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def __call__(
        self,
        settings: dict[str, Any] | None = None,
        *,
        broker: Broker | None = None,
        services: dict[str, Any] | None = None,
        modules: dict[str, dict[str, Any]] | None = None,
        plugins: tuple[str, ...] = ("collectd_monitor.remote",),
        module_options: dict[str, Any] | None = None,
        wait_connected: bool = True,
        extra_conf: str = "",
        interval: float = 10.0,
        daemon: bool = False,
        env: dict[str, str] | None = None,
    ) -> Monitor:
        broker = broker or self.broker
        n = next(self.counter)
        directory = self.tmp_path / f"collectd-{n}"
        directory.mkdir(parents=True)
        unique = uuid.uuid4().hex[:10]
        config: dict[str, Any] = {
            "Host": broker.host,
            "CommandTopic": f"test/{unique}/command",
            "CommandResultTopic": f"test/{unique}/result",
            "ClientId": f"cm-test-{unique}",
            "ReconnectInterval": 0.2,
            "ReconnectMaxInterval": 1,
            "StateDir": str(directory / "state"),
            "Services": HELLO_SERVICES if services is None else services,
        }
        config.update(settings or {})
        config_path = directory / "config.json"
        config_path.write_text(json.dumps(config, indent=2))
        config_path.chmod(0o600)
        if modules is None:
            modules = {
                plugin: {"MonitorConfigPath": str(config_path), **(module_options or {})}
                for plugin in plugins
            }
        collectd = Collectd(
            directory,
            modules=modules,
            hostname=f"host-{unique}",
            interval=interval,
            extra_conf=extra_conf,
            env=env or {},
        )
        self.started.append(collectd)
        collectd.start(daemon=daemon, wait_log="connected to" if wait_connected else None)
        if wait_connected:  # "connected to" is logged before the broker has the subscription
            broker.wait_subscribed(config["ClientId"], config["CommandTopic"])
        return Monitor(
            collectd, config_path, config["CommandTopic"], config["CommandResultTopic"], broker
        )

    def stop_all(self) -> None:
        for collectd in self.started:
            collectd.stop()


@pytest.fixture
def monitor(tmp_path: Path, broker: Broker) -> Iterator[MonitorFactory]:
    factory = MonitorFactory(tmp_path, broker)
    yield factory
    factory.stop_all()


class Peer:
    """A plain MQTT client playing the sender: raw publishes, results by task_id."""

    def __init__(self, broker: Broker, *, port: int | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"peer-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port or broker.port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, message.payload))
            self._cond.notify_all()

    def subscribe(self, topic: str, qos: int = 2) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.subscribe(topic, qos)
        assert done.wait(5), f"no SUBACK for {topic}"

    def send(self, topic: str, payload: bytes | str | dict[str, Any], qos: int = 2) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def results(self, topic: str) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(p) for t, p in self.messages if t == topic]

    def result_for(self, topic: str, task_id: Any, timeout: float = 20.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for result in self.results(topic):
                if result.get("task_id") == task_id:
                    return result
            return None

        return wait_for(find, timeout, what=f"result of task {task_id}")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peer(broker: Broker) -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def make(target: Monitor | None = None, **kwargs: Any) -> Peer:
        p = Peer(target.broker if target else broker, **kwargs)
        if target is not None:
            p.subscribe(target.result_topic)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()


def pids_of(pattern: str) -> list[int]:
    """Processes whose command line contains ``pattern`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pattern in cmdline and int(entry) != os.getpid():
            found.append(int(entry))
    return found


@pytest.fixture(autouse=True, scope="session")
def _history_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Senders record a history by default: keep it out of the real home directory."""
    saved = {key: os.environ.get(key) for key in ("XDG_STATE_HOME", "COLLECTD_MONITOR_HISTORY")}
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    os.environ.pop("COLLECTD_MONITOR_HISTORY", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


from .integration.conftest_fleet import postgres_server, postgres_url  # noqa: E402, F401

REPLACER_HELPER = "collectd_monitor.replacer.helper"


def helpers_of(tmp_path: Path) -> list[int]:
    """Replacement helpers (and their guardians) started for the test in ``tmp_path``."""
    return [p for p in pids_of(REPLACER_HELPER) if p in pids_of(str(tmp_path))]


@pytest.fixture
def no_helper_left(monitor: Any, tmp_path: Path) -> Iterator[None]:
    """Let the test's replacement helpers finish before collectd is stopped (this runs
    first at teardown, as it depends on ``monitor``); kill whatever is left after 60 s."""
    yield
    try:
        wait_for(lambda: not helpers_of(tmp_path), 60, what="replacement helpers to finish")
    finally:
        for pid in helpers_of(tmp_path):
            os.kill(pid, signal.SIGKILL)
