"""``check-config``: check a host's config the way the plugins load it (like ``nginx -t``).

The same loaders as the plugins run here: config.json with every key checked,
Services, Security keys, file permissions, the ``Rules`` object and the rule
files in ``LocalMonitorConfigDir``. Every problem is one line naming its file
and key (or line). Exit 0 when the plugins would start with everything, 1
when something would be refused or left out, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from typing import Any

from collectd_monitor.cli.status import EXIT_OK, EXIT_REMOTE_FAILED
from collectd_monitor.config import DEFAULT_CONFIG_PATH, MonitorConfig, load_config
from collectd_monitor.errors import ConfigError
from collectd_monitor.rules.loader import load_rules
from collectd_monitor.security_config import check_permissions

EXIT_PROBLEMS = EXIT_REMOTE_FAILED


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check-config",
        description="Load config.json, its Services, Security keys, Rules and the rule files "
        "exactly as the collectd plugins would, and print every problem with its file and "
        "key. Nothing is connected to and no command is run (rule files are imported, as "
        "the local plugin does).",
        epilog="Exit status: 0 no problems (warnings may be printed); 1 problems found; "
        "2 usage error.",
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG_PATH,
        metavar="FILE",
        help=f"the config.json to check (default {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "--local-dir",
        metavar="DIR",
        help="LocalMonitorConfigDir, when the <Module> block sets it rather than config.json "
        "(as collectd-conf --local prints it)",
    )
    parser.set_defaults(handler=run)


def check(path: str, local_dir: str | None = None) -> tuple[list[str], list[str], str]:
    """(problems, warnings, summary) for the config at ``path``."""
    warnings: list[str] = []
    options: dict[str, Any] = {"MonitorConfigPath": path}
    if local_dir:
        options["LocalMonitorConfigDir"] = local_dir
    try:
        config = load_config(options, warn=lambda line: warnings.append(line))
    except ConfigError as exc:
        return [str(exc)], warnings, "the plugins would stay idle"
    problems: list[str] = []
    exposed = check_permissions(config.source, bool(config.secrets or config.security.ed25519_keys))
    if exposed and config.security.strict_permissions:
        problems.append(f"{exposed} (Security.StrictPermissions: the plugins refuse to start)")
    elif exposed:
        warnings.append(exposed)
    if local_dir:
        config = replace(config, local_monitor_config_dir=local_dir)
    problems += _rule_problems(config, warnings)
    return problems, warnings, _summary(config)


def _rule_problems(config: MonitorConfig, warnings: list[str]) -> list[str]:
    directory = config.local_monitor_config_dir
    if directory and not os.path.isdir(directory):
        return [f"{config.source}: key 'LocalMonitorConfigDir': {directory} is not a directory"]
    _rules, files, errors = load_rules(config)
    warnings += files.warnings
    return errors


def _summary(config: MonitorConfig) -> str:
    commands = sum(len(service.commands) for service in config.services.values())
    return (
        f"{len(config.services)} service(s) with {commands} command(s); "
        f"broker {config.broker.address}; command topic {config.command_topic}"
    )


def run(args: argparse.Namespace) -> int:
    problems, warnings, summary = check(args.config, args.local_dir)
    for line in warnings:
        print(f"warning: {line}")
    for line in problems:
        print(f"error: {line}")
    if problems:
        print(f"{args.config}: {len(problems)} problem(s); {summary}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"{args.config}: ok; {summary}")
    return EXIT_OK
