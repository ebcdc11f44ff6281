"""The ``collectd-monitor`` command.

Exit statuses shared by the subcommands that talk to a host:

    0  the remote side reports success (code 0)
    1  the remote side reports a failure (any other code)
    2  usage error (bad options, unreadable file)
    3  no result arrived within --timeout
    4  cannot connect to the broker, or the broker refused our credentials
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from collectd_monitor import __version__
from collectd_monitor.cli import confblock, demo, keys, replace, send, testrules
from collectd_monitor.cli.status import EXIT_USAGE

COMMANDS = (send, confblock, demo, keys, testrules, replace)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collectd-monitor",
        description="Automatic fault recovery for hosts monitored by collectd.",
        epilog="Exit status: 0 success, 1 remote failure, 2 usage error, "
        "3 timeout, 4 connection or authentication failure.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("collectd-monitor: interrupted", file=sys.stderr)
        return 130
