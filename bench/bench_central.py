"""The central plugin on a central collectd receiving 1 000 hosts' values.

    .venv/bin/python bench/bench_central.py [--hosts 1000] [--values 50] [--interval 10]
                                            [--seconds 10] [--faulty 10] [--rows ...]
                                            [--write-threads N]

collectd-tg (Debian's collectd-utils) plays ``--hosts`` hosts sending
``--values`` value lists each every ``--interval`` seconds (1 000 x 50 / 10 s
= 5 000 values/s) to the central collectd's network plugin on 127.0.0.1.
For each setup the script measures collectd's user+system CPU (from
/proc/PID/stat) over ``--seconds`` after a warm-up of one interval and a bit,
divided by the values collectd accepted (the network plugin's own counter,
read through unixsock). Rows, each with its ratio to the row it is judged
against and the goal:

* collectd alone;
* collectd + threshold: the ``<Plugin threshold>`` block that ``collectd-monitor
  collectd-conf --central`` makes for the compiled rules below (the same
  generator), no Python: the floor of compiled rules;
* central, compiled rules: that block plus the central plugin with its
  ``ThresholdRules`` digest; every value rule compiles, so no write callback
  is registered and only the threshold plugin's notifications reach Python
  (goal <= 1.05x the threshold row). The rules judge every gauge value (one
  threshold per plugin, any host, never crossed) and the derive rates of
  ``--faulty`` hosts (one threshold per host, crossed by about one value in
  seven: FAILURE and OKAY notifications flow all the time, repairs are sent
  and held by the fleet limits); the row prints the notifications counted;
* an empty Python write callback: the floor of Python rules;
* central, Python rules (1 rule over every value; 50 rules with hits and
  missing data): goal <= 1.1x the empty write callback.

``--write-threads 1`` runs every row with collectd's ``WriteThreads 1``: with
collectd's default of 5, the write threads take turns on Python's GIL and an
empty Python callback costs about twice the CPU per value.

Then the rule state memory: the central engine, in this process, is fed one
round of every host's values and ``tracemalloc`` tells the bytes it keeps,
per host, for both Python rule sets; then the clock moves past
``ForgetAfter``, the engine ticks, and what it still keeps is measured again.
A local mosquitto takes the central plugin's MQTT link. Everything runs on
loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench_local import measure, receiver_conf, report, start_tg

from collectd_monitor.confblock import module_paths, python_block
from collectd_monitor.fleetrules.engine import CentralEngine
from collectd_monitor.fleetrules.loader import central_rules
from collectd_monitor.fleetrules.settings import CentralSettings, load_central_config
from collectd_monitor.rules.declarative import parse_rules
from collectd_monitor.rules.model import Metric
from collectd_monitor.rules.threshold import Plan, compile_rules, read_types_db_ranges
from collectd_monitor.testing.sandbox import TYPES_DB, Broker, Collectd, free_port, wait_for

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


def compiled_rules(plugins: int, faulty: int) -> list[dict[str, Any]]:
    """Rules that all compile (exact names, no Missing): every gauge value of every
    plugin, any host, limit never crossed; and the derive rate of ``faulty`` hosts
    (collectd-tg's rates are uniform in [0, 10) per second), beyond 8.5/s now and then."""
    gauges = [
        {"Name": f"g{i}", "Plugin": f"plugin{i:03d}", "Type": "gauge", "Above": 1e12,
         "Action": ACTION}
        for i in range(plugins)
    ]  # fmt: skip
    faults = [
        {"Name": f"d{h}", "Host": f"host{h:04d}", "Type": "derive", "Above": 8.5,
         "Action": ACTION}
        for h in range(faulty)
    ]  # fmt: skip
    return gauges + faults


def central_config(path: Path, broker: Broker, name: str, rules: list[dict[str, Any]]) -> None:
    config = {"Host": broker.host, "ClientId": f"bench-{name}", "Rules": {"Values": rules}}
    path.write_text(json.dumps(config))
    path.chmod(0o600)


def threshold_plan(path: Path) -> Plan:
    """The threshold block of the central config at ``path``, as ``collectd-monitor
    collectd-conf --central`` makes it; every rule must compile."""
    rules, errors = central_rules(load_central_config(path=str(path)))
    if errors:
        raise SystemExit(f"bench rules do not load: {errors[0]}")
    plan = compile_rules(rules.values, read_types_db_ranges(TYPES_DB).get, central=True)
    if plan.kept:
        raise SystemExit(
            f"bench rule {plan.kept[0].rule.name} does not compile: {plan.kept[0].reason}"
        )
    return plan


def threshold_notifications(collectd: Collectd) -> int:
    """FAILURE and OKAY notifications of the threshold plugin in the log (logfile)."""
    text = collectd.log_text()
    return text.count("failure threshold") + text.count("within range again")


def run_row(
    workdir: Path,
    name: str,
    broker: Broker,
    args: argparse.Namespace,
    *,
    rules: list[dict[str, Any]] | None = None,
    empty_write: bool = False,
    plan: Plan | None = None,
) -> tuple[float, float, int]:
    directory = workdir / name
    (directory / "mods").mkdir(parents=True)
    modules: dict[str, dict[str, Any]] = {}
    if empty_write:
        (directory / "mods" / "bench_empty_write.py").write_text(EMPTY_WRITE)
        modules["bench_empty_write"] = {}
    if rules is not None:
        central_config(directory / "central.json", broker, name, rules)
        options = {"MonitorConfigPath": str(directory / "central.json")}
        if plan is not None:
            options["ThresholdRules"] = plan.digest
        modules["collectd_monitor.central"] = options
    port = free_port()
    sock = directory / "sock"
    conf = f"WriteThreads {args.write_threads}\n" if args.write_threads else ""
    conf += receiver_conf(sock, port)
    if plan is not None:
        conf += plan.block
    if modules:
        conf += python_block(modules, [*module_paths(), str(directory / "mods")])
    collectd = Collectd(directory, hostname="central", interval=1.0, extra_conf=conf)
    tg = None
    count = args.hosts * args.values
    try:
        collectd.start(wait_log="Initialization complete")
        if rules is not None and plan is not None:
            wait_for(lambda: "no write callback" in collectd.log_text(), 10, what="rules compiled")
        wait_for(sock.exists, 10, what="unixsock")
        tg = start_tg(port, count, hosts=args.hosts, plugins=args.values, interval=args.interval)
        time.sleep(args.interval + 2)  # every series seen once: state made, caches filled
        before = threshold_notifications(collectd)
        cpu, took, values = measure(collectd, sock, "central", args.seconds)
        notified = threshold_notifications(collectd) - before
    finally:
        if tg is not None:
            tg.terminate()
            tg.wait(5)
        collectd.stop()
    return (*report(collectd, name, cpu, took, values), notified)


def state_bytes_per_host(
    rules: list[dict[str, Any]], hosts: int, values: int
) -> tuple[float, float]:
    """Bytes of rule state per host after one round of every host's values, and after
    the hosts fell silent for longer than ``ForgetAfter`` (the engine ticking)."""
    parsed = parse_rules({"Values": rules}, None)
    now = [0.0]
    engine = CentralEngine(
        parsed,
        CentralSettings(),
        send=lambda r: None,
        emit=lambda n: None,
        clock=lambda: now[0],
        new_task_id=lambda: 1,
    )
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
    logging.disable(logging.CRITICAL)  # every host falls silent: thousands of lines
    try:
        while now[0] <= 2 * engine.settings.forget_after:
            now[0] += 60.0
            engine.tick()
    finally:
        logging.disable(logging.NOTSET)
    emptied = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    left = sum(stat.size_diff for stat in emptied.compare_to(before, "filename"))
    return grown / hosts, left / hosts


Row = tuple[str, str | None, str, dict[str, Any]]
"""name, the row it is judged against (its floor), the goal, run_row's options"""


def rows_for(args: argparse.Namespace, plan: Plan, compiled: list[dict[str, Any]]) -> list[Row]:
    threshold = "collectd + threshold (same thresholds)"
    empty = "empty Python write callback"
    return [
        ("collectd alone (no Python)", None, "", {}),
        (threshold, "collectd alone (no Python)", "", {"plan": plan}),
        ("central: compiled rules", threshold, "<= 1.05x", {"rules": compiled, "plan": plan}),
        (empty, "collectd alone (no Python)", "", {"empty_write": True}),
        ("central: 1 rule, every value judged", empty, "<= 1.1x", {"rules": one_rule()}),
        (
            f"central: {args.values} rules (hits, missing)",
            empty,
            "<= 1.1x",
            {"rules": per_plugin_rules(args.values)},
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--values", type=int, default=50, help="value lists per host")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    parser.add_argument("--faulty", type=int, default=10, help="hosts whose rates cross")
    parser.add_argument(
        "--rows", default="", help="comma-separated row numbers to run (default: all; 0-5)"
    )
    parser.add_argument(
        "--write-threads",
        type=int,
        default=0,
        help="collectd's WriteThreads for every row (default: collectd's own, 5)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cm-bench-central-"))
    rate = args.hosts * args.values / args.interval
    print(
        f"collectd-tg: {args.hosts} hosts x {args.values} value lists every {args.interval:g} s "
        f"= {rate:.0f} values/s into the network plugin; {args.seconds:g} s measured per run\n"
    )
    broker = Broker(workdir / "broker").start()
    compiled = compiled_rules(args.values, args.faulty)
    central_config(workdir / "compiled.json", broker, "plan", compiled)
    plan = threshold_plan(workdir / "compiled.json")
    chosen = {int(n) for n in args.rows.split(",") if n} or None
    header = (
        f"| {'setup':<40} | {'values/s':>8} | {'µs CPU/value':>12} | {'ratio':>6} | "
        f"{'goal':>8} | {'notes/s':>7} | floor"
    )
    print(header)
    print("|" + "-" * (len(header) - 1))
    measured: dict[str, float] = {}
    try:
        for i, (name, floor, goal, options) in enumerate(rows_for(args, plan, compiled)):
            if chosen is not None and i not in chosen:
                continue
            per_value, seen, notified = run_row(workdir, f"row{i}", broker, args, **options)
            measured[name] = per_value
            ratio = f"{per_value / measured[floor]:.2f}x" if floor in measured else "-"
            notes = f"{notified / args.seconds:.1f}" if "plan" in options else "-"
            print(
                f"| {name:<40} | {seen:>8.0f} | {per_value:>12.1f} | {ratio:>6} | "
                f"{goal or '-':>8} | {notes:>7} | {floor or '-'}",
                flush=True,
            )
    finally:
        broker.stop()
    print(f"\nrule state in memory ({args.hosts} hosts x {args.values} series), bytes per host:")
    for name, rules in (
        ("1 rule, every value judged", one_rule()),
        (f"{args.values} rules (hits, missing)", per_plugin_rules(args.values)),
    ):
        kept, left = state_bytes_per_host(rules, args.hosts, args.values)
        print(f"  {name:<38} {kept:>9.0f} after one round, {left:>6.0f} once forgotten")


if __name__ == "__main__":
    main()
