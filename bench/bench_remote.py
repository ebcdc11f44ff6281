"""Remote commands: round-trip latency and collectd stop time, on loopback.

    .venv/bin/python bench/bench_remote.py [--requests 300] [--cli-runs 20] [--stops 10]

Prints one table. Rows:

* plugin round trip: one long-lived MQTT client publishes a command for a
  trivial command (``true``) and waits for its result, one at a time;
* send-command (library): what ``send-command`` does per call, minus the
  interpreter start: connect, subscribe, publish, wait for the matching result;
* send-command (process): the whole CLI process, interpreter start included;
* collectd stop: SIGTERM to exit, without the plugin, with the plugin idle, and
  with the plugin while a command is running (which it must kill and report).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collectd_monitor.commands.protocol import encode_command
from collectd_monitor.commands.sender import Sender
from collectd_monitor.commands.transport import set_nodelay
from collectd_monitor.config import BrokerSettings
from collectd_monitor.testing.sandbox import Broker, Collectd

COMMAND_TOPIC = "bench/command"
RESULT_TOPIC = "bench/result"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def row(name: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"| {name:<44} | {len(ms):>5} | {statistics.median(ms):>8.2f} | "
        f"{percentile(ms, 99):>8.2f} | {max(ms):>8.2f} |"
    )


def start_monitor(workdir: Path, broker: Broker, name: str, plugin: bool = True) -> Collectd:
    config = workdir / f"{name}.json"
    config.write_text(
        json.dumps(
            {
                "Host": broker.host,
                "CommandTopic": COMMAND_TOPIC,
                "CommandResultTopic": RESULT_TOPIC,
                "ClientId": f"bench-{name}",
                "StateDir": str(workdir / name / "state"),
                "Services": {"bench": {"commands": {"true": ["/bin/true"], "hang": "sleep 60"}}},
            }
        )
    )
    modules = {"collectd_monitor.remote": {"MonitorConfigPath": str(config)}} if plugin else {}
    collectd = Collectd(workdir / name, modules=modules, hostname=name)
    return collectd.start(wait_log="connected to" if plugin else "Initialization complete")


def plugin_round_trips(broker: Broker, count: int) -> list[float]:
    arrived = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-peer")
    client.on_socket_open = lambda _c, _u, sock: set_nodelay(sock)
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, _m: arrived.set()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe(RESULT_TOPIC, 2)
    client.loop_start()
    if not subscribed.wait(10):
        raise RuntimeError("no SUBACK for the result topic")
    samples = []
    for task_id in range(1, count + 1):
        arrived.clear()
        payload = json.dumps(encode_command(task_id, "bench", "true"))
        started = time.perf_counter()
        client.publish(COMMAND_TOPIC, payload, qos=2)
        if not arrived.wait(10):
            raise RuntimeError(f"no result for task {task_id}")
        samples.append(time.perf_counter() - started)
    client.disconnect()
    client.loop_stop()
    return samples


def sender_round_trips(broker: Broker, count: int) -> list[float]:
    settings = BrokerSettings(host="127.0.0.1", port=broker.port)
    sender = Sender(settings, COMMAND_TOPIC, RESULT_TOPIC)
    samples = []
    for task_id in range(100_000, 100_000 + count):
        started = time.perf_counter()
        sender.request(encode_command(task_id, "bench", "true"), timeout=10)
        samples.append(time.perf_counter() - started)
    return samples


def send_argv(broker: Broker, command: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "collectd_monitor", "send-command", "bench", command, "--quiet",
        "--host", broker.host, "--topic", COMMAND_TOPIC, "--result-topic", RESULT_TOPIC, *extra,
    ]  # fmt: skip


def cli_round_trips(broker: Broker, count: int) -> list[float]:
    argv = send_argv(broker, "true")
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    return samples


def stop_times(
    workdir: Path, broker: Broker, runs: int, *, plugin: bool, busy: bool
) -> list[float]:
    samples = []
    for n in range(runs):
        name = f"stop-{'p' if plugin else 'n'}{'b' if busy else 'i'}-{n}"
        collectd = start_monitor(workdir, broker, name, plugin=plugin)
        if busy:
            done = subprocess.run(
                send_argv(broker, "hang", "--timeout", "0.3"), capture_output=True
            )
            assert done.returncode == 3, done.stderr  # still running: no result yet
        took = collectd.stop()
        if took < 0:
            raise RuntimeError("collectd did not stop")
        samples.append(took)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--cli-runs", type=int, default=20)
    parser.add_argument("--stops", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cm-bench-remote-"))
    broker = Broker(workdir / "broker").start()
    rows = []
    try:
        collectd = start_monitor(workdir, broker, "main")
        try:
            plugin_round_trips(broker, 20)  # warm-up
            rows.append(
                row(
                    "plugin round trip (one client, QoS 2)",
                    plugin_round_trips(broker, args.requests),
                )
            )
            rows.append(
                row(
                    "send-command, library (connect..result)",
                    sender_round_trips(broker, max(args.requests // 3, 10)),
                )
            )
            rows.append(row("send-command, whole process", cli_round_trips(broker, args.cli_runs)))
        finally:
            collectd.stop()
        rows.append(
            row(
                "collectd stop, no plugin",
                stop_times(workdir, broker, args.stops, plugin=False, busy=False),
            )
        )
        rows.append(
            row(
                "collectd stop, plugin idle",
                stop_times(workdir, broker, args.stops, plugin=True, busy=False),
            )
        )
        rows.append(
            row(
                "collectd stop, plugin running a command",
                stop_times(workdir, broker, args.stops, plugin=True, busy=True),
            )
        )
    finally:
        broker.stop()
    print("\nRemote commands on loopback (times in ms; trivial command = /bin/true)\n")
    print(f"| {'measurement':<44} | {'n':>5} | {'p50':>8} | {'p99':>8} | {'max':>8} |")
    print(f"|{'-' * 46}|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
