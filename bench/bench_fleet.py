"""Fan-out to a simulated fleet: ``send-command ... --to '*'`` to 100, 1 000 and 10 000 hosts.

    .venv/bin/python bench/bench_fleet.py [--hosts 100,1000,10000] [--sim-connections 4]

Per row, on a throwaway mosquitto (loopback):

* a simulator (one process, a few MQTT connections sharing the command
  topics through an MQTT 5 shared subscription) publishes a retained online
  status for N hosts ``benchN-xxxx/host-00000`` ... and answers every command
  on the host's result topic, as the remote plugin would;
* ``collectd-monitor record`` runs on a fresh SQLite history and has recorded
  the N presence messages before the clock starts;
* ``collectd-monitor send-command bench ok --to '*'`` runs as a process of its
  own (interpreter start and the presence read included), with its own SQLite
  history; the clock stops when the recorder's history holds all N results.

Columns: the sender's wall time and CPU (user + system), the fan-out phase
alone (from its summary line), MQTT messages per second through the sender
(N requests out + N results in, over the fan-out phase), the recorder's CPU,
and "recorded": from starting the sender until the recorder's history holds
every result. The goal is 10 000 hosts answered and recorded in <= 10 s.

The broker allows deep per-client queues (``max_queued_messages``): with
mosquitto's default of 1000 a subscriber that falls behind (the recorder
reads every request and every result) loses messages.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collectd_monitor.commands.client import set_nodelay
from collectd_monitor.commands.protocol import format_timestamp
from collectd_monitor.testing.sandbox import Broker, wait_for

CLI = [sys.executable, "-m", "collectd_monitor"]
BROKER_CONF = "max_queued_messages 100000\nmax_inflight_messages 1000\n"


# -- the simulator (runs as a process of its own: bench_fleet.py --simulate ...) ------------


def simulate(port: int, prefix: str, count: int, connections: int) -> None:
    """Presence for ``count`` hosts, and an answer to every command, until stdin closes."""
    clients: list[mqtt.Client] = []
    for index in range(connections):
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sim-{index}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        client.max_inflight_messages_set(1000)
        client.on_socket_open = lambda _c, _u, sock: set_nodelay(sock)
        subscribed = threading.Event()

        def on_message(c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
            try:
                data = json.loads(message.payload)
                host = message.topic.split("/")[1]
                answer = {
                    "task_id": data["task_id"],
                    "timestamp": format_timestamp(),
                    "message": "ok",
                    "code": 0,
                }
                c.publish(f"{prefix}/{host}/result", json.dumps(answer), qos=1)
            except Exception as exc:  # never let paho's thread die
                print(f"simulator: {exc}", file=sys.stderr)

        client.on_message = on_message
        client.on_subscribe = lambda *_a, ev=subscribed: ev.set()
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.subscribe(f"$share/sim/{prefix}/+/command", qos=1)
        if not subscribed.wait(10):
            raise SystemExit("simulator: no SUBACK")
        clients.append(client)
    since = format_timestamp()
    last = None
    for n in range(count):
        host = f"host-{n:05d}"
        status = {
            "status": "online",
            "host": host,
            "since": since,
            "timestamp": since,
            "version": "bench",
            "services": {"bench": ["ok"]},
            "config_push": False,
        }
        last = clients[n % connections].publish(
            f"{prefix}/{host}/status", json.dumps(status), qos=1, retain=True
        )
    if last is not None:
        last.wait_for_publish(60)
    print("ready", flush=True)
    sys.stdin.read()
    for client in clients:
        client.disconnect()
        client.loop_stop()


# -- the measurement --------------------------------------------------------------------------


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0


def settled(condition: Callable[[], bool], timeout: float) -> bool:
    try:
        wait_for(condition, timeout, interval=0.05, what="the recorder")
    except TimeoutError:
        return False
    return True


def one_row(
    broker: Broker, workdir: Path, hosts: int, args: argparse.Namespace, notes: list[str]
) -> dict[str, Any]:
    connections = args.sim_connections
    prefix = f"bench{hosts}-{uuid.uuid4().hex[:6]}"
    sim = subprocess.Popen(
        [sys.executable, __file__, "--simulate", prefix, "--port", str(broker.port),
         "--hosts", str(hosts), "--sim-connections", str(connections)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert sim.stdout is not None and sim.stdin is not None
    if sim.stdout.readline().strip() != "ready":
        raise SystemExit("the simulator did not start")
    recorded_db = workdir / f"recorder-{hosts}.sqlite3"
    topics = [
        "--topic", f"{prefix}/+/command",
        "--result-topic", f"{prefix}/+/result",
        "--status-topic", f"{prefix}/+/status",
    ]  # fmt: skip
    recorder = subprocess.Popen(
        [*CLI, "record", "--host", broker.host, "--history", str(recorded_db), "--qos", "1",
         "--quiet", *topics],
        stderr=open(workdir / f"recorder-{hosts}.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    try:
        presence = "SELECT COUNT(*) FROM presence"
        if not settled(lambda: count(recorded_db, presence) >= hosts, 60):
            notes.append(
                f"{hosts} hosts: the recorder got {count(recorded_db, presence)} of {hosts} "
                "retained status messages (the broker dropped the rest)"
            )
        recorder_cpu = cpu_of(recorder.pid)
        out_path, err_path = workdir / f"sender-{hosts}.out", workdir / f"sender-{hosts}.err"
        started = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            sender = subprocess.Popen(
                [*CLI, "send-command", "bench", "ok", "--to", "*", "--host", broker.host,
                 "--history", str(workdir / f"sender-{hosts}.sqlite3"), "--timeout", "60",
                 "--quiet", "--parallel", str(args.parallel), "--qos", str(args.qos), *topics],
                stdout=out, stderr=err,
            )  # fmt: skip
            _, status, usage = os.wait4(sender.pid, 0)
            sender.returncode = os.waitstatus_to_exitcode(status)
        sender_wall = time.monotonic() - started
        sql = "SELECT COUNT(*) FROM requests WHERE code IS NOT NULL"
        if settled(lambda: count(recorded_db, sql) >= hosts or sender.returncode != 0, 60):
            recorded = time.monotonic() - started
        else:
            recorded = float("nan")
            notes.append(
                f"{hosts} hosts: the recorder recorded {count(recorded_db, sql)} of {hosts} "
                "results (the broker dropped the rest)"
            )
        recorder_cpu = cpu_of(recorder.pid) - recorder_cpu
    finally:
        recorder.terminate()
        recorder.wait(30)
        sim.stdin.close()
        sim.wait(30)
    err_text = err_path.read_text()
    answered = sum(1 for line in out_path.read_text().splitlines() if '"code": 0' in line)
    match = re.search(r"; ([\d.]+) s$", err_text.strip())
    fanout = float(match[1]) if match else float("nan")
    return {
        "hosts": hosts,
        "exit": sender.returncode,
        "answered": answered,
        "wall": sender_wall,
        "fanout": fanout,
        "cpu": usage.ru_utime + usage.ru_stime,
        "msgs": 2 * hosts / fanout if fanout else float("nan"),
        "recorder_cpu": recorder_cpu,
        "recorded": recorded,
        "summary": err_text.strip().splitlines()[-1] if err_text.strip() else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="100,1000,10000")
    parser.add_argument("--sim-connections", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=100, help="the sender's --parallel")
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1, 2), help="the sender's --qos")
    parser.add_argument(
        "--default-queues",
        action="store_true",
        help="keep mosquitto's default per-client queue (1000) and in-flight (20) limits",
    )
    parser.add_argument("--simulate", metavar="PREFIX", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.simulate:
        simulate(args.port, args.simulate, int(args.hosts), args.sim_connections)
        return
    sizes = [int(n) for n in args.hosts.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        workdir = Path(tmp)
        conf = "" if args.default_queues else BROKER_CONF
        broker = Broker(workdir / "broker", extra_conf=conf).start()
        try:
            notes: list[str] = []
            rows = [one_row(broker, workdir, n, args, notes) for n in sizes]
        finally:
            broker.stop()
    queues = "mosquitto's default queues" if args.default_queues else BROKER_CONF.strip()
    print(
        f"fan-out on {os.cpu_count()} CPU(s), mosquitto on loopback ({queues!r}), "
        f"--qos {args.qos}, --parallel {args.parallel}, {args.sim_connections} simulator links"
    )
    print()
    print("| hosts  | answered | exit | sender wall | fan-out | msgs/s (sender) "
          "| sender CPU | recorder CPU | recorded after |")  # fmt: skip
    print("| ------ | -------- | ---- | ----------- | ------- | --------------- "
          "| ---------- | ------------ | -------------- |")  # fmt: skip
    for r in rows:
        print(
            f"| {r['hosts']:>6} | {r['answered']:>8} | {r['exit']:>4} | {r['wall']:>9.2f} s "
            f"| {r['fanout']:>5.2f} s | {r['msgs']:>15.0f} | {r['cpu']:>8.2f} s "
            f"| {r['recorder_cpu']:>10.2f} s | {r['recorded']:>12.2f} s |"
        )
    for r in rows:
        if r["exit"] != 0:
            print(f"{r['hosts']} hosts: {r['summary']}")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
