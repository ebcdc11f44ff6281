"""Config replacement: end-to-end time of a push, a rollback, and a bare restart.

    .venv/bin/python bench/bench_replace.py [--runs 5] [--settle 1.0] [--watch 1.0]

A throwaway mosquitto and a real collectd (daemonized, pid file, remote
plugin) under a temporary directory. Rows (median and range of ``--runs``):

* successful replacement: publish a config push, until its result (code 0)
  arrives, published by the restarted daemon's plugin;
* rollback: a config that passes ``collectd -T`` but whose daemon dies right
  after start, until the 0x2007 result arrives from the restored daemon;
* bare stop + start: SIGTERM, wait for exit, ``collectd -C -P``, until the new
  pid file appears / until the new plugin is connected to the broker.

The replacement includes ``SettleTime`` (the new daemon must stay up that long),
set here with ``--settle``; production defaults to 3 s. After a success the
helper keeps watching the new daemon for ``WatchTime`` (``--watch``, production
60 s) and holds the replacement lock meanwhile; the next push waits for that
outside the timed part.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collectd_monitor.commands.protocol import encode_config
from collectd_monitor.replacer.paths import lock_path_for
from collectd_monitor.replacer.plugin import lock_busy
from collectd_monitor.testing.sandbox import Broker, Collectd, wait_for

COMMAND_TOPIC = "bench/replace/command"
RESULT_TOPIC = "bench/replace/result"

DIE_SOON = """
import os, signal
import collectd

def _init():
    if os.environ.get("COLLECTD_MONITOR_OFFLINE"):
        return
    os.kill(os.getpid(), signal.SIGKILL)  # dies in init, before any settle time

collectd.register_init(_init)
"""


class Client:
    """One MQTT client that publishes pushes and collects results by task_id."""

    def __init__(self, broker: Broker) -> None:
        self.results: dict[int, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-replace")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.subscribe(RESULT_TOPIC, 2)
        subscribed.wait(5)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        result = json.loads(message.payload)
        with self.cond:
            self.results[result["task_id"]] = result
            self.cond.notify_all()

    def push(self, task_id: int, text: str, timeout: float = 120) -> tuple[float, int]:
        started = time.monotonic()
        body = json.dumps(encode_config(task_id, text))
        self.client.publish(COMMAND_TOPIC, body, qos=2)
        with self.cond:
            if not self.cond.wait_for(lambda: task_id in self.results, timeout):
                raise TimeoutError(f"no result for task {task_id}")
            return time.monotonic() - started, int(self.results[task_id]["code"])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connected_count(collectd: Collectd) -> int:
    return collectd.log_text().count("collectd_monitor.commands.transport: connected to")


def summary(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{statistics.median(ms):8.0f} ms   ({min(ms):.0f} - {max(ms):.0f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="SettleTime in seconds (production default 3)",
    )
    parser.add_argument(
        "--watch",
        type=float,
        default=1.0,
        help="WatchTime in seconds (production default 60); not part of the timings",
    )
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-replace-"))
    broker = Broker(work / "broker").start()
    config = work / "config.json"
    config.write_text(
        json.dumps(
            {
                "Host": broker.host,
                "CommandTopic": COMMAND_TOPIC,
                "CommandResultTopic": RESULT_TOPIC,
                "ClientId": "bench-replace-host",
                "ReconnectInterval": 0.2,
                "ReconnectMaxInterval": 1,
                "StateDir": str(work / "state"),
                "AllowConfigReplace": True,
                "Services": {
                    "collectd": {
                        "SettleTime": args.settle,
                        "WatchTime": args.watch,
                        "ConnectTimeout": 10,
                    }
                },
            }
        )
    )
    config.chmod(0o600)
    collectd = Collectd(
        work / "collectd",
        hostname="bench",
        modules={"collectd_monitor.remote": {"MonitorConfigPath": str(config)}},
    )
    modules = work / "modules"
    modules.mkdir()
    (modules / "die_soon.py").write_text(DIE_SOON)
    rows: list[tuple[str, list[float]]] = []
    client: Client | None = None
    try:
        collectd.start(daemon=True, wait_log="connected to")
        client = Client(broker)
        good, bad = [], []
        lock = lock_path_for(collectd.conf_path)  # one lock per live config file

        def idle() -> None:
            wait_for(lambda: not lock_busy(lock), 60 + args.watch, what="the previous watch")

        for run in range(args.runs):
            text = dataclasses.replace(collectd, interval=5.0 + run).render_config()
            idle()
            took, code = client.push(1000 + run, text)
            assert code == 0, f"replacement failed with 0x{code:04x}"
            good.append(took)
            broken = text.replace(
                "<Plugin python>\n",
                f'<Plugin python>\n  ModulePath "{modules}"\n  Import "die_soon"\n',
                1,
            )
            idle()
            took, code = client.push(2000 + run, broken)
            assert code == 0x2007, f"rollback ended with 0x{code:04x}"
            bad.append(took)
        rows += [
            ("successful replacement (push -> result 0)", good),
            ("rollback (push -> result 0x2007)", bad),
        ]

        to_pid, to_connected = [], []
        idle()
        for _ in range(args.runs):
            before = connected_count(collectd)
            old = collectd.pid()
            started = time.monotonic()
            collectd.stop()
            collectd.start(daemon=True)
            wait_for(
                lambda old=old: collectd.pid() not in (None, old),
                20,
                interval=0.002,
                what="new pid",
            )
            to_pid.append(time.monotonic() - started)
            wait_for(
                lambda before=before: connected_count(collectd) > before,
                20,
                interval=0.002,
                what="plugin connected",
            )
            to_connected.append(time.monotonic() - started)
        rows += [
            ("bare stop + start, until new pid file", to_pid),
            ("bare stop + start, until plugin connected", to_connected),
        ]
    finally:
        if client is not None:
            client.close()
        collectd.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"config replacement on loopback, {args.runs} runs each, SettleTime {args.settle:g} s")
    print(f"{'':45} {'median':>11}   (range)")
    for name, samples in rows:
        print(f"{name:45} {summary(samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
