"""Remote commands: round-trip latency and collectd stop time, on loopback.

    .venv/bin/python bench/bench_remote.py [--requests 300] [--chunk 50] [--cli-runs 20]
                                           [--stops 10]

Prints one table, each row with its ratio to the floor measured in the same run.
The floor and both plugin rows are measured in turns of ``--chunk`` round
trips, so that the machine getting faster or slower meanwhile (a VM's
neighbours) moves them alike:

* floor: a minimal paho responder (one process, TCP_NODELAY, QoS 2) that runs
  the same ``/bin/true`` with ``subprocess.run`` in its on_message callback
  and publishes the exit status;
* floor, subscribed at QoS 1: the same responder with a QoS 1 subscription,
  as the plugin has (which keeps a seen file against redeliveries; this
  responder would run a redelivered command twice): what the plugin's
  subscription saves, shown apart from the rest of its path;
* plugin round trip: one long-lived MQTT client publishes a command for a
  trivial command (``true``) and waits for its result, one at a time (goal:
  p50 <= 1.3x the floor, p99 <= 10 ms). The plugin speaks MQTT 5 by default
  (``MqttVersion`` auto), the floor paho's default 3.1.1; a second row runs
  the plugin with ``MqttVersion`` 3.1.1, the same protocol as the floor;
* send-command (library): what ``send-command`` does per call, minus the
  interpreter start: connect, subscribe, publish, wait for the matching result;
* import floor: ``python -c "import paho.mqtt.client"``;
* send-command (process): the whole CLI process, interpreter start included,
  recording into a history of its own (goal: p50 <= 1.5x the import floor).
  Both process rows run with bytecode caching on, in a cache of their own
  (``PYTHONPYCACHEPREFIX``), after one unmeasured run each: an installed
  package has its ``.pyc`` files, and with ``PYTHONDONTWRITEBYTECODE`` set an
  editable install would compile every module of ours on every run while
  paho's come compiled from site-packages;
* collectd stop: SIGTERM to exit, without the plugin, with the plugin idle, and
  with the plugin while a command is running (which it must kill and report).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collectd_monitor.commands.client import set_nodelay
from collectd_monitor.commands.protocol import encode_command
from collectd_monitor.commands.sender import Sender
from collectd_monitor.config import BrokerSettings
from collectd_monitor.testing.sandbox import Broker, Collectd

COMMAND_TOPIC = "bench/command"
RESULT_TOPIC = "bench/result"
TASK_IDS = itertools.count(1)
FLOOR_COMMAND_TOPIC = "bench/floor/command"
FLOOR_RESULT_TOPIC = "bench/floor/result"
RESPONDER = """
import json, socket, subprocess, sys
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

def on_message(client, _u, message):
    task = json.loads(message.payload)
    done = subprocess.run(["/bin/true"], capture_output=True)
    result = {"task_id": task["task_id"], "message": done.stdout.decode(), "code": done.returncode}
    client.publish(sys.argv[3], json.dumps(result), qos=2)

def on_connect(client, *_):
    client.subscribe(sys.argv[2], int(sys.argv[4]))

client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-floor-{sys.argv[4]}")
client.on_socket_open = lambda _c, _u, s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
client.on_message = on_message
client.on_connect = on_connect
client.on_subscribe = lambda *_: print("ready", flush=True)
client.connect("127.0.0.1", int(sys.argv[1]))
client.loop_forever()
"""


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def row(name: str, samples: list[float], floor: list[float] | None = None) -> str:
    ms = [s * 1000 for s in samples]
    p50, p99 = statistics.median(ms), percentile(ms, 99)
    ratio = "-"
    if floor:
        base50, base99 = statistics.median(floor) * 1000, percentile(floor, 99) * 1000
        ratio = f"{p50 / base50:.2f}x / {p99 / base99:.2f}x"
    return (
        f"| {name:<44} | {len(ms):>5} | {p50:>8.2f} | {p99:>8.2f} | {max(ms):>8.2f} | {ratio:>15} |"
    )


def monitor_config(
    workdir: Path, broker: Broker, name: str, topics: tuple[str, str], mqtt_version: str
) -> Path:
    """The config.json of bench plugin ``name``: ``true`` and ``hang`` on ``topics``."""
    config = workdir / f"{name}.json"
    config.write_text(
        json.dumps(
            {
                "Host": broker.host,
                "CommandTopic": topics[0],
                "CommandResultTopic": topics[1],
                "MqttVersion": mqtt_version,
                "ClientId": f"bench-{name}",
                "StateDir": str(workdir / name / "state"),
                "Services": {"bench": {"commands": {"true": ["/bin/true"], "hang": "sleep 60"}}},
            }
        )
    )
    return config


def start_monitor(
    workdir: Path,
    broker: Broker,
    name: str,
    plugin: bool = True,
    topics: tuple[str, str] = (COMMAND_TOPIC, RESULT_TOPIC),
    mqtt_version: str = "auto",
) -> Collectd:
    config = monitor_config(workdir, broker, name, topics, mqtt_version)
    modules = {"collectd_monitor.remote": {"MonitorConfigPath": str(config)}} if plugin else {}
    collectd = Collectd(workdir / name, modules=modules, hostname=name)
    return collectd.start(wait_log="connected to" if plugin else "Initialization complete")


def plugin_round_trips(
    broker: Broker, count: int, topics: tuple[str, str] = (COMMAND_TOPIC, RESULT_TOPIC)
) -> list[float]:
    arrived = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-peer")
    client.on_socket_open = lambda _c, _u, sock: set_nodelay(sock)
    subscribed = threading.Event()
    client.on_message = lambda _c, _u, _m: arrived.set()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe(topics[1], 2)
    client.loop_start()
    if not subscribed.wait(10):
        raise RuntimeError("no SUBACK for the result topic")
    samples = []
    for _ in range(count):
        task_id = next(TASK_IDS)  # never reused: a duplicate is refused without running
        arrived.clear()
        payload = json.dumps(encode_command(task_id, "bench", "true"))
        started = time.perf_counter()
        client.publish(topics[0], payload, qos=2)
        if not arrived.wait(10):
            raise RuntimeError(f"no result for task {task_id}")
        samples.append(time.perf_counter() - started)
    client.disconnect()
    client.loop_stop()
    return samples


@contextlib.contextmanager
def responder(broker: Broker, qos: int = 2) -> Iterator[tuple[str, str]]:
    """The minimal responder subscribed at ``qos``, running; yields its (command, result) topics."""
    topics = (f"{FLOOR_COMMAND_TOPIC}/{qos}", f"{FLOOR_RESULT_TOPIC}/{qos}")
    process = subprocess.Popen(
        [sys.executable, "-c", RESPONDER, str(broker.port), *topics, str(qos)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield topics
    finally:
        process.terminate()
        process.wait(5)


def interleaved(
    broker: Broker, targets: list[tuple[str, str]], count: int, chunk: int
) -> list[list[float]]:
    """``count`` round trips against each of ``targets``, taken in turns of ``chunk``:
    a machine that gets slower or faster during the run moves every row alike."""
    for topics in targets:
        plugin_round_trips(broker, 20, topics)  # warm-up
    samples: list[list[float]] = [[] for _ in targets]
    while len(samples[0]) < count:
        for topics, taken in zip(targets, samples, strict=True):
            taken.extend(plugin_round_trips(broker, min(chunk, count - len(taken)), topics))
    return samples


def process_env(workdir: Path) -> dict[str, str]:
    """The environment of the timed processes: bytecode cached (in ``workdir``), history there."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    env["COLLECTD_MONITOR_HISTORY"] = str(workdir / "history.sqlite3")
    return env


