"""What /proc tells about running collectd processes.

Command lines (``-C``, ``-P``), parents (collectdmon), systemd units and which
daemons run on a given config. ``proc`` is a parameter everywhere so tests can
point these at a fixture tree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from collectd_monitor.plugin_support import process_alive

DEFAULT_CONFIG = "/etc/collectd/collectd.conf"


def parse_cmdline(argv: Sequence[str]) -> dict[str, str]:
    """The ``-C`` and ``-P`` arguments of a collectd command line (both spellings)."""
    found: dict[str, str] = {}
    args = list(argv)
    for index, arg in enumerate(args):
        for flag in ("-C", "-P"):
            if arg == flag and index + 1 < len(args):
                found[flag] = args[index + 1]
            elif arg.startswith(flag) and len(arg) > 2:
                found[flag] = arg[2:]
    return found


def read_cmdline(pid: int, proc: str = "/proc") -> list[str]:
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_collectd(pid: int, proc: str = "/proc") -> bool:
    argv = read_cmdline(pid, proc)
    return bool(argv) and os.path.basename(argv[0]) == "collectd"


def is_collectdmon(pid: int, proc: str = "/proc") -> bool:
    argv = read_cmdline(pid, proc)
    return bool(argv) and os.path.basename(argv[0]) == "collectdmon"


def parent_of(pid: int, proc: str = "/proc") -> int | None:
    try:
        with open(f"{proc}/{pid}/stat", encoding="utf-8") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def children_of(parent: int, proc: str = "/proc") -> list[int]:
    """The collectd processes whose parent is ``parent`` (collectdmon's child)."""
    return [pid for pid in find_collectd_pids(proc) if parent_of(pid, proc) == parent]


def monitor_pid_file(monitor: int, proc: str = "/proc") -> str:
    """collectdmon's own pid file: its ``-P`` (before ``--``), else its built-in default."""
    argv = read_cmdline(monitor, proc)[1:]
    own = argv[: argv.index("--")] if "--" in argv else argv
    return parse_cmdline(own).get("-P", "/var/run/collectdmon.pid")


def find_collectd_pids(proc: str = "/proc") -> list[int]:
    pids = []
    for entry in os.listdir(proc):
        if entry.isdigit() and is_collectd(int(entry), proc):
            pids.append(int(entry))
    return sorted(pids)


def _pid_in(path: str, proc: str) -> int | None:
    """The collectd a pid file names: itself, or collectdmon's child."""
    try:
        pid = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    if is_collectdmon(pid, proc):
        children = children_of(pid, proc)
        return children[0] if children else None
    return pid if is_collectd(pid, proc) else None


def systemd_unit_of(pid: int, proc: str = "/proc") -> str | None:
    """The ``*.service`` a process runs in, from its cgroup, if systemd manages it."""
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    for line in text.splitlines():
        for part in line.rsplit(":", 1)[-1].split("/"):
            if part.endswith(".service"):
                return part
    return None


def daemon_path(path: str, pid: int | None, proc: str) -> str:
    """A path from a daemon's command line, made absolute against the daemon's directory.

    A daemonized collectd has moved into its ``BaseDir``, so for a relative
    argument this is a best guess; the daemons this package starts get
    absolute paths.
    """
    if os.path.isabs(path) or pid is None:
        return os.path.normpath(path) if os.path.isabs(path) else path
    try:
        base = os.readlink(f"{proc}/{pid}/cwd")
    except OSError:
        return path
    return os.path.normpath(os.path.join(base, path))


def daemons_using(config: os.PathLike[str] | str, proc: str = "/proc") -> list[int]:
    """Running collectd processes whose config is ``config``: their ``-C``, else the default.

    Test runs (``-t``/``-T``) and zombies do not count; paths are compared
    with symlinks resolved.
    """
    target = os.path.realpath(config)
    found = []
    for pid in find_collectd_pids(proc):
        argv = read_cmdline(pid, proc)[1:]
        if "-t" in argv or "-T" in argv or not process_alive(pid, proc):
            continue
        used = daemon_path(parse_cmdline(argv).get("-C", DEFAULT_CONFIG), pid, proc)
        if os.path.realpath(used) == target:
            found.append(pid)
    return found
