"""``test-rules``: what the local rules would do on a series, without running anything.

Feeds a recorded or hand-written series (see :mod:`collectd_monitor.rules.series`)
through the same engine the plugin runs, with the series' own timestamps as
the clock and a dry-run executor, and prints one line per event: a fault
begins, a command would run, a rule recovers, suspends or resumes, a handler
fails. Exit status: 0 all rules loaded and ran; 1 some rule could not be
loaded or a handler failed; 2 usage error (unreadable config or series).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from collectd_monitor.cli import testcentral
from collectd_monitor.config import DEFAULT_CONFIG_PATH, MonitorConfig, load_config
from collectd_monitor.errors import ConfigError
from collectd_monitor.executor import Outcome
from collectd_monitor.rules.engine import Engine
from collectd_monitor.rules.loader import load_rules
from collectd_monitor.rules.model import Metric, Notice, Outgoing
from collectd_monitor.rules.series import SeriesError, parse_series, read_types_db
from collectd_monitor.rules.threshold import Datasets, Plan, compile_rules, read_types_db_ranges
from collectd_monitor.rules.thresholdsim import ThresholdModel

DEFAULT_TYPES_DB = "/usr/share/collectd/types.db"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "test-rules",
        description="Run the rule files and the declarative rules of a config against a "
        "series of metrics and notifications (JSON lines in collectd's JSON format, or "
        "PUTVAL/PUTNOTIF lines) and print what would fire and when. Nothing is run.",
        epilog="Exit status: 0 fine, 1 a rule could not be loaded or a handler failed, "
        "2 usage error.",
    )
    parser.add_argument("series", help="the series file ('-' for standard input)")
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help=f"config.json with Services and Rules (default {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "--rules-dir",
        metavar="DIR",
        help="rule files directory (default: LocalMonitorConfigDir of the config)",
    )
    parser.add_argument(
        "--types-db",
        default=DEFAULT_TYPES_DB,
        metavar="PATH",
        help=f"types.db for data source names and types (default {DEFAULT_TYPES_DB}, if present)",
    )
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="judge the value rules that compile to collectd's threshold plugin the way "
        "that plugin does (as collectd with the block of 'collectd-conf --local' would)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="first print which value rules compile to the threshold plugin, and why not",
    )
    testcentral.add_arguments(parser)
    parser.set_defaults(handler=run)


def _stamp(value: float) -> str:
    if value > 1e8:
        millis = int(value % 1 * 1000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(value)) + f".{millis:03d}Z"
    return f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    if args.central:
        return testcentral.run(args, _datasets(args.types_db), _stamp)
    try:
        config = load_config(path=args.config)
    except ConfigError as exc:
        print(f"collectd-monitor test-rules: {exc}", file=sys.stderr)
        return 2
    if args.rules_dir:
        config = _with_rules_dir(config, args.rules_dir)
    rules, files, errors = load_rules(config)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    datasets: Callable[[str], tuple[tuple[str, ...], tuple[str, ...]]]
    ranges: Datasets
    if args.types_db and os.path.exists(args.types_db):
        table = read_types_db(args.types_db)
        datasets = lambda type_: table.get(type_, ((), ()))  # noqa: E731
        ranges = read_types_db_ranges(args.types_db).get
    else:
        datasets = lambda type_: ((), ())  # noqa: E731
        ranges = lambda type_: None  # noqa: E731
    plan = compile_rules(rules.values, ranges)
    if args.explain:
        print(_explain(plan), end="")
    if not args.compiled:
        plan = Plan()
    now = [0.0]
    failures = [0]

    def observe(at: float, event: str, name: str, text: str) -> None:
        if event == "error":
            failures[0] += 1
        print(f"{_stamp(at)}  {event:<9}  {name}  {text}")

    def dry_run(spec: Any, on_done: Callable[[Outcome], None]) -> None:
        on_done(Outcome(code=0, output=f"dry run: {spec.label} not executed"))

    def emit(item: Outgoing) -> None:
        pass  # observe() already printed the event behind each notification

    engine = Engine(
        config,
        rules,
        files,
        runner=dry_run,
        emit=emit,
        clock=lambda: now[0],
        observe=observe,
        new_task_id=_counter(),
        plan=plan,
    )
    model = ThresholdModel(plan, ranges) if plan.compiled else None
    print(
        f"# {len(rules.values)} value rule(s), {len(rules.notifications)} notification "
        f"rule(s), {len(files.metric)} metric and {len(files.notification)} notification "
        "handler(s)"
    )
    try:
        if args.series == "-":
            return _feed(engine, sys.stdin, args.series, datasets, now, model) or _status(
                errors, failures
            )
        with open(args.series, encoding="utf-8") as handle:
            return _feed(engine, handle, args.series, datasets, now, model) or _status(
                errors, failures
            )
    except OSError as exc:
        print(f"collectd-monitor test-rules: {args.series}: {exc.strerror}", file=sys.stderr)
        return 2


def _datasets(types_db: str | None) -> Callable[[str], tuple[tuple[str, ...], tuple[str, ...]]]:
    if types_db and os.path.exists(types_db):
        table = read_types_db(types_db)
        return lambda type_: table.get(type_, ((), ()))
    return lambda type_: ((), ())


def _status(errors: list[str], failures: list[int]) -> int:
    return 1 if errors or failures[0] else 0


def _explain(plan: Plan) -> str:
    lines = [f"# compiled to the threshold plugin: {item.rule.name}" for item in plan.compiled]
    lines += [f"# judged in Python: {kept.rule.name}: {kept.reason}" for kept in plan.kept]
    return "".join(line + "\n" for line in lines)


def _feed(
    engine: Engine,
    handle: Any,
    name: str,
    datasets: Any,
    now: list[float],
    model: ThresholdModel | None = None,
) -> int:
    """Feed every record; return 2 on a bad line, else 0. With a threshold ``model``,
    the compiled rules' values go through it and come back as its notifications."""
    first = True
    try:
        for record in parse_series(iter(handle), datasets):
            now[0] = record.time
            if first:
                engine.restart_clock()
                first = False
            engine.tick(compiled=False)
            if isinstance(record, Metric):
                engine.on_metric(record, engine.index.rules_for(record))
                event = model.feed(record) if model is not None else None
                if event is not None:
                    notice = Notice(
                        record.host,
                        record.plugin,
                        record.plugin_instance,
                        record.type,
                        record.type_instance,
                        record.time,
                        int(event.severity),
                        f"threshold: {event.data_source} is {event.value:g}",
                    )
                    engine.on_notification(notice, event.data_source, event.value)
            if model is not None:  # the plugin's periodic check, just after the record
                engine.recheck_compiled()
            elif isinstance(record, Notice):
                engine.on_notification(record)
    except SeriesError as exc:
        print(f"collectd-monitor test-rules: {name}: {exc}", file=sys.stderr)
        return 2
    return 0


def _counter() -> Callable[[], int]:
    count = [0]

    def next_id() -> int:
        count[0] += 1
        return count[0]

    return next_id


def _with_rules_dir(config: MonitorConfig, directory: str) -> MonitorConfig:
    return replace(config, local_monitor_config_dir=directory)
