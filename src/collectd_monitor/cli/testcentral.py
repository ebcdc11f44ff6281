"""``test-rules --central``: what the central plugin would send to which host, and when.

Feeds a multi-host series (the ``test-rules`` format: each record carries its
host) through the central engine, with the series' timestamps as the clock
and nothing sent: a repair "sent" to a host is answered ``--result-delay``
seconds later (series time) with code 0, or 1 for hosts matching ``--fail``,
so that the fleet-wide limits (repairs in flight, hosts per window, the abort
threshold) show as they would in the central collectd. One line per event:
time, event, host, rule, text.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import heapq
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from collectd_monitor.errors import ConfigError
from collectd_monitor.fleetrules.engine import CentralEngine, Repair
from collectd_monitor.fleetrules.loader import central_rules
from collectd_monitor.fleetrules.notes import PLUGIN_NAME
from collectd_monitor.fleetrules.settings import load_central_config
from collectd_monitor.rules.model import Metric, Notice
from collectd_monitor.rules.series import SeriesError, parse_series


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--central",
        action="store_true",
        help="judge the series as the central plugin would (per host, fleet-wide limits)",
    )
    parser.add_argument(
        "--result-delay",
        type=float,
        default=5.0,
        metavar="S",
        help="with --central: seconds until a host answers a repair (default 5)",
    )
    parser.add_argument(
        "--fail",
        action="append",
        default=[],
        metavar="HOST",
        help="with --central: hosts (globs) whose repairs fail; repeatable",
    )


def run(
    args: argparse.Namespace,
    datasets: Callable[[str], tuple[tuple[str, ...], tuple[str, ...]]],
    stamp: Callable[[float], str],
) -> int:
    try:
        config = load_central_config(path=args.config)
    except ConfigError as exc:
        print(f"collectd-monitor test-rules: {exc}", file=sys.stderr)
        return 2
    logging.getLogger(PLUGIN_NAME).setLevel(logging.CRITICAL)  # observe() prints every event
    rules, errors = central_rules(config)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    now = [0.0]
    due: list[tuple[float, int, str]] = []  # (answer time, task_id, host)

    def observe(at: float, event: str, name: str, host: str, text: str) -> None:
        print(f"{stamp(at)}  {event:<9}  {host or '*':<12}  {name}  {text}")

    def send(repair: Repair) -> None:
        heapq.heappush(due, (now[0] + args.result_delay, repair.task_id, repair.host))

    ids = iter(range(1, 2**32))
    engine = CentralEngine(
        rules,
        config.central,
        send=send,
        emit=lambda _note: None,  # observe() prints each decision
        clock=lambda: now[0],
        wall=lambda: now[0],
        new_task_id=lambda: next(ids),
        observe=observe,
        source=config.monitor.source,
    )
    fleet = config.central.fleet
    print(
        f"# {len(rules.values)} value rule(s), {len(rules.notifications)} notification rule(s); "
        f"MaxConcurrentHosts {fleet.max_concurrent_hosts}, MaxHostsPerWindow "
        f"{fleet.max_hosts_per_window} per {fleet.window:g} s, abort above "
        f"{fleet.abort_failure_ratio:g} failed (at least {fleet.abort_min_repairs})"
    )

    def answer_until(moment: float) -> None:
        while due and due[0][0] <= moment:
            at, task_id, host = heapq.heappop(due)
            now[0] = at
            failed = any(fnmatch.fnmatchcase(host, pattern) for pattern in args.fail)
            code = 1 if failed else 0
            engine.on_result(host, task_id, code, "dry run: not executed")
        now[0] = max(now[0], moment)

    try:
        with _open(args.series) as handle:
            records: Iterable[Any] = parse_series(iter(handle), datasets)
            for record in records:
                answer_until(record.time)
                now[0] = record.time
                engine.tick()
                if isinstance(record, Metric):
                    engine.on_metric(record)
                elif isinstance(record, Notice):
                    engine.on_notification(record)
            if due:  # the answers still outstanding at the end of the series
                answer_until(max(item[0] for item in due))
    except SeriesError as exc:
        print(f"collectd-monitor test-rules: {args.series}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"collectd-monitor test-rules: {args.series}: {exc.strerror}", file=sys.stderr)
        return 2
    return 1 if errors else 0


def _open(name: str) -> Any:
    if name == "-":
        return contextlib.nullcontext(sys.stdin)
    return open(name, encoding="utf-8")
