"""``collectd-conf``: print the collectd.conf block that loads this install."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from collectd_monitor.cli.status import EXIT_USAGE
from collectd_monitor.confblock import module_paths, python_block
from collectd_monitor.config import DEFAULT_CONFIG_PATH, load_config
from collectd_monitor.errors import ConfigError

DEFAULT_LOCAL_DIR = "/etc/collectd/monitor/local/"
DEFAULT_TYPES_DB = "/usr/share/collectd/types.db"
DEFAULT_CENTRAL_CONFIG = "/etc/collectd/monitor/central.json"


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
        "--central",
        action="store_true",
        help="also load the central detection plugin, with the threshold block of its "
        "value rules that collectd's threshold plugin can judge",
    )
    parser.add_argument(
        "--central-config",
        default=DEFAULT_CENTRAL_CONFIG,
        metavar="PATH",
        help=f"the central plugin's MonitorConfigPath (default {DEFAULT_CENTRAL_CONFIG}); "
        "made absolute like --config",
    )
    parser.add_argument(
        "--no-remote",
        action="store_true",
        help="leave out the remote plugin (needs --local or --central)",
    )
    parser.add_argument(
        "--local-dir",
        default=DEFAULT_LOCAL_DIR,
        metavar="DIR",
        help=f"LocalMonitorConfigDir (default {DEFAULT_LOCAL_DIR}); made absolute like --config",
    )
    parser.add_argument(
        "--python-rules",
        action="store_true",
        help="with --local or --central: judge every value rule in Python (no threshold block)",
    )
    parser.add_argument(
        "--types-db",
        default=DEFAULT_TYPES_DB,
        metavar="PATH",
        help=f"types.db for the data sources of compiled rules (default {DEFAULT_TYPES_DB})",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    problem = None
    if args.no_remote and not (args.local or args.central):
        problem = "--no-remote without --local or --central would load no plugin"
    elif args.local and args.central and not args.python_rules:
        problem = (
            "--local and --central each make a threshold block; print them one at a time "
            "(or add --python-rules)"
        )
    if problem:
        print(f"collectd-monitor collectd-conf: error: {problem} (see --help)", file=sys.stderr)
        return EXIT_USAGE
    config = os.path.abspath(args.config)
    local_dir = os.path.join(os.path.abspath(args.local_dir), "")
    modules: dict[str, dict[str, Any]] = {}
    if not args.no_remote:
        modules["collectd_monitor.remote"] = {"MonitorConfigPath": config}
    threshold = ""
    if args.local:
        local: dict[str, Any] = {
            "MonitorConfigPath": config,
            "LocalMonitorConfigDir": local_dir,
        }
        if not args.python_rules:
            threshold, digest = _threshold(args, _local_rules)
            if digest:
                local["ThresholdRules"] = digest
        modules["collectd_monitor.local"] = local
    if args.central:
        central: dict[str, Any] = {"MonitorConfigPath": os.path.abspath(args.central_config)}
        if not args.python_rules:
            threshold, digest = _threshold(args, _central_rules)
            if digest:
                central["ThresholdRules"] = digest
        modules["collectd_monitor.central"] = central
    print(threshold + python_block(modules, module_paths()), end="")
    return 0


def _local_rules(args: argparse.Namespace) -> tuple[Any, bool]:
    from collectd_monitor.rules.declarative import parse_rules

    config = load_config(path=args.config)
    return parse_rules(config.rules, config.services, source=config.source), False


def _central_rules(args: argparse.Namespace) -> tuple[Any, bool]:
    from collectd_monitor.fleetrules.loader import central_rules
    from collectd_monitor.fleetrules.settings import load_central_config

    rules, _errors = central_rules(load_central_config(path=args.central_config))
    return rules, True


def _threshold(
    args: argparse.Namespace, load: Callable[[argparse.Namespace], tuple[Any, bool]]
) -> tuple[str, str]:
    """The threshold block (with a comment per rule left in Python) and its digest."""
    from collectd_monitor.rules.threshold import compile_rules, read_types_db_ranges

    try:
        rules, central = load(args)
    except ConfigError as exc:
        print(f"collectd-monitor collectd-conf: {exc}; no threshold block", file=sys.stderr)
        return "", ""
    if not os.path.exists(args.types_db):
        print(
            f"collectd-monitor collectd-conf: no {args.types_db}; no threshold block",
            file=sys.stderr,
        )
        return "", ""
    table = read_types_db_ranges(args.types_db)
    plan = compile_rules(rules.values, table.get, central=central)
    notes = [f"# rule {k.rule.name} stays in Python: {k.reason}" for k in plan.kept]
    text = (plan.block + "\n") if plan.compiled else ""
    text += "".join(line + "\n" for line in notes)
    return text + ("\n" if notes else ""), plan.digest
