"""The environment collectd and the replacement helper are started with.

A service manager starts collectd with a fixed PATH and almost nothing else.
Whoever runs a replacement (a root shell with an activated venv, conda or
pyenv, a CI job, collectd itself) must not leak its own environment into the
daemon: collectd's embedded Python finds its standard library from the
``python3`` on PATH, so a foreign ``python3`` first on PATH, or a
``PYTHONHOME``/``PYTHONPATH``, makes the restarted daemon's plugins fail to
import (README "Remote collectd.conf replacement").
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from collectd_monitor.plugin_support import OFFLINE_ENV

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH systemd and Debian's init scripts give a system service."""

KEPT = ("LANG", "LC_ALL", "TZ")
"""The only variables taken over from the caller (a service manager sets them too)."""

PAUSE_ENV = "COLLECTD_MONITOR_TEST_PAUSE_AFTER"
"""Test hook, inert unless set: the helper stops after the named step (see helper.py)."""


def daemon_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """What collectd gets: the system PATH, the locale, nothing of the caller's Python.

    Never the offline flag (that is the validation run's, :func:`validation_env`).
    """
    source = os.environ if base is None else base
    env = {key: source[key] for key in KEPT if source.get(key)}
    env["PATH"] = SAFE_PATH
    return env


def validation_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``collectd -T``'s environment: the daemon's, with our plugins told to stay offline."""
    env = daemon_env(base)
    env[OFFLINE_ENV] = "1"
    return env


def helper_env(module_paths: list[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The helper's: the daemon's plus this package on PYTHONPATH (and the test hook, if set)."""
    source = os.environ if base is None else base
    env = daemon_env(source)
    env["PYTHONPATH"] = os.pathsep.join(module_paths)
    if source.get(PAUSE_ENV):
        env[PAUSE_ENV] = source[PAUSE_ENV]
    return env
