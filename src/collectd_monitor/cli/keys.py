"""``keygen``: make an Ed25519 key pair for signing commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from collectd_monitor.cli.status import EXIT_USAGE
from collectd_monitor.commands.security import generate_keypair


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keygen",
        description="Write PREFIX.key (private, mode 0600: keep it on the sending side) and "
        "PREFIX.pub (give it to the hosts in Security.Ed25519Keys).",
    )
    parser.add_argument("prefix", help="path prefix of the two files, e.g. /etc/ops/central")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix)
    try:
        private, public = generate_keypair(prefix)
    except FileExistsError:
        print(
            f"collectd-monitor: {prefix.with_suffix('.key')} exists; not overwriting it",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except OSError as exc:
        print(f"collectd-monitor: cannot write the key pair: {exc}", file=sys.stderr)
        return EXIT_USAGE
    name = prefix.name
    print(f"private key: {private} (sign with: send-command --sign-key {private})")
    print(f"public key:  {public}")
    print("on each host, in config.json:")
    print(f'  "Security": {{"Ed25519Keys": {{"{name}": {{"File": "{public.resolve()}"}}}}}}')
    return 0
