"""``hosts``: the fleet as the hosts' retained status messages tell it."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from collectd_monitor.cli.send import add_connection_options, connection_from_args
from collectd_monitor.cli.status import EXIT_CONNECTION, EXIT_OK, EXIT_USAGE
from collectd_monitor.errors import ConfigError, TransportError
from collectd_monitor.fleet.presence import HostStatus, read_statuses
from collectd_monitor.fleet.topics import DEFAULT_STATUS_TEMPLATE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "hosts",
        description="List every host that publishes a retained status: host, status, since, "
        "version and services (command names). Exit 0; 4 when the broker cannot be reached.",
    )
    parser.add_argument(
        "--status-topic",
        metavar="TEMPLATE",
        default=DEFAULT_STATUS_TEMPLATE,
        help=f"status topics, + where the host name goes (default {DEFAULT_STATUS_TEMPLATE})",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per host and line")
    add_connection_options(parser)
    parser.set_defaults(handler=run)


def format_services(status: HostStatus) -> str:
    return " ".join(f"{name}({','.join(cmds)})" for name, cmds in sorted(status.services.items()))


def table(statuses: list[HostStatus]) -> str:
    rows = [("HOST", "STATUS", "SINCE", "VERSION", "SERVICES")]
    rows += [
        (s.host, s.status, s.since or "-", s.version or "-", format_services(s) or "-")
        for s in statuses
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in rows
    )


def run(args: argparse.Namespace) -> int:
    if args.to or args.topic or args.result_topic:
        print("collectd-monitor: hosts takes --status-topic, not --to/--topic", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings, _, _ = connection_from_args(args)
    except ConfigError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        statuses = read_statuses(replace(settings), args.status_topic)
    except TransportError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    if args.json:
        for status in statuses:
            print(json.dumps(status.to_dict(), ensure_ascii=False))
    elif statuses:
        print(table(statuses))
    if not args.quiet:
        online = sum(1 for s in statuses if s.status == "online")
        print(f"collectd-monitor: {len(statuses)} host(s), {online} online", file=sys.stderr)
    return EXIT_OK
