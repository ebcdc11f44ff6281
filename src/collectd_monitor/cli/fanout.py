"""``send-command`` / ``send-config`` to many hosts: ``--to PATTERN``, ``--hosts-file``.

The hosts come from presence (their retained status: online ones unless
``--include-offline``) matched against the ``--to`` names and globs, and from
a hosts file taken as it is. One MQTT connection carries every request;
:mod:`collectd_monitor.fleet.broadcast` paces them, this module prints: one
result per line on stdout (with its ``host``), progress and a summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from collectd_monitor.brokersettings import BrokerSettings
from collectd_monitor.cli.fanoutargs import FANOUT_QOS
from collectd_monitor.cli.fanoutargs import add_fanout_options as add_fanout_options
from collectd_monitor.cli.fanoutargs import wants_fanout as wants_fanout
from collectd_monitor.cli.progress import Display, line
from collectd_monitor.cli.status import EXIT_CONNECTION, EXIT_OK, EXIT_REMOTE_FAILED, EXIT_USAGE
from collectd_monitor.codes import describe
from collectd_monitor.commands.protocol import Result
from collectd_monitor.commands.security import Signer
from collectd_monitor.commands.sender import new_task_id
from collectd_monitor.errors import AuthError, ConfigError, TransportError
from collectd_monitor.fleet.broadcast import Broadcast, Prepared
from collectd_monitor.fleet.fanout import (
    FAILED,
    Known,
    Limits,
    Outcome,
    Progress,
    read_hosts_file,
    select_hosts,
)
from collectd_monitor.fleet.journal import Journal
from collectd_monitor.fleet.presence import read_statuses
from collectd_monitor.fleet.topics import DEFAULT_COMMAND_TEMPLATE, DEFAULT_RESULT_TEMPLATE

SHOWN = 10
"""Hosts named per category in the summary."""

PayloadFactory = Callable[[int], dict[str, Any]]
"""task_id -> the message (stamped when called, so a long rollout never sends stale ones)."""


def _template(value: str | None, default: str, option: str) -> str:
    template = value or default
    if template.split("/").count("+") != 1:
        raise ConfigError(
            f"{option} {template!r}: with several hosts it is a template with one + level "
            "where the host name goes",
            key=option,
        )
    return template


class _Printer:
    """The run's events: stdout, the history, the progress display."""

    def __init__(self, journal: Journal, display: Display) -> None:
        self.journal = journal
        self.display = display
        self.failed: list[tuple[str, int]] = []
        self.timed_out: list[str] = []

    def sent(self, host: str, request: Prepared) -> None:
        self.journal.request(request.payload, host)

    def finished(
        self, host: str, request: Prepared, result: Result | None, outcome: Outcome
    ) -> None:
        if result is None:
            self.timed_out.append(host)
            note = f"no result for task {request.task_id} within {outcome.duration:.3g} s"
            self.journal.result(request.task_id, host, None, note)
            return
        if outcome.status == FAILED:
            self.failed.append((host, result.code))
        print(json.dumps({"host": host, **result.to_dict()}, ensure_ascii=False), flush=False)
        self.journal.result(request.task_id, host, result.code, result.message, outcome.duration)

    def tick(self, progress: Progress) -> None:
        sys.stdout.flush()
        self.journal.flush()
        self.display.show(progress)


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def summary(progress: Progress, failed: list[tuple[str, int]], timed_out: list[str]) -> str:
    parts = [f"{progress.total} host(s): {progress.ok} ok"]
    if failed:
        codes = [f"{host} ({code:#x} {describe(code)})" if code >= 0x1000 else f"{host} ({code})"
                 for host, code in failed]  # fmt: skip
        parts.append(f"{len(failed)} failed: {_named(codes)}")
    if timed_out:
        parts.append(f"{len(timed_out)} timed out: {_named(sorted(timed_out))}")
    if progress.unsent:
        failures = progress.failed + progress.timed_out
        parts.append(f"{progress.unsent} not sent (aborted after {failures} failure(s))")
    return "; ".join(parts) + f"; {progress.elapsed:.2f} s"


