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
import gc
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from collectd_monitor import __version__
from collectd_monitor.cli.argtypes import OneLineParser
from collectd_monitor.cli.status import EXIT_USAGE

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "send-command": ("send", "run a recovery command on a host and print its result"),
    "send-config": ("send", "replace a host's collectd.conf and print the result"),
    "replace-config": (
        "replace",
        "replace this host's collectd.conf (validate, restart, roll back)",
    ),
    "collectd-conf": ("confblock", "print the collectd.conf block that loads the plugins"),
    "test-rules": ("testrules", "show what the local rules would do on a series of values"),
    "keygen": ("keys", "make an Ed25519 key pair for signed commands"),
    "hosts": ("hosts", "list the hosts of the fleet: online or not, since when, what they offer"),
    "history": ("history", "list the requests sent to hosts and their results"),
    "record": ("record", "record every host's requests, results and presence into the history"),
    "check-config": (
        "checkconfig",
        "check config.json, rules, rule files, keys and permissions as the plugins would",
    ),
    "demo": ("demo", "run the full loop on loopback: broker, collectd, send-command"),
}
"""Subcommand -> (module under ``collectd_monitor.cli``, one-line help).

Only the module of the subcommand being run is imported (each pulls in paho,
the replacer or the rules engine), so ``send-command`` starts about as fast as
Python with paho alone; the others appear in ``--help`` by name and help line.
"""


def _chosen(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="collectd-monitor",
        description="Automatic fault recovery for hosts monitored by collectd.",
        epilog="Exit status: 0 success, 1 remote failure, 2 usage error, "
        "3 timeout, 4 connection or authentication failure.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    chosen = SUBCOMMANDS.get(_chosen(argv) or "")
    registered: set[str] = set()
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if chosen is not None and module_name == chosen[0]:
            if module_name not in registered:
                module = importlib.import_module(f"collectd_monitor.cli.{module_name}")
                module.register(subparsers)
                registered.add(module_name)
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("collectd-monitor: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The process's entry point (the console script and ``python -m``): :func:`main`, exit.

    Everything still alive at that point dies with the process, so the objects
    are frozen first (:func:`gc.freeze`): the interpreter's last garbage
    collections then skip them instead of walking every module's objects,
    about a tenth of a ``send-command``'s wall time. Output is still flushed
    and exit handlers still run. Not in :func:`main`, which tests call in-process.
    """
    status = main()
    gc.freeze()
    sys.exit(status)
