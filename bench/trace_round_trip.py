"""Where one command round trip goes: stage timestamps inside an in-process agent.

    .venv/bin/python bench/trace_round_trip.py [--requests 300]

Runs a :class:`RemoteAgent` with its real MQTT link and executor in this
process against a throwaway mosquitto, sends commands for ``/bin/true`` one at
a time from a second client, and stamps each stage of the round trip by
wrapping the agent's own methods (nothing in the package is changed). Prints
the median and p99 of every stage's share.
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
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collectd_monitor import executor as executor_module
from collectd_monitor.commands import agent as agent_module
from collectd_monitor.commands.agent import RemoteAgent
from collectd_monitor.commands.protocol import encode_command
from collectd_monitor.commands.transport import set_nodelay
from collectd_monitor.config import load_config
from collectd_monitor.executor import CommandExecutor
from collectd_monitor.testing.sandbox import Broker

COMMAND_TOPIC = "trace/command"
RESULT_TOPIC = "trace/result"

marks: dict[str, float] = {}
stages: defaultdict[str, list[float]] = defaultdict(list)


def stamp(name: str) -> None:
    marks.setdefault(name, time.perf_counter())


def wrap(owner: Any, name: str, before: str | None, after: str | None) -> None:
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            stamp(before)
        try:
            return original(*args, **kwargs)
        finally:
            if after:
                stamp(after)

    setattr(owner, name, wrapped)


def instrument() -> None:
    wrap(RemoteAgent, "handle_message", "1 message in (link thread)", None)
    wrap(CommandExecutor, "submit", "2 checks done, submit", None)
    wrap(executor_module.subprocess, "Popen", "3 worker picked the job", "4 spawned")
    wrap(executor_module.selectors.DefaultSelector, "close", "5 exit noticed, pipes drained", None)
    wrap(agent_module, "command_result", "6 reaped, logged", None)
    wrap(agent_module.Outbox, "put", None, "7 outbox written")
    wrap(RemoteAgent, "_send", None, "8 published (paho queued/written)")


def config(workdir: Path, broker: Broker) -> Any:
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
    return load_config({"MonitorConfigPath": str(path)}, hostname="trace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cm-trace-"))
    broker = Broker(workdir / "broker").start()
    instrument()
    pool = CommandExecutor(max_concurrent=4)
    agent = RemoteAgent(config(workdir, broker), executor=pool)
    agent.start()
    arrived = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="trace-peer")
    client.on_socket_open = lambda _c, _u, sock: set_nodelay(sock)
    subscribed = threading.Event()

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        stamp("9 result at the sender")
        arrived.set()

    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe(RESULT_TOPIC, 2)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        deadline = time.monotonic() + 10
        while not agent.link.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        ids = itertools.count(1)
        totals = []
        for n in range(args.requests + 20):
            arrived.clear()
            marks.clear()
            payload = json.dumps(encode_command(next(ids), "bench", "true"))
            started = time.perf_counter()
            marks["0 sent"] = started
            client.publish(COMMAND_TOPIC, payload, qos=2)
            assert arrived.wait(10), "no result"
            time.sleep(0.005)  # let the agent's own acknowledgements finish
            if n < 20:
                continue
            ordered = sorted(marks.items(), key=lambda kv: kv[1])
            for (_, t0), (name, t1) in itertools.pairwise(ordered):
                stages[name].append(t1 - t0)
            totals.append(marks["9 result at the sender"] - started)
    finally:
        client.disconnect()
        client.loop_stop()
        agent.stop()
        pool.shutdown()
        broker.stop()
    print(f"\nround trip: p50 {statistics.median(totals) * 1e3:.2f} ms", end="")
    print(f", p99 {sorted(totals)[int(0.99 * (len(totals) - 1))] * 1e3:.2f} ms\n")
    print(f"| {'stage (time since the previous one)':<40} | {'p50 ms':>7} | {'p99 ms':>7} |")
    for name in sorted(stages):
        got = sorted(stages[name])
        p99 = got[int(0.99 * (len(got) - 1))]
        print(f"| {name:<40} | {statistics.median(got) * 1e3:7.3f} | {p99 * 1e3:7.3f} |")


if __name__ == "__main__":
    main()
