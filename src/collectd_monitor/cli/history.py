"""``history``: the requests sent to hosts and their results, from the history store."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from typing import Any

from collectd_monitor.cli.argtypes import count
from collectd_monitor.cli.status import EXIT_CONNECTION, EXIT_OK, EXIT_USAGE
from collectd_monitor.fleet.history import Entry, iso, open_history
from collectd_monitor.fleet.location import HISTORY_ENV, HistoryError, HistoryURLError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "history",
        description="List the requests sent to hosts (by any sender or seen by a recorder) "
        "with their results, oldest first. Exit 0; 2 usage error; 4 the history "
        "cannot be reached.",
    )
    parser.add_argument(
        "--history",
        metavar="URL",
        help=f"sqlite:///PATH, a path, or postgresql://USER:PASS@HOST:PORT/DB (default "
        f"${HISTORY_ENV}, else $XDG_STATE_HOME/collectd-monitor/history.sqlite3)",
    )
    parser.add_argument("--host", metavar="PATTERN", help="hosts matching this glob (* and ?)")
    parser.add_argument("--service", metavar="S", help="only commands of this service")
    parser.add_argument(
        "--since",
        metavar="TIME",
        help="sent at or after TIME: ISO 8601 (2026-11-23T10:00:00Z) or an age (90s, 15m, 2h, 7d)",
    )
    parser.add_argument(
        "--limit", type=count(), default=50, metavar="N", help="the newest N (default 50)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(handler=run)


def parse_since(text: str, now: float | None = None) -> float:
    """An ISO 8601 time or an age such as ``15m`` as epoch seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match:
        return (time.time() if now is None else now) - float(match[1]) * _UNITS[match[2]]
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: not an ISO 8601 time nor an age like 15m, 2h or 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _table(entries: list[Entry]) -> str:
    header = ("SENT", "TASK_ID", "HOST", "WHAT", "CODE", "DURATION", "SENDER", "RESULT")
    rows = [header]
    for e in entries:
        first = (e.message or "").splitlines()[0] if e.message else ""
        rows.append(
            (
                iso(e.sent_at) or "-",
                str(e.task_id),
                e.host,
                e.what,
                "-" if e.code is None else (str(e.code) if e.code < 0x1000 else hex(e.code)),
                "-" if e.duration is None else f"{e.duration:.3f}s",
                e.sender or "-",
                first[:60] + ("..." if len(first) > 60 else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    )


def run(args: argparse.Namespace) -> int:
    if args.limit < 1:
        print("collectd-monitor: --limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        history = open_history(args.history)
        try:
            entries = history.entries(
                host=args.host, service=args.service, since=since, limit=args.limit
            )
        finally:
            history.close()
    except HistoryURLError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HistoryError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    if args.json:
        for entry in entries:
            print(json.dumps(entry.to_dict(), ensure_ascii=False))
    elif entries:
        print(_table(entries))
    else:
        print("collectd-monitor: no requests recorded that match", file=sys.stderr)
    return EXIT_OK