def _hosts(
    args: argparse.Namespace, settings: BrokerSettings, notice: Callable[[str], None]
) -> list[str] | int:
    """The hosts to send to, or an exit status (with its message printed)."""
    listed: list[str] = []
    if args.hosts_file:
        try:
            with open(args.hosts_file, encoding="utf-8") as handle:
                listed = read_hosts_file(handle.read())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            print(f"collectd-monitor: --hosts-file {args.hosts_file}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    patterns: list[str] = list(args.to or [])
    known: list[Known] = []
    if patterns:
        statuses = read_statuses(settings, args.status_topic)
        known = [Known(s.host, s.status == "online") for s in statuses]
    chosen = select_hosts(patterns, known, include_offline=args.include_offline, listed=listed)
    if chosen.unmatched:
        online = sum(1 for k in known if k.online)
        hint = " (offline hosts match with --include-offline)" if chosen.offline else ""
        print(
            f"collectd-monitor: no {'known' if args.include_offline else 'online'} host matches "
            f"{', '.join(repr(p) for p in chosen.unmatched)}: {len(known)} host(s) known "
            f"under {args.status_topic}, {online} online{hint}",
            file=sys.stderr,
        )
        return EXIT_REMOTE_FAILED
    if not chosen.hosts:
        print("collectd-monitor: no hosts to send to", file=sys.stderr)
        return EXIT_REMOTE_FAILED
    if chosen.offline:
        notice(f"left out {len(chosen.offline)} offline host(s): {_named(chosen.offline)}")
    return chosen.hosts


def fan_out(
    args: argparse.Namespace,
    settings: BrokerSettings,
    make_payload: PayloadFactory,
    what: str,
) -> int:
    """Send to every host that ``args`` names; the exit status of the whole run."""
    display = Display(sys.stderr, quiet=args.quiet)
    notice = display.message if not args.quiet else (lambda _text: None)
    rolling = bool(args.rolling)
    try:
        command_template = _template(args.topic, DEFAULT_COMMAND_TEMPLATE, "--topic")
        result_template = _template(args.result_topic, DEFAULT_RESULT_TEMPLATE, "--result-topic")
        limits = Limits(
            parallel=(1 if rolling else 100) if args.parallel is None else args.parallel,
            rate=args.rate,
            abort_after=(1 if rolling else None) if args.abort_after is None else args.abort_after,
            timeout=args.timeout,
        )
    except (ConfigError, ValueError) as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    signer = None
    if args.sign_key:
        try:
            signer = Signer.from_file(args.sign_key, args.key_id)
        except (OSError, ValueError) as exc:
            print(f"collectd-monitor: cannot use signing key: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.qos is None:
        settings = replace(settings, qos=FANOUT_QOS)
    try:
        hosts = _hosts(args, settings, notice)
    except (AuthError, TransportError) as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    if isinstance(hosts, int):
        return hosts

    def prepare(host: str) -> Prepared:
        topic = command_template.replace("+", host)
        payload = make_payload(new_task_id())
        if signer is not None:
            payload = signer.sign(topic, payload)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return Prepared(int(payload["task_id"]), topic, body, payload)

    journal = Journal(args.history, enabled=not args.no_history)
    printer = _Printer(journal, display)
    mode = f"{limits.parallel} at a time" if rolling else f"{limits.parallel} in flight"
    notice(f"sending {what} to {len(hosts)} host(s) at {settings.address} ({mode})")
    broadcast = Broadcast(
        settings,
        result_template,
        expiry=args.expiry if args.expiry is not None else args.timeout,
        notice=notice,
    )
    try:
        final = broadcast.run(hosts, prepare, limits, printer)
    except (AuthError, TransportError) as exc:
        display.end()
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    finally:
        sys.stdout.flush()
        journal.close()
    progress = final.progress(broadcast.clock())
    display.end()
    if not args.quiet and not display.tty:
        print(f"collectd-monitor: {line(progress)}", file=sys.stderr)
    text = summary(progress, printer.failed, printer.timed_out)
    print(f"collectd-monitor: {text}", file=sys.stderr)
    clean = progress.ok == progress.total
    return EXIT_OK if clean else EXIT_REMOTE_FAILED
