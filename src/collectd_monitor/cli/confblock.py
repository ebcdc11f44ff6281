"""``collectd-conf``: print the collectd.conf block that loads this install."""

from __future__ import annotations

import argparse
from typing import Any

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
        help=f"MonitorConfigPath (default {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "--local", action="store_true", help="also load the local monitoring plugin"
    )
    parser.add_argument("--no-remote", action="store_true", help="leave out the remote plugin")
    parser.add_argument(
        "--local-dir",
        default=DEFAULT_LOCAL_DIR,
        metavar="DIR",
        help=f"LocalMonitorConfigDir (default {DEFAULT_LOCAL_DIR})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    modules: dict[str, dict[str, Any]] = {}
    if not args.no_remote:
        modules["collectd_monitor.remote"] = {"MonitorConfigPath": args.config}
    if args.local:
        modules["collectd_monitor.local"] = {
            "MonitorConfigPath": args.config,
            "LocalMonitorConfigDir": args.local_dir,
        }
    print(python_block(modules, module_paths()), end="")
    return 0
