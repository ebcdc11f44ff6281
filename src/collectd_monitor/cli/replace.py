"""``replace-config``: replace this host's collectd.conf locally, as a transaction.

The same transaction a config push runs: lock, write beside the live config,
``collectd -T`` with our plugins offline, then a detached helper stops
collectd, backs up, swaps, starts, checks health and rolls back on failure.
The helper survives this command being interrupted; its outcome is printed
as a result JSON on stdout.

Exit status: 0 success; 10 + (code - 0x2000) for the replacement codes
0x2000-0x2010 (10 = another replacement runs, 11 cannot write, 12 config
broken, 13 cannot stop, 14 pid file kept, 15 cannot back up, 16 cannot swap,
17 rolled back and recovered, 18 recovery failed, 19 no new pid, 20 a path
not found, 21 collectd runs but the pid file does not name it, 26 collectd
stopped from outside meanwhile); 2 usage error; 3 no outcome within
--timeout (the helper still runs; see its log beside the report file).
Relative paths are taken from the working directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from collectd_monitor.cli.argtypes import seconds
from collectd_monitor.cli.status import EXIT_TIMEOUT, EXIT_USAGE
from collectd_monitor.codes import ResultCode, describe
from collectd_monitor.commands.protocol import Result
from collectd_monitor.commands.sender import new_task_id
from collectd_monitor.config import DEFAULT_CONFIG_PATH, MonitorConfig, load_config
from collectd_monitor.errors import ConfigError
from collectd_monitor.replacer import helper
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.paths import discover
from collectd_monitor.replacer.plugin import service_options
from collectd_monitor.replacer.report import OutboxTarget, read_report
from collectd_monitor.replacer.transaction import Transaction

EXIT_REPLACE_BASE = 10


def exit_status(code: int) -> int:
    """Map a result code to an exit status (the codes themselves exceed 255)."""
    if code == 0:
        return 0
    if ResultCode.REPLACE_IN_PROGRESS <= code <= ResultCode.REPLACE_STOPPED_OUTSIDE:
        return EXIT_REPLACE_BASE + code - ResultCode.REPLACE_IN_PROGRESS
    return 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replace-config",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("new_config", metavar="NEW_CONF", help="the new collectd.conf")
    parser.add_argument(
        "--monitor-config",
        metavar="FILE",
        help="config.json whose Services.collectd gives the paths "
        f"(default {DEFAULT_CONFIG_PATH} if it exists)",
    )
    parser.add_argument("--config-path", metavar="PATH", help="the live collectd.conf")
    parser.add_argument("--pid-path", metavar="PATH", help="collectd's pid file")
    parser.add_argument("--collectd", metavar="PATH", help="the collectd binary")
    parser.add_argument("--report-path", metavar="PATH", help="ReplacerReportPath")
    parser.add_argument(
        "--settle-time",
        type=seconds(),
        metavar="SECONDS",
        help="how long the new collectd must stay up (default 3)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=seconds(),
        metavar="SECONDS",
        help="how long its remote plugin may take to connect (default 30)",
    )
    parser.add_argument(
        "--watch-time",
        type=float,
        metavar="SECONDS",
        help="how long the helper keeps watching the new collectd after success (default 60)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds(),
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for the outcome (default 600)",
    )
    parser.set_defaults(handler=run)


def _options(args: argparse.Namespace) -> tuple[dict[str, Any], MonitorConfig | None]:
    path = args.monitor_config
    if path is None and os.path.isfile(DEFAULT_CONFIG_PATH):
        path = DEFAULT_CONFIG_PATH
    options: dict[str, Any] = {}
    config = None
    if path:
        config = load_config(path=path)
        options = service_options(config)
    for key, flag, path in (
        ("ConfigPath", "--config-path", args.config_path),
        ("PIDPath", "--pid-path", args.pid_path),
        ("CommandPath", "--collectd", args.collectd),
        ("ReplacerReportPath", "--report-path", args.report_path),
    ):
        if path is not None:
            options[key] = _absolute(path, flag)
    for key, value in (
        ("SettleTime", args.settle_time),
        ("ConnectTimeout", args.connect_timeout),
        ("WatchTime", args.watch_time),
    ):
        if value is not None:
            options[key] = value
    return options, config


def _absolute(path: str, flag: str) -> str:
    """A relative path means the caller's working directory: say so, use the absolute one.

    (collectd changes into its BaseDir before writing its pid file: a relative
    ``-P`` handed to it would name another file.) A ``--collectd`` without a
    slash is looked up on PATH instead.
    """
    if os.path.isabs(path) or (flag == "--collectd" and os.sep not in path):
        return path
    resolved = os.path.abspath(path)
    say(f"relative {flag} {path} resolved against the working directory {os.getcwd()}: {resolved}")
    return resolved


def say(text: str) -> None:
    print(f"collectd-monitor: {text}", file=sys.stderr, flush=True)


def finish(result: Result) -> int:
    print(json.dumps(result.to_dict(), ensure_ascii=False))
    status = exit_status(result.code)
    verdict = "done" if result.code == 0 else "FAILED"
    say(f"{verdict}: code 0x{result.code:04x} ({describe(result.code)}), exit status {status}")
    return status


def run(args: argparse.Namespace) -> int:
    try:
        text = Path(args.new_config).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        say(f"cannot read {args.new_config}: {exc}")
        return EXIT_USAGE
    task_id = new_task_id()
    try:
        options, monitor_config = _options(args)
        paths = discover(options)
        say(f"replacing {paths.config} ({paths.mode} mode, pid file {paths.pid}) as task {task_id}")
        tx = Transaction(paths)
        was_running = tx.live_pid() is not None
        prepared = tx.prepare(task_id, text)
    except ConfigError as exc:
        say(str(exc))
        return EXIT_USAGE
    except ReplaceFailed as exc:
        return finish(Result(task_id, exc.code, exc.message))
    if not prepared.loads_remote:
        say(
            "warning: the new config does not load collectd_monitor.remote; "
            "this host will not take remote commands or config pushes"
        )
    report_to = paths.report.with_name(f"{paths.report.name}.local-{task_id}")
    spec = helper.HelperSpec(
        task_id=task_id,
        paths=paths,
        loads_remote=prepared.loads_remote,
        old_outbox=OutboxTarget.of(monitor_config) if monitor_config else None,
        local_report=report_to,
        expected_broker=monitor_config.broker.address if monitor_config else None,
        was_running=was_running,
    )
    prepared.lock.hand_off(task_id)
    try:
        helper.spawn(spec)
    except OSError as exc:
        with contextlib.suppress(ReplaceFailed):
            prepared.lock.acquire(task_id, claim_handoff=True, wait=2.0)
        tx.discard_new()
        prepared.lock.release()
        return finish(
            Result(
                task_id,
                ResultCode.REPLACE_STOP_FAILED,
                f"the replacement helper did not start ({exc}); nothing was changed",
            )
        )
    say(f"validated; the helper restarts collectd (log: {paths.helper_log})")
    deadline = time.monotonic() + args.timeout
    while (outcome := read_report(report_to)) is None:
        if time.monotonic() >= deadline:
            say(
                f"no outcome within {args.timeout:g} s; the helper still runs; "
                f"its outcome will be in {report_to}"
            )
            return EXIT_TIMEOUT
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        report_to.unlink()
    return finish(outcome)
