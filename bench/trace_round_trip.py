"""Where one command round trip goes: stage timestamps inside the agent.

    .venv/bin/python bench/trace_round_trip.py [--requests 300] [--collectd]

Sends commands for ``/bin/true`` one at a time (QoS 2) from an MQTT client
to an agent on a throwaway mosquitto, and stamps each stage of every round
trip by wrapping the agent's own methods (``trace_hook.py``; nothing in the
package is changed). By default the agent runs in this process with its real
MQTT link and executor; ``--collectd`` runs it in a real collectd (the hook
imported there too) with collectd's logging. Prints the median and p99 of the
time each stage took since the previous one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import trace_hook
from paho.mqtt.enums import CallbackAPIVersion

from collectd_monitor.commands.agent import RemoteAgent
from collectd_monitor.commands.client import set_nodelay
from collectd_monitor.commands.protocol import encode_command
from collectd_monitor.config import load_config
from collectd_monitor.executor import CommandExecutor
from collectd_monitor.testing.sandbox import Broker, Collectd

COMMAND_TOPIC = "trace/command"
RESULT_TOPIC = "trace/result"
WARM_UP = 20
SENT, ARRIVED = "0 sent", "9 result at the sender"


def settings(workdir: Path, broker: Broker) -> Path:
    path = workdir / "config.json"
    path.write_text(
        json.dumps(
            {
                "Host": f"127.0.0.1:{broker.port}",
                "CommandTopic": COMMAND_TOPIC,
                "CommandResultTopic": RESULT_TOPIC,
                "ClientId": "trace-agent",
                "StateDir": str(workdir / "state"),
                "Services": {"bench": {"commands": {"true": ["/bin/true"]}}},
            }
        )
    )
    path.chmod(0o600)
    return path


def drive(broker: Broker, count: int, connected: Callable[[], bool]) -> list[tuple[float, float]]:
    """Send ``count`` commands after a warm-up; (sent, result arrived) of each."""
    arrived = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="trace-peer")
    client.on_socket_open = lambda _c, _u, sock: set_nodelay(sock)
    subscribed = threading.Event()
    received = [0.0]

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        received[0] = time.perf_counter()
        arrived.set()

    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe(RESULT_TOPIC, 2)
    client.loop_start()
    times = []
    try:
        assert subscribed.wait(10), "no SUBACK"
        deadline = time.monotonic() + 10
        while not connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        ids = itertools.count(1)
        for _ in range(count + WARM_UP):
            arrived.clear()
            payload = json.dumps(encode_command(next(ids), "bench", "true"))
            started = time.perf_counter()
            client.publish(COMMAND_TOPIC, payload, qos=2)
            assert arrived.wait(10), "no result"
            times.append((started, received[0]))
            time.sleep(0.005)  # let the agent's own acknowledgements finish
    finally:
        client.disconnect()
        client.loop_stop()
    return times


def in_process(workdir: Path, broker: Broker, count: int) -> list[dict[str, float]]:
    trace_hook.instrument()
    pool = CommandExecutor(max_concurrent=4)
    config = load_config({"MonitorConfigPath": str(settings(workdir, broker))}, hostname="trace")
    agent = RemoteAgent(config, executor=pool)
    agent.start()
    try:
        times = drive(broker, count, lambda: agent.link.connected)
    finally:
        agent.stop()
        pool.shutdown()
    return merge(trace_hook.rounds, times)


def in_collectd(workdir: Path, broker: Broker, count: int) -> list[dict[str, float]]:
    output = workdir / "stamps.json"
    collectd = Collectd(
        workdir / "collectd",
        modules={
            "trace_hook": {"Output": str(output)},
            "collectd_monitor.remote": {"MonitorConfigPath": str(settings(workdir, broker))},
        },
        hostname="trace",
        env={"PYTHONPATH": str(Path(__file__).parent)},
    ).start(wait_log="connected to")
    try:
        times = drive(broker, count, lambda: True)
    finally:
        collectd.stop()
    return merge(json.loads(output.read_text()), times)


def merge(
    rounds: list[dict[str, float]], times: list[tuple[float, float]]
) -> list[dict[str, float]]:
    assert len(rounds) == len(times), f"{len(rounds)} traced messages for {len(times)} sent"
    pairs = zip(rounds, times, strict=True)
    merged = [{**stamps, SENT: sent, ARRIVED: got} for stamps, (sent, got) in pairs]
    return merged[WARM_UP:]


def report(merged: list[dict[str, float]]) -> None:
    stages: defaultdict[str, list[float]] = defaultdict(list)
    totals = []
    for stamps in merged:
        ordered = sorted(stamps.items(), key=lambda item: item[1])
        for (_, before), (name, at) in itertools.pairwise(ordered):
            stages[name].append(at - before)
        totals.append(stamps[ARRIVED] - stamps[SENT])
    print(f"\nround trip: p50 {statistics.median(totals) * 1e3:.2f} ms", end="")
    print(f", p99 {p99(totals) * 1e3:.2f} ms (n={len(totals)})\n")
    print(f"| {'stage (time since the previous one)':<40} | {'p50 ms':>7} | {'p99 ms':>7} |")
    print(f"|{'-' * 42}|{'-' * 9}|{'-' * 9}|")
    for name in sorted(stages):
        got = stages[name]
        print(f"| {name:<40} | {statistics.median(got) * 1e3:7.3f} | {p99(got) * 1e3:7.3f} |")


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(0.99 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--collectd", action="store_true", help="trace the agent in collectd")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cm-trace-"))
    broker = Broker(workdir / "broker").start()
    try:
        run = in_collectd if args.collectd else in_process
        report(run(workdir, broker, args.requests))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
