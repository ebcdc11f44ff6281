"""The options of ``send-command`` / ``send-config`` for many hosts, and when they apply.

Apart from :mod:`collectd_monitor.cli.fanout` (the run itself, with the
broadcast, presence and progress display) so that sending to one host
parses these options without importing any of that.
"""

from __future__ import annotations

import argparse

from collectd_monitor.cli.argtypes import count, rate
from collectd_monitor.fleet.topics import (
    DEFAULT_COMMAND_TEMPLATE,
    DEFAULT_RESULT_TEMPLATE,
    DEFAULT_STATUS_TEMPLATE,
    is_glob,
)

FANOUT_QOS = 1
"""QoS of a fan-out unless --qos: hosts drop a duplicate task_id, so "at least once" is enough."""


def add_fanout_options(parser: argparse.ArgumentParser, *, rolling: bool) -> None:
    group = parser.add_argument_group(
        "many hosts",
        "--to PATTERN (repeatable) takes host names and globs such as 'web-*', matched "
        "against the hosts' retained status; with a glob, several --to or --hosts-file the "
        "request goes to every matching host over one connection. Then --topic and "
        f"--result-topic are templates with + for the host (default {DEFAULT_COMMAND_TEMPLATE} "
        f"and {DEFAULT_RESULT_TEMPLATE}), --timeout is per host, and the QoS is "
        f"{FANOUT_QOS} unless --qos.",
    )
    group.add_argument(
        "--hosts-file",
        metavar="FILE",
        help="more hosts: one name per line, # starts a comment (taken as they are, online or not)",
    )
    group.add_argument(
        "--include-offline",
        action="store_true",
        help="let --to patterns match hosts whose status is offline too",
    )
    group.add_argument(
        "--status-topic",
        metavar="TEMPLATE",
        default=DEFAULT_STATUS_TEMPLATE,
        help=f"the hosts' status topics (default {DEFAULT_STATUS_TEMPLATE})",
    )
    group.add_argument(
        "--parallel",
        type=count(1, 100_000),
        metavar="N",
        help=f"requests in flight at most (default {1 if rolling else 100})",
    )
    group.add_argument("--rate", type=rate, metavar="R", help="requests started per second at most")
    group.add_argument(
        "--abort-after",
        type=count(1),
        metavar="K",
        help="send no new request after K failures or timeouts"
        + (" (default 1: a canary, then the rest)" if rolling else " (default: never)"),
    )
    parser.set_defaults(rolling=rolling)


def wants_fanout(args: argparse.Namespace) -> bool:
    """Several hosts (or a glob, or a hosts file) rather than one ``--to HOST``."""
    to = args.to or []
    return bool(args.hosts_file) or len(to) > 1 or any(is_glob(t) for t in to)
