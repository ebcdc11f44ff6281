"""``send-command`` and ``send-config``: ask a host to act, print its result."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from collectd_monitor.brokersettings import (
    DEFAULT_TLS_PORT,
    BrokerSettings,
    default_topics,
    parse_host,
)
from collectd_monitor.cli.argtypes import MAX_EXPIRY, existing_file, seconds
from collectd_monitor.cli.fanoutargs import add_fanout_options, wants_fanout
from collectd_monitor.cli.status import (
    EXIT_CONNECTION,
    EXIT_OK,
    EXIT_REMOTE_FAILED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)
from collectd_monitor.codes import describe
from collectd_monitor.commands.protocol import encode_command, encode_config
from collectd_monitor.commands.sender import CodelessResult, ResultTimeout, Sender, new_task_id
from collectd_monitor.errors import AuthError, ConfigError, TransportError
from collectd_monitor.fleet.hook import add_history_options, recorded

# Imported where they are used, not here: sending to one host without --config or
# --sign-key needs neither the config.json schema, nor signing, nor the fan-out
# machinery, and the CLI's start-up time is mostly imports.

PASSWORD_ENV = "COLLECTD_MONITOR_PASSWORD"


EXIT_STATUSES = (
    "Exit status: 0 the host reports success (code 0); 1 the host reports a failure "
    "(another code, or a result without a code from an original lua-collectd-monitor "
    "plugin); 2 usage error; 3 no result within --timeout; 4 cannot connect to the broker, "
    "or it refused us."
)


def add_connection_options(
    parser: argparse.ArgumentParser, *, original_options: bool = False
) -> None:
    """The broker and topic options; ``original_options`` adds the original senders' short
    options (``-h`` is the host there, so such a parser offers ``--help`` only)."""

    def names(short: str, long: str) -> tuple[str, ...]:
        return (short, long) if original_options else (long,)

    group = parser.add_argument_group("connection")
    group.add_argument(
        "--config",
        metavar="FILE",
        help="read broker settings and topics from this config.json (options below override it)",
    )
    group.add_argument(
        *names("-h", "--host"),
        dest="host",
        help="broker as HOST or HOST:PORT (default localhost; port 1883, or 8883 with --secure)",
    )
    group.add_argument(*names("-u", "--user"), dest="user", help="user name on the broker")
    group.add_argument(
        *names("-p", "--password"),
        dest="password",
        help=f"password on the broker (or set ${PASSWORD_ENV})",
    )
    group.add_argument(
        *names("-s", "--secure"), dest="secure", action="store_true", default=None, help="use TLS"
    )
    group.add_argument(
        "--ca-file",
        metavar="FILE",
        type=existing_file,
        help="CA certificates to trust (implies --secure)",
    )
    group.add_argument(
        "--cert-file", metavar="FILE", type=existing_file, help="client certificate for mutual TLS"
    )
    group.add_argument(
        "--key-file", metavar="FILE", type=existing_file, help="private key of --cert-file"
    )
    group.add_argument(
        *names("-q", "--qos"), dest="qos", type=int, choices=(0, 1, 2), help="MQTT QoS (default 2)"
    )
    group.add_argument(*names("-t", "--topic"), dest="topic", help="the host's command topic")
    group.add_argument(
        *names("-r", "--result-topic"), dest="result_topic", help="the host's result topic"
    )
    group.add_argument(
        "--to",
        metavar="HOSTNAME",
        action="append",
        help="use the default topics of HOSTNAME (collectd-monitor/HOSTNAME/...); "
        "with send-command/send-config also a glob and repeatable (see 'many hosts')",
    )
    group.add_argument(
        "--mqtt-version",
        choices=("auto", "5", "3.1.1"),
        help="MQTT version (default auto: 5, falling back to 3.1.1)",
    )
    group.add_argument(
        *(("--quiet",) if original_options else ("--quiet", "-q")),
        action="store_true",
        help="no progress on stderr",
    )
    signing = parser.add_argument_group("signing")
    signing.add_argument(
        "--sign-key",
        metavar="FILE",
        help="sign the message: an Ed25519 private key (from 'keygen') or an HMAC secret file",
    )
    signing.add_argument(
        "--key-id", metavar="ID", help="the key's name on the hosts (default: the file's stem)"
    )
    signing.add_argument(
        "--expiry",
        type=seconds(maximum=MAX_EXPIRY),
        metavar="SECONDS",
        help="MQTT 5 message expiry: a host offline longer never runs it (default: --timeout)",
    )


def _sender_parser(subparsers: Any, name: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, description=description, epilog=EXIT_STATUSES, add_help=False
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    return parser


def register(subparsers: Any) -> None:
    cmd = _sender_parser(
        subparsers,
        "send-command",
        "Send SERVICE COMMAND to a host's command topic and wait for the result "
        "with the same task_id. Prints the result as JSON on stdout.",
    )
    cmd.add_argument("service", help="a service of the host's config.json (Services)")
    cmd.add_argument("command", help="one of that service's commands")
    cmd.add_argument(
        "--timeout",
        type=seconds(),
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the result (default 30)",
    )
    add_connection_options(cmd, original_options=True)
    add_history_options(cmd)
    add_fanout_options(cmd, rolling=False)
    cmd.set_defaults(handler=send_command)

    conf = _sender_parser(
        subparsers,
        "send-config",
        "Push a whole collectd.conf to a host, which validates it, applies it, "
        "restarts collectd and rolls back on failure. Prints the result as JSON on stdout.",
    )
    conf.add_argument("path", help="the new collectd.conf")
    conf.add_argument(
        "--timeout",
        type=seconds(),
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the result (default 120)",
    )
    add_connection_options(conf, original_options=True)
    add_history_options(conf)
    add_fanout_options(conf, rolling=True)
    conf.set_defaults(handler=send_config)


def connection_from_args(args: argparse.Namespace) -> tuple[BrokerSettings, str, str]:
    """Broker settings and topics from --config, then the explicit options."""
    if args.config:
        from collectd_monitor.config import load_config

        config = load_config(path=args.config)
        settings, topic, result_topic = config.broker, config.command_topic, config.result_topic
    else:
        settings = BrokerSettings()
        topic, result_topic = default_topics()
    several = hasattr(args, "hosts_file") and wants_fanout(args)  # topics are templates then
    if args.to and not several and (args.topic or args.result_topic):
        raise ConfigError("--to names the topics; give either --to or --topic/--result-topic")
    if args.to:
        topic, result_topic = default_topics(args.to[-1] if isinstance(args.to, list) else args.to)
    secure = settings.secure if args.secure is None else True
    if args.ca_file or args.cert_file:
        secure = True
    changes: dict[str, Any] = {"secure": secure}
    if args.host is not None:
        try:
            changes["host"], changes["port"] = parse_host(args.host, secure)
        except ValueError as exc:
            raise ConfigError(str(exc), key="--host") from None
    elif secure and not settings.secure:
        changes["port"] = DEFAULT_TLS_PORT
    password = args.password or os.environ.get(PASSWORD_ENV)
    if args.mqtt_version:
        changes["protocol"] = args.mqtt_version
    for key, value in (
        ("user", args.user),
        ("password", password),
        ("ca_file", args.ca_file),
        ("cert_file", args.cert_file),
        ("key_file", args.key_file),
        ("qos", args.qos),
    ):
        if value is not None:
            changes[key] = value
    return (replace(settings, **changes), args.topic or topic, args.result_topic or result_topic)


def _send(args: argparse.Namespace, payload: dict[str, Any], what: str, persistent: bool) -> int:
    def progress(text: str) -> None:
        if not args.quiet:
            print(f"collectd-monitor: {text}", file=sys.stderr)

    try:
        settings, topic, result_topic = connection_from_args(args)
    except ConfigError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    signer = None
    if args.sign_key:
        from collectd_monitor.commands.security import Signer

        try:
            signer = Signer.from_file(args.sign_key, args.key_id)
        except (OSError, ValueError) as exc:
            print(f"collectd-monitor: cannot use signing key: {exc}", file=sys.stderr)
            return EXIT_USAGE
    sender = Sender(
        settings,
        topic,
        result_topic,
        persistent=persistent,
        signer=signer,
        expiry=args.expiry if args.expiry is not None else args.timeout,
        progress=progress,
    )
    progress(f"sending {what} as task {payload['task_id']} to {topic} at {settings.address}")
    try:
        result = recorded(args, payload, topic, lambda: sender.request(payload, args.timeout))
    except AuthError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    except TransportError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    except ResultTimeout as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except CodelessResult as exc:
        print(json.dumps(exc.data, ensure_ascii=False))
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_REMOTE_FAILED
    print(json.dumps(result.to_dict(), ensure_ascii=False))
    if result.code != 0:
        progress(f"task {result.task_id} failed: code {result.code} ({describe(result.code)})")
        return EXIT_REMOTE_FAILED
    return EXIT_OK


def _fan_out(args: argparse.Namespace, make: Callable[[int], dict[str, Any]], what: str) -> int:
    try:
        settings, _, _ = connection_from_args(args)
    except ConfigError as exc:
        print(f"collectd-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from collectd_monitor.cli.fanout import fan_out

    return fan_out(args, settings, make, what)


def send_command(args: argparse.Namespace) -> int:
    if wants_fanout(args):
        what = f"{args.service}/{args.command}"
        return _fan_out(args, lambda t: encode_command(t, args.service, args.command), what)
    payload = encode_command(new_task_id(), args.service, args.command)
    return _send(args, payload, f"{args.service}/{args.command}", persistent=False)


def send_config(args: argparse.Namespace) -> int:
    try:
        with open(args.path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"collectd-monitor: cannot read {args.path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if wants_fanout(args):
        return _fan_out(args, lambda t: encode_config(t, text), f"config {args.path}")
    payload = encode_config(new_task_id(), text)
    return _send(args, payload, f"config {args.path} ({len(text)} bytes)", persistent=True)
