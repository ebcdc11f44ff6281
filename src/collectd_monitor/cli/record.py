"""``record``: write every host's requests, results and presence changes to the history."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import replace
from typing import Any

from collectd_monitor import logsetup
from collectd_monitor.cli.send import add_connection_options, connection_from_args
from collectd_monitor.cli.status import EXIT_CONNECTION, EXIT_OK, EXIT_USAGE
from collectd_monitor.errors import ConfigError
from collectd_monitor.fleet.history import open_history
from collectd_monitor.fleet.location import HISTORY_ENV, HistoryError, HistoryURLError
from collectd_monitor.fleet.recorder import Recorder, Templates
from collectd_monitor.fleet.topics import (
    DEFAULT_COMMAND_TEMPLATE,
    DEFAULT_RESULT_TEMPLATE,
    DEFAULT_STATUS_TEMPLATE,
)

log = logging.getLogger("collectd_monitor.record")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "record",
        description="Subscribe to every host's command, result and status topics and record "
        "what passes into the history, whoever sent it; runs until SIGINT or SIGTERM. "
        "Safe to run more than once on one history. Exit 0 when stopped; 4 when the "
        "history cannot be reached at start (later outages are retried).",
    )
    parser.add_argument(
        "--history",
        metavar="URL",
        help=f"sqlite:///PATH, a path, or postgresql://USER:PASS@HOST:PORT/DB (default "
        f"${HISTORY_ENV}, else $XDG_STATE_HOME/collectd-monitor/history.sqlite3)",
    )
    parser.add_argument(
        "--status-topic",
        metavar="TEMPLATE",
        default=DEFAULT_STATUS_TEMPLATE,
        help=f"status topics, + where the host name goes (default {DEFAULT_STATUS_TEMPLATE})",
    )
    parser.add_argument(
        "--client-id",
        metavar="ID",
        help="a fixed MQTT client id with a persistent session, so that messages sent while "
        "the recorder is down are delivered when it returns (default: a fresh id per run)",
    )
    add_connection_options(parser)
    parser.epilog = (
        f"With record, --topic and --result-topic are templates: the default "
        f"{DEFAULT_COMMAND_TEMPLATE} and {DEFAULT_RESULT_TEMPLATE}; --topic '' records no "
        "requests (results are recorded all the same)."
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.to:
        print("collectd-monitor: record watches every host; --to does not apply", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings, _, _ = connection_from_args(args)
    except ConfigError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logsetup.configure("stderr", "warn" if args.quiet else "info", secrets=_secrets(settings))
    templates = Templates(
        result=args.result_topic or DEFAULT_RESULT_TEMPLATE,
        status=args.status_topic,
        command=DEFAULT_COMMAND_TEMPLATE if args.topic is None else args.topic,
    )
    client_id = args.client_id or f"collectd-monitor-recorder-{socket.gethostname()}-{os.getpid()}"
    settings = replace(
        settings,
        client_id=client_id,
        clean_session=not args.client_id,
        reconnect_interval=min(settings.reconnect_interval, 1.0),
        reconnect_max_interval=min(settings.reconnect_max_interval, 30.0),
    )
    try:
        history = open_history(args.history)
    except HistoryURLError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HistoryError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _n, _f: stop.set())
    recorder = Recorder(settings, history, templates)
    log.info(
        "recording %s into %s from %s",
        ", ".join(templates.all()),
        history.location.shown,
        settings.address,
    )
    recorder.run(stop)
    counts = recorder.counts
    log.info(
        "stopped: recorded %d request(s), %d result(s), %d presence change(s)",
        counts["request"],
        counts["result"],
        counts["presence"],
    )
    return EXIT_OK


def _secrets(settings: Any) -> tuple[str, ...]:
    return tuple(s for s in (settings.password,) if s)
