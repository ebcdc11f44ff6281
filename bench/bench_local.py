"""collectd's CPU time per value with the local plugin, under a steady load, as ratios to floors.

    .venv/bin/python bench/bench_local.py [--seconds 5] [--warmup 3] [--rate 20000]
                                          [--rules 1,100,1000]

collectd-tg (Debian's collectd-utils) sends ``--rate`` value lists per second
to collectd's network plugin on 127.0.0.1 (a free port). For each setup the
script measures collectd's user+system CPU (from /proc/PID/stat) over
``--seconds`` after ``--warmup``, divided by the values collectd accepted in
that time (the network plugin's own ``dispatch-accepted`` rate, read through
unixsock). Every setup runs once, in this order, and each is printed with its
ratio to the floor it is judged against, measured in the same run:

* collectd alone (the floor of the floors);
* collectd + the threshold plugin with the thresholds of the largest rule
  count (no Python): the floor of compiled rules;
* compiled rules: the same threshold block plus the local plugin with
  ``ThresholdRules`` (no write callback; goal <= 1.05x its floor);
* an empty Python write callback: the floor of Python rules;
* Python value rules, 1/100/1000 (goal <= 1.1x the empty callback, flat).

Everything runs on loopback and stops by itself (about 7 x (warmup + seconds
+ 2) seconds with the defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collectd_monitor.confblock import module_paths, python_block
from collectd_monitor.config import build_config
from collectd_monitor.rules.declarative import parse_rules
from collectd_monitor.rules.threshold import Plan, compile_rules, read_types_db_ranges
from collectd_monitor.testing.sandbox import TYPES_DB, Collectd, free_port, wait_for

TICKS = os.sysconf("SC_CLK_TCK")
TG = shutil.which("collectd-tg") or "/usr/bin/collectd-tg"
SERVICES = {"svc": {"Commands": {"noop": ["/bin/true"]}}}
NOOP = {"Service": "svc", "Command": "noop"}
EMPTY_WRITE = "import collectd\n\ncollectd.register_write(lambda values: None)\n"
HANDLER = textwrap.dedent("""
    def never(metric):
        if metric.plugin == "no-such-plugin":
            return {"service": "svc", "command": "noop"}

    metric_handlers = {"never": never}