def timed_runs(argv: list[str], count: int, env: dict[str, str]) -> list[float]:
    subprocess.run(argv, check=True, capture_output=True, env=env)  # fills the bytecode cache
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        samples.append(time.perf_counter() - started)
    return samples


def import_floor(count: int, env: dict[str, str]) -> list[float]:
    return timed_runs([sys.executable, "-c", "import paho.mqtt.client"], count, env)


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


def cli_round_trips(broker: Broker, count: int, env: dict[str, str]) -> list[float]:
    return timed_runs(send_argv(broker, "true"), count, env)


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
    parser.add_argument(
        "--chunk", type=int, default=50, help="round trips per turn of floor and plugins"
    )
    parser.add_argument("--cli-runs", type=int, default=20)
    parser.add_argument("--stops", type=int, default=10, help="collectd stops per row (0: none)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cm-bench-remote-"))
    broker = Broker(workdir / "broker").start()
    rows = []
    try:
        collectd = start_monitor(workdir, broker, "main")
        try:
            v311_topics = ("bench/v311/command", "bench/v311/result")
            v311 = start_monitor(workdir, broker, "v311", topics=v311_topics, mqtt_version="3.1.1")
            try:
                with responder(broker) as floor_topics, responder(broker, 1) as qos1_topics:
                    plugin_topics = (COMMAND_TOPIC, RESULT_TOPIC)
                    targets = [floor_topics, qos1_topics, plugin_topics, v311_topics]
                    floor, floor_qos1, plugin_rtt, plugin311 = interleaved(
                        broker, targets, args.requests, args.chunk
                    )
            finally:
                v311.stop()
            rows.append(row("floor: minimal paho responder, /bin/true", floor))
            rows.append(row("floor, subscribed at QoS 1 (as the plugin)", floor_qos1, floor))
            rows.append(row("plugin round trip (one client, QoS 2)", plugin_rtt, floor))
            rows.append(row("plugin, MqttVersion 3.1.1 (as the floor)", plugin311, floor))
            rows.append(
                row(
                    "send-command, library (connect..result)",
                    sender_round_trips(broker, max(args.requests // 3, 10)),
                )
            )
            env = process_env(workdir)
            imports = import_floor(args.cli_runs, env)
            rows.append(row("import floor: python -c 'import paho.mqtt.client'", imports))
            rows.append(
                row(
                    "send-command, whole process",
                    cli_round_trips(broker, args.cli_runs, env),
                    imports,
                )
            )
        finally:
            collectd.stop()
        stops = [
            ("collectd stop, no plugin", False, False),
            ("collectd stop, plugin idle", True, False),
            ("collectd stop, plugin running a command", True, True),
        ]
        for name, plugin, busy in stops if args.stops > 0 else []:
            rows.append(
                row(name, stop_times(workdir, broker, args.stops, plugin=plugin, busy=busy))
            )
    finally:
        broker.stop()
    print("\nRemote commands on loopback (times in ms; trivial command = /bin/true)\n")
    print(
        f"| {'measurement':<44} | {'n':>5} | {'p50':>8} | {'p99':>8} | {'max':>8} "
        f"| {'p50/p99 : floor':>15} |"
    )
    print(f"|{'-' * 46}|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 17}|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
