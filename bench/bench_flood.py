"""Flood a live remote plugin with mixed messages; report counts and memory.

    .venv/bin/python bench/bench_flood.py [--rounds 5] [--per-round 3000]

Each round sends a third valid commands (/bin/true), a third invalid messages
with a task_id, and a third junk without one, to a real collectd over a real
mosquitto on 127.0.0.1. Prints a row per round: what was sent, answered,
rejected, lost and duplicated, and collectd's resident memory after the round.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from collectd_monitor.testing.flood import rss_kib, run_flood
from collectd_monitor.testing.sandbox import Broker, Collectd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=3000)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