""")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def unixsock(path: Path, line: str) -> list[str]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(line.encode() + b"\n")
        reader = sock.makefile()
        status = reader.readline()
        count = int(status.split()[0])
        return [reader.readline().strip() for _ in range(max(count, 0))]


def accepted_rate(path: Path, host: str) -> float:
    lines = unixsock(path, f"GETVAL {host}/network/total_values-dispatch-accepted")
    return float(lines[0].split("=")[1]) if lines else 0.0


def value_rules(count: int) -> list[dict[str, Any]]:
    """Rules over tg's own plugins and type, so the index meets real candidates;
    the threshold is never crossed, so nothing runs."""
    return [
        {
            "Name": f"rule{i}",
            "Host": f"host{i % 1000:04d}",
            "Plugin": f"plugin{i % 20:03d}",
            "Type": "gauge",
            "Above": 1e12,
            "Action": NOOP,
        }
        for i in range(count)
    ]


def run_row(
    workdir: Path,
    name: str,
    *,
    rules: dict[str, Any] | None,
    rule_file: str | None,
    local: bool,
    empty_write: bool,
    seconds: float,
    rate: int,
    warmup: float = 3.0,
    threshold: Plan | None = None,
    compiled: bool = False,
) -> tuple[float, float]:
    directory = workdir / re.sub(r"[^A-Za-z0-9_.-]+", "-", name)  # collectd wordexp()s paths
    (directory / "mods").mkdir(parents=True)
    (directory / "local").mkdir()
    modules: dict[str, dict[str, Any]] = {}
    if empty_write:
        (directory / "mods" / "bench_empty_write.py").write_text(EMPTY_WRITE)
        modules["bench_empty_write"] = {}
    if local:
        config = {"Services": SERVICES, "LocalMonitorConfigDir": str(directory / "local")}
        if rules is not None:
            config["Rules"] = rules
        (directory / "config.json").write_text(json.dumps(config))
        if rule_file:
            (directory / "local" / "bench.py").write_text(rule_file)
        modules["collectd_monitor.local"] = {"MonitorConfigPath": str(directory / "config.json")}
        if compiled and threshold is not None:
            modules["collectd_monitor.local"]["ThresholdRules"] = threshold.digest
    port = free_port()
    sock = directory / "sock"
    conf = receiver_conf(sock, port)
    if threshold is not None:
        conf += threshold.block
    if modules:
        conf += python_block(modules, [*module_paths(), str(directory / "mods")])
    collectd = Collectd(directory, hostname="bench", interval=1.0, extra_conf=conf)
    tg = None
    try:
        collectd.start(wait_log="Initialization complete")
        wait_for(sock.exists, 10, what="unixsock")
        tg = start_tg(port, rate, hosts=10, plugins=20, interval=1)
        time.sleep(warmup)  # every series seen once, caches filled
        cpu, took, values = measure(collectd, sock, "bench", seconds)
    finally:
        if tg is not None:
            tg.terminate()
            tg.wait(5)
        collectd.stop()
    return report(collectd, name, cpu, took, values)


def receiver_conf(sock: Path, port: int) -> str:
    """collectd.conf lines: unixsock (the network plugin's counters are read there) and
    the network plugin listening for collectd-tg on 127.0.0.1:``port``."""
    return textwrap.dedent(f"""
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


def start_tg(
    port: int, count: int, *, hosts: int, plugins: int, interval: float
) -> subprocess.Popen[bytes]:
    """collectd-tg sending ``count`` value lists every ``interval`` s to 127.0.0.1:``port``."""
    return subprocess.Popen(
        [TG, "-n", str(count), "-H", str(hosts), "-p", str(plugins),
         "-i", str(interval), "-d", "127.0.0.1", "-D", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def measure(
    collectd: Collectd, sock: Path, host: str, seconds: float
) -> tuple[float, float, float]:
    """collectd's CPU seconds, the wall time and the values it accepted over ``seconds``."""
    pid = collectd.pid()
    assert pid is not None, collectd.log_text()[-2000:]
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    rates = []
    while time.monotonic() < t0 + seconds:
        time.sleep(1)
        rates.append(accepted_rate(sock, host))
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    return cpu1 - cpu0, t1 - t0, (sum(rates) / len(rates) * (t1 - t0) if rates else 0.0)


def report(
    collectd: Collectd, name: str, cpu: float, took: float, values: float
) -> tuple[float, float]:
    """µs of CPU per value and values per second; the first error line of the run, if any."""
    errors = [line for line in collectd.log_text().splitlines() if "[error]" in line]
    if errors:
        print(f"  ! {name}: {errors[0][:150]}")
    per_value = cpu / values * 1e6 if values else float("nan")
    return per_value, values / took


def plan_for(rules: list[dict[str, Any]]) -> Plan:
    config = build_config({"Services": SERVICES}, source="bench")
    parsed = parse_rules({"Values": rules}, config.services)
    plan = compile_rules(parsed.values, read_types_db_ranges(TYPES_DB).get)
    if plan.kept:
        raise SystemExit(f"bench rules do not compile: {plan.kept[0].reason}")
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--rate", type=int, default=20000, help="value lists per second")
    parser.add_argument(
        "--rules", default="1,100,1000", help="comma-separated Python rule counts (1,100,1000)"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.rules.split(",") if n]
    most = max(counts)
    plan = plan_for(value_rules(most))
    common = {"seconds": args.seconds, "rate": args.rate, "warmup": args.warmup}
    none: dict[str, Any] = {"rules": None, "rule_file": None}
    rows: list[tuple[str, str | None, dict[str, Any]]] = [
        ("collectd alone", None, {**none, "local": False, "empty_write": False}),
        (
            f"collectd + threshold ({most} thresholds)",
            "collectd alone",
            {**none, "local": False, "empty_write": False, "threshold": plan},
        ),
        (
            f"compiled rules ({most})",
            f"collectd + threshold ({most} thresholds)",
            {
                "rules": {"Values": value_rules(most)},
                "rule_file": None,
                "local": True,
                "empty_write": False,
                "threshold": plan,
                "compiled": True,
            },
        ),
        (
            "empty Python write callback",
            "collectd alone",
            {**none, "local": False, "empty_write": True},
        ),
        *(
            (
                f"Python rules ({n})",
                "empty Python write callback",
                {
                    "rules": {"Values": value_rules(n)},
                    "rule_file": None,
                    "local": True,
                    "empty_write": False,
                },
            )
            for n in counts
        ),
        (
            "Python metric handler (rule file)",
            "empty Python write callback",
            {"rules": None, "rule_file": HANDLER, "local": True, "empty_write": False},
        ),
    ]
    workdir = Path(tempfile.mkdtemp(prefix="cm-bench-local-"))
    print(
        f"collectd-tg at {args.rate} value lists/s into the network plugin; "
        f"{args.seconds:g} s measured per run after {args.warmup:g} s (results under {workdir})\n"
    )
    header = f"| {'setup':<36} | {'values/s':>9} | {'µs CPU/value':>12} | {'ratio':>6} | floor"
    print(header)
    print("|" + "-" * (len(header) - 1))
    measured: dict[str, float] = {}
    run: Callable[..., tuple[float, float]] = run_row
    for i, (name, floor, options) in enumerate(rows):
        per_value, rate = run(workdir, f"{i}-{name}", **common, **options)
        measured[name] = per_value
        ratio = f"{per_value / measured[floor]:.2f}x" if floor in measured else "-"
        print(
            f"| {name:<36} | {rate:>9.0f} | {per_value:>12.1f} | {ratio:>6} | {floor or '-'}",
            flush=True,
        )


if __name__ == "__main__":
    main()
