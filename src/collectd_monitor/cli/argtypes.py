"""Argument checking for every subcommand: bad input is a one-line usage error (exit 2).

A traceback or exit 1 for a mistyped option would read as "the host failed";
argparse's own errors print the whole usage block first. Everything here
turns bad values into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from collectd_monitor.cli.status import EXIT_USAGE

MAX_SECONDS = 30 * 86400.0
"""The longest wait any option accepts: 30 days (threading refuses much more)."""
MAX_EXPIRY = float(2**32 - 1)
"""MQTT 5 message expiry is a four-byte count of seconds."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``PROG: error: ...``, exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def seconds(*, allow_zero: bool = False, maximum: float = MAX_SECONDS) -> Callable[[str], float]:
    """A duration in seconds: finite, above zero (or zero when allowed), at most ``maximum``."""

    def convert(text: str) -> float:
        value = _number(text)
        if value < 0 or (value == 0 and not allow_zero):
            bound = "0 or more" if allow_zero else "more than 0"
            raise argparse.ArgumentTypeError(f"{text!r}: must be {bound} seconds")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be at most {maximum:g} seconds")
        return value

    convert.__name__ = "seconds"  # argparse names the type in its messages
    return convert


def count(minimum: int = 1, maximum: int = 10**9) -> Callable[[str], int]:
    """A whole number within [minimum, maximum]."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{text!r}: must be between {minimum} and {maximum}")
        return value

    convert.__name__ = "count"
    return convert


def rate(text: str) -> float:
    """A rate per second: finite and above zero."""
    value = _number(text)
    if value <= 0 or value > 1e6:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be more than 0 and at most 1e6 per second"
        )
    return value


def existing_file(text: str) -> str:
    """A path that names a readable regular file."""
    if not os.path.isfile(text):
        what = "is not a regular file" if os.path.exists(text) else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {what}")
    if not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not readable")
    return text


class Once(argparse.Action):
    """A store action that refuses to be given twice (the last one would win silently)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice")
        setattr(namespace, self.dest, values)
