"""The central plugin on a central collectd receiving 1 000 hosts' values.

    .venv/bin/python bench/bench_central.py [--hosts 1000] [--values 50] [--interval 10]
                                            [--seconds 10]

collectd-tg (Debian's collectd-utils) plays ``--hosts`` hosts sending
``--values`` value lists each every ``--interval`` seconds (1 000 x 50 / 10 s
= 5 000 values/s) to the central collectd's network plugin on 127.0.0.1.
For each setup the script measures collectd's user+system CPU (from
/proc/PID/stat) over ``--seconds`` after a warm-up of one interval and a bit,
divided by the values collectd accepted (the network plugin's own counter,
read through unixsock). Rows: collectd alone; an empty Python write
callback (the reference: what any Python plugin that sees values costs);
the central plugin with rules that judge every value. The ratio column is
µs per value over the empty write callback's.

Then the rule state memory: the central engine, in this process, is fed one
round of every host's values and ``tracemalloc`` tells the bytes it keeps,
per host. A local mosquitto takes the central plugin's MQTT link. Everything
runs on loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench_local import TG, measure, report

from collectd_monitor.confblock import module_paths, python_block
from collectd_monitor.fleetrules.engine import CentralEngine
from collectd_monitor.fleetrules.settings import CentralSettings
from collectd_monitor.rules.declarative import parse_rules
from collectd_monitor.rules.model import Metric
from collectd_monitor.testing.sandbox import Broker, Collectd, free_port, wait_for

EMPTY_WRITE = "import collectd\n\ncollectd.register_write(lambda values: None)\n"
ACTION = {"Service": "svc", "Command": "noop"}


def one_rule() -> list[dict[str, Any]]:
    """One rule that judges every value (host and plugin globs: judged in Python)."""
    return [{"Name": "all", "Host": "host*", "Plugin": "plugin*", "Above": 1e12, "Action": ACTION}]


def per_plugin_rules(plugins: int) -> list[dict[str, Any]]:
    return [
        {"Name": f"p{i}", "Host": "host*", "Plugin": f"plugin{i:03d}", "Type": "gauge",
         "Above": 1e12, "Hits": 3, "Missing": 3, "Action": ACTION}
        for i in range(plugins)
    ]  # fmt: skip


def run_row(
    workdir: Path,
    name: str,
    broker: Broker,
    args: argparse.Namespace,
    *,
    rules: list[dict[str, Any]] | None = None,
    empty_write: bool = False,
) -> tuple[float, float]:
    directory = workdir / name
    (directory / "mods").mkdir(parents=True)
    modules: dict[str, dict[str, Any]] = {}
    if empty_write:
        (directory / "mods" / "bench_empty_write.py").write_text(EMPTY_WRITE)
        modules["bench_empty_write"] = {}
    if rules is not None:
        config = {"Host": broker.host, "ClientId": f"bench-{name}", "Rules": {"Values": rules}}
        (directory / "central.json").write_text(json.dumps(config))
        modules["collectd_monitor.central"] = {"MonitorConfigPath": str(directory / "central.json")}
    port = free_port()
    sock = directory / "sock"
    conf = textwrap.dedent(f"""
        LoadPlugin unixsock
        <Plugin unixsock>
          SocketFile "{sock}"
        </Plugin>
        LoadPlugin network
        <Plugin network>
          Listen "127.0.0.1" "{port}"
          ReportStats true
        </Plugin>
    """)
    if modules:
        conf += python_block(modules, [*module_paths(), str(directory / "mods")])
    collectd = Collectd(directory, hostname="central", interval=1.0, extra_conf=conf)
    tg = None
    count = args.hosts * args.values
    try:
        collectd.start(wait_log="Initialization complete")
        wait_for(sock.exists, 10, what="unixsock")
        tg = subprocess.Popen(
            [TG, "-n", str(count), "-H", str(args.hosts), "-p", str(args.values),
             "-i", str(args.interval), "-d", "127.0.0.1", "-D", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        time.sleep(args.interval + 2)  # every series seen once: state made, caches filled
        cpu, took, values = measure(collectd, sock, "central", args.seconds)
    finally:
        if tg is not None:
            tg.terminate()
            tg.wait(5)
        collectd.stop()
    return report(collectd, name, cpu, took, values)


def state_bytes_per_host(rules: list[dict[str, Any]], hosts: int, values: int) -> float:
    parsed = parse_rules({"Values": rules}, None)
    engine = CentralEngine(parsed, CentralSettings(), send=lambda r: None, emit=lambda n: None)
    metrics = [
        Metric(f"host{h:04d}", f"plugin{v:03d}", "", "gauge", "", 1.0, 10.0, (1.0,),
               ("value",), ("gauge",))
        for h in range(hosts) for v in range(values)
    ]  # fmt: skip
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for metric in metrics:
        engine.on_metric(metric)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown / hosts


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--values", type=int, default=50, help="value lists per host")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cm-bench-central-"))
    rate = args.hosts * args.values / args.interval
    print(
        f"collectd-tg: {args.hosts} hosts x {args.values} value lists every {args.interval:g} s "
        f"= {rate:.0f} values/s into the network plugin; {args.seconds:g} s measured per run\n"
    )
    broker = Broker(workdir / "broker").start()
    rows: list[tuple[str, dict[str, Any]]] = [
        ("collectd alone (no Python)", {}),
        ("empty Python write callback", {"empty_write": True}),
        ("central: 1 rule, every value judged", {"rules": one_rule()}),
        (
            f"central: {args.values} rules (hits, missing)",
            {"rules": per_plugin_rules(args.values)},
        ),
    ]
    header = f"{'setup':<40} {'values/s':>9} {'µs CPU/value':>13} {'vs empty cb':>12}"
    print(header)
    print("-" * len(header))
    reference = None
    try:
        for i, (name, options) in enumerate(rows):
            per_value, seen = run_row(workdir, f"row{i}", broker, args, **options)
            if options.get("empty_write"):
                reference = per_value
            ratio = f"{per_value / reference:.2f}x" if reference and "rules" in options else ""
            print(f"{name:<40} {seen:>9.0f} {per_value:>13.1f} {ratio:>12}", flush=True)
    finally:
        broker.stop()
    print(f"\nrule state in memory ({args.hosts} hosts x {args.values} series, one round):")
    for name, rules in (
        ("1 rule, every value judged", one_rule()),
        (f"{args.values} rules (hits, missing)", per_plugin_rules(args.values)),
    ):
        per_host = state_bytes_per_host(rules, args.hosts, args.values)
        print(f"  {name:<38} {per_host:>9.0f} bytes per host")


if __name__ == "__main__":
    main()
