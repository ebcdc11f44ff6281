"""``collectd-conf``: print the collectd.conf block that loads this install."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from collectd_monitor.cli.status import EXIT_USAGE
from collectd_monitor.confblock import module_paths, python_block
from collectd_monitor.config import DEFAULT_CONFIG_PATH

DEFAULT_LOCAL_DIR = "/etc/collectd/monitor/local/"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "collectd-conf",
        description="Print the <LoadPlugin python>/<Plugin python> block for this install, "
        "with the ModulePath entries collectd needs to import it.",
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help=f"MonitorConfigPath (default {DEFAULT_CONFIG_PATH}); a relative path is made "
        "absolute (collectd runs from /)",
    )
    parser.add_argument(
        "--local", action="store_true", help="also load the local monitoring plugin"
    )
    parser.add_argument(
        "--no-remote", action="store_true", help="leave out the remote plugin (needs --local)"
    )
    parser.add_argument(
        "--local-dir",
        default=DEFAULT_LOCAL_DIR,
        metavar="DIR",
        help=f"LocalMonitorConfigDir (default {DEFAULT_LOCAL_DIR}); made absolute like --config",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.no_remote and not args.local:
        print(
            "collectd-monitor collectd-conf: error: --no-remote without --local would load "
            "no plugin (see --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    config = os.path.abspath(args.config)
    local_dir = os.path.join(os.path.abspath(args.local_dir), "")
    modules: dict[str, dict[str, Any]] = {}
    if not args.no_remote:
        modules["collectd_monitor.remote"] = {"MonitorConfigPath": config}
    if args.local:
        modules["collectd_monitor.local"] = {
            "MonitorConfigPath": config,
            "LocalMonitorConfigDir": local_dir,
        }
    print(python_block(modules, module_paths()), end="")
    return 0
