"""Helpers for code that runs in (or beside) collectd, without importing collectd.

The plugin modules pass collectd's objects in; everything here only touches
their attributes, so tests can hand in look-alikes. The process helpers
(:data:`SAFE_PATH`, :func:`process_alive`) serve the executor, the config
replacer and the test harness alike.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

OFFLINE_ENV = "COLLECTD_MONITOR_OFFLINE"
"""Set (to 1) by the config replacer for its ``collectd -T`` validation run:
our plugins then load and check their config but never connect, publish or run
anything."""

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""``PATH`` for a child when the environment has none (collectd under systemd may not)."""


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


def process_alive(pid: int, proc: str = "/proc") -> bool:
    """True while ``pid`` runs; a zombie counts as exited (collectd may linger as one)."""
    try:
        with open(f"{proc}/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class Datasets:
    """collectd's data sets by type (names and lower-case kinds), looked up once each.

    ``get_dataset`` is ``collectd.get_dataset``; an unknown type has no sources.
    """

    def __init__(self, get_dataset: Callable[[str], Any]) -> None:
        self._get = get_dataset
        self._known: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def __call__(self, type_: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        found = self._known.get(type_)
        if found is None:
            try:
                sources = self._get(type_)
            except Exception:
                sources = []
            found = (tuple(s[0] for s in sources), tuple(str(s[1]).lower() for s in sources))
            self._known[type_] = found
        return found
