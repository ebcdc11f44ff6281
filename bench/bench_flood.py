"""Flood a live remote plugin with mixed messages; report counts and memory.

    .venv/bin/python bench/bench_flood.py [--rounds 5] [--per-round 3000]
    .venv/bin/python bench/bench_flood.py --junk 20000 [--junk-rounds 3]

Each round sends a third valid commands (/bin/true), a third invalid messages
with a task_id, and a third junk without one, to a real collectd over a real
mosquitto on 127.0.0.1. Prints a row per round: what was sent, answered,
rejected, lost and duplicated, and collectd's resident memory after the round.

With ``--junk N`` the host requires signatures instead: each round publishes N
unsigned junk commands (QoS 0, each with a task_id), then one signed command,
and prints how long the signed command waited for its answer, how many junk
messages got an answer, and collectd's resident memory before and after.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from collectd_monitor.commands.security import Signer
from collectd_monitor.testing.flood import junk_flood, rss_kib, run_flood
from collectd_monitor.testing.sandbox import Broker, Collectd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=3000)
    parser.add_argument("--junk", type=int, default=0, help="junk flood mode: messages per round")
    parser.add_argument("--junk-rounds", type=int, default=3)
    args = parser.parse_args()
    if args.junk:
        junk_bench(args.junk, args.junk_rounds)
        return
    workdir = Path(tempfile.mkdtemp(prefix="cm-bench-flood-"))
    broker = Broker(workdir / "broker").start()
    config = workdir / "config.json"
    config.write_text(
        json.dumps(
            {
                "Host": broker.host,
                "CommandTopic": "flood/command",
                "CommandResultTopic": "flood/result",
                "ClientId": "bench-flood",
                "QoS": 1,
                "MaxQueuedCommands": 1000,
                "MaxRefusalsPerSecond": 100_000,  # every refusal answered, as before the limit
                "StateDir": str(workdir / "state"),
                "Services": {"svc": {"commands": {"true": ["/bin/true"]}}},
            }
        )
    )
    collectd = Collectd(
        workdir / "collectd",
        hostname="flood",
        modules={"collectd_monitor.remote": {"MonitorConfigPath": str(config)}},
    )
    rows = []
    try:
        collectd.start(wait_log="connected to")
        pid = collectd.pid()
        assert pid is not None
        rows.append(("start", 0, 0, 0, 0, 0, 0, 0.0, rss_kib(pid)))
        for n in range(1, args.rounds + 1):
            r = run_flood(
                broker.port, "flood/command", "flood/result", total=args.per_round, seed=n
            )
            alive = collectd.pid() == pid
            rows.append(
                (
                    f"round {n}{'' if alive else ' (collectd DIED)'}",
                    r.sent,
                    r.valid,
                    r.answered,
                    r.rejected,
                    r.lost,
                    r.duplicated,
                    r.seconds,
                    rss_kib(pid),
                )
            )
    finally:
        collectd.stop()
        broker.stop()
    print("\nFlood of mixed messages against a live plugin (QoS 1, loopback)\n")
    print(
        "| round | sent | valid | answered once | rejected once | lost | duplicated "
        "| seconds | collectd RSS KiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| {} | {} | {} | {} | {} | {} | {} | {:.2f} | {} |".format(*row))


SECRET = "bench-shared-secret-of-enough-length"


def junk_bench(total: int, rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cm-bench-junk-"))
    broker = Broker(workdir / "broker").start()
    config = workdir / "config.json"
    config.write_text(
        json.dumps(
            {
                "Host": broker.host,
                "CommandTopic": "junk/command",
                "CommandResultTopic": "junk/result",
                "ClientId": "bench-junk",
                "StateDir": str(workdir / "state"),
                "Security": {"HmacKeys": {"central": SECRET}},
                "Services": {"svc": {"commands": {"true": ["/bin/true"]}}},
            }
        )
    )
    config.chmod(0o600)
    collectd = Collectd(
        workdir / "collectd",
        hostname="junk",
        modules={"collectd_monitor.remote": {"MonitorConfigPath": str(config)}},
    )
    signer = Signer("hmac-sha256", "central", SECRET.encode())
    rows = []
    try:
        collectd.start(wait_log="connected to")
        broker.wait_subscribed("bench-junk", "junk/command")
        pid = collectd.pid()
        assert pid is not None
        for n in range(1, rounds + 1):
            before = rss_kib(pid)
            r = junk_flood(
                broker.port,
                "junk/command",
                "junk/result",
                signer,
                total=total,
                seed=n,
                service="svc",
                command="true",
            )
            rows.append(
                (
                    n,
                    r.sent,
                    r.send_seconds,
                    r.answered,
                    r.latency,
                    r.junk_results,
                    before,
                    rss_kib(pid),
                )
            )
        log_bytes = collectd.log_path.stat().st_size
    finally:
        collectd.stop()
        broker.stop()
    print(
        f"\nSigned command behind {total} unsigned junk messages (signatures required, loopback)\n"
    )
    print(
        "| round | junk sent | publish s | signed answered | signed latency s "
        "| junk answered | RSS before KiB | RSS after KiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| {} | {} | {:.2f} | {} | {:.3f} | {} | {} | {} |".format(*row))
    print(f"\ncollectd log: {log_bytes} bytes in all")


if __name__ == "__main__":
    main()
