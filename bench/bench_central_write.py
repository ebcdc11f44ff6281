"""The central plugin's write path in this process: µs of Python per value, and a profile.

    .venv/bin/python bench/bench_central_write.py [--hosts 1000] [--values 50] [--profile]

No collectd: a stand-in ``collectd`` module lets ``collectd_monitor.central``
import, and its write callback is fed objects with the attributes of
collectd's ``Values`` (1 000 hosts x 50 gauge value lists, all quiet, as on a
healthy fleet). What it measures is the Python work per value on top of the
call itself, which ``bench_central.py`` measures inside a real collectd.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
import types
from typing import Any

from bench_central import one_rule, per_plugin_rules


def stand_in_collectd() -> None:
    fake = types.ModuleType("collectd")
    for name in ("register_config", "register_init", "register_shutdown", "register_write",
                 "register_notification", "register_read", "error", "warning", "info",
                 "debug", "notice"):  # fmt: skip
        setattr(fake, name, lambda *args, **kwargs: None)
    fake.get_dataset = lambda type_: [("value", "gauge", None, None)]  # type: ignore[attr-defined]
    sys.modules["collectd"] = fake


class Values:
    __slots__ = (
        "host",
        "interval",
        "plugin",
        "plugin_instance",
        "time",
        "type",
        "type_instance",
        "values",
    )  # fmt: skip

    def __init__(self, host: str, plugin: str) -> None:
        self.host, self.plugin, self.plugin_instance = host, plugin, ""
        self.type, self.type_instance = "gauge", ""
        self.time, self.interval, self.values = 0.0, 10.0, [1.0]


def measure(name: str, rules: list[dict[str, Any]] | None, args: argparse.Namespace) -> None:
    from collectd_monitor import central
    from collectd_monitor.fleetrules.engine import CentralEngine
    from collectd_monitor.fleetrules.loader import CentralMonitor
    from collectd_monitor.fleetrules.settings import CentralSettings
    from collectd_monitor.rules.declarative import parse_rules

    write: Any = lambda values: None  # noqa: E731
    if rules is not None:
        parsed = parse_rules({"Values": rules}, None)
        engine = CentralEngine(parsed, CentralSettings(), send=print, emit=print)
        central._monitor = CentralMonitor(engine, None)  # type: ignore[arg-type]
        central._plugins, central._watches = engine.index.plugins, engine.watches
        central._on_values = engine.on_values
        write = central._write
    values = [Values(f"host{h:04d}", f"plugin{v:03d}") for h in range(args.hosts)
              for v in range(args.values)]  # fmt: skip
    for vl in values:
        write(vl)  # the first round resolves every identity
    rounds = 5
    start = time.perf_counter()
    for _ in range(rounds):
        for vl in values:
            vl.time += 10.0
            write(vl)
    per_value = (time.perf_counter() - start) / (rounds * len(values)) * 1e6
    print(f"{name:<40} {per_value:6.2f} µs per value")
    if args.profile and rules is not None:
        profile = cProfile.Profile()
        profile.enable()
        for vl in values:
            vl.time += 10.0
            write(vl)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(8)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--values", type=int, default=50)
    parser.add_argument("--profile", action="store_true", help="print a cProfile per row")
    args = parser.parse_args()
    stand_in_collectd()
    measure("empty write callback", None, args)
    measure("central: 1 rule, every value judged", one_rule(), args)
    measure(f"central: {args.values} rules (hits, missing)", per_plugin_rules(args.values), args)


if __name__ == "__main__":
    main()
