"""Helpers shared by the collectd-facing modules, without importing collectd.

The plugin modules pass collectd's objects in; everything here only touches
their attributes, so tests can hand in look-alikes.
"""

from __future__ import annotations

import os
import signal
from typing import Any

OFFLINE_ENV = "COLLECTD_MONITOR_OFFLINE"
"""Set (to 1) by the config replacer for its ``collectd -T`` validation run:
our plugins then load and check their config but never connect, publish or run
anything."""


def block_options(conf: Any) -> dict[str, Any]:
    """A ``<Module>`` block as a dict: one value stays a scalar, several a list."""
    options: dict[str, Any] = {}
    for child in getattr(conf, "children", ()):
        values = tuple(child.values)
        options[child.key] = values[0] if len(values) == 1 else list(values)
    return options


def restore_sigchld() -> None:
    """collectd ignores SIGCHLD, which makes every exit status read 0.

    ``signal.getsignal`` may report SIG_DFL while the process-level disposition
    is SIG_IGN, so set it unconditionally. Must run on the main thread (init).
    """
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    except ValueError:  # not on the main thread
        pass


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")
