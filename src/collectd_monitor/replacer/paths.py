"""Where the replacer finds collectd: config, binary, pid file, report file.

Paths come from ``Services.collectd`` in config.json (``ConfigPath``,
``CommandPath``, ``PIDPath``, ``ReplacerReportPath``, ``commands.start`` /
``commands.stop``). What is not given is discovered from the running
collectd's command line (``/proc/PID/cmdline``: its ``-C`` and ``-P``
arguments, ``/proc/PID/exe`` for the binary), then from Debian's defaults.
``proc`` is a parameter so tests can point discovery at a fixture tree.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.replacer.errors import ReplaceFailed

DEFAULT_CONFIG = "/etc/collectd/collectd.conf"
DEFAULT_PID = "/var/run/collectd.pid"
DEFAULT_BINARY = "/usr/sbin/collectd"
REPORT_NAME = "collectd-monitor-replace.json"

MODES = ("pidfile", "commands", "init", "collectdmon", "systemd")
MODE_ALIASES = {"direct": "pidfile"}
MIN_SETTLE = 0.5
INIT_SCRIPT = "/etc/init.d/collectd"


@dataclass(frozen=True)
class Timing:
    """How long each waiting step may take (``Services.collectd`` keys in parentheses)."""

    settle: float = 3.0
    """(SettleTime) the new daemon must still be alive this long after it started."""
    connect: float = 30.0
    """(ConnectTimeout) how long the new plugin may take to reach the broker."""
    stop: float = 30.0
    """(StopTimeout) how long collectd may take to exit and remove its pid file."""
    start: float = 15.0
    """(StartTimeout) how long a new pid may take to appear."""
    validate: float = 60.0
    """(ValidateTimeout) limit of the ``collectd -T`` run."""
    watch: float = 60.0
    """(WatchTime) after success, a death of the new daemon within this long still rolls back."""

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Timing:
        keys = {
            "settletime": "settle",
            "connecttimeout": "connect",
            "stoptimeout": "stop",
            "starttimeout": "start",
            "validatetimeout": "validate",
            "watchtime": "watch",
        }
        values: dict[str, float] = {}
        for key, value in options.items():
            name = keys.get(key.lower())
            if name is None:
                continue
            number = float(value)
            if number < 0:
                raise ValueError(f"Services.collectd.{key} must not be negative")
            if name == "settle" and number < MIN_SETTLE:
                # The settle time is the only guard against a daemon that dies late.
                raise ValueError(f"Services.collectd.{key} must be at least {MIN_SETTLE} s")
            values[name] = number
        return cls(**values)


@dataclass(frozen=True)
class ReplacerPaths:
    config: Path
    binary: str
    pid: Path
    report: Path
    mode: str = "pidfile"
    unit: str = "collectd.service"
    start_command: str | None = None
    stop_command: str | None = None
    timing: Timing = field(default_factory=Timing)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", MODE_ALIASES.get(self.mode, self.mode))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")

    @property
    def new(self) -> Path:
        """The pushed config, written beside the live one (same filesystem: atomic swap)."""
        return self.config.with_name(self.config.name + ".new")

    @property
    def backup(self) -> Path:
        return self.config.with_name(self.config.name + ".bak")

    @property
    def rejected(self) -> Path:
        """Where a config that failed after the restart is kept for inspection."""
        return self.config.with_name(self.config.name + ".rejected")

    @property
    def lock(self) -> Path:
        return self.report.with_name(self.report.name + ".lock")

    @property
    def plugin_status(self) -> Path:
        """Written by the remote plugin when it starts and when it connects."""
        return self.report.with_name(self.report.name + ".plugin")

    @property
    def helper_log(self) -> Path:
        return self.report.with_name(self.report.name + ".log")

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": str(self.config),
            "binary": self.binary,
            "pid": str(self.pid),
            "report": str(self.report),
            "mode": self.mode,
            "unit": self.unit,
            "start_command": self.start_command,
            "stop_command": self.stop_command,
            "timing": self.timing.__dict__,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplacerPaths:
        return cls(
            config=Path(data["config"]),
            binary=data["binary"],
            pid=Path(data["pid"]),
            report=Path(data["report"]),
            mode=data["mode"],
            unit=data["unit"],
            start_command=data.get("start_command"),
            stop_command=data.get("stop_command"),
            timing=Timing(**data.get("timing", {})),
        )


def _option(options: Mapping[str, Any], name: str) -> Any:
    for key, value in options.items():
        if key.lower() == name.lower():
            return value
    return None


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


def discover(
    options: Mapping[str, Any],
    *,
    collectd_pid: int | None = None,
    proc: str = "/proc",
    systemd_root: str = "/run/systemd/system",
    init_script: str = INIT_SCRIPT,
) -> ReplacerPaths:
    """Build the paths from ``Services.collectd`` options and the running collectd.

    ``collectd_pid`` is the running daemon (inside collectd: ``os.getpid()``);
    without it the only collectd process found under ``proc`` is used, if any.
    Raises :class:`ReplaceFailed` (0x200a) when the binary cannot be found or
    an option is malformed.
    """
    if collectd_pid is None:
        pid_option = _option(options, "PIDPath")
        if pid_option:
            collectd_pid = _pid_in(pid_option, proc)
        else:
            running = find_collectd_pids(proc)
            collectd_pid = running[0] if len(running) == 1 else None
    argv = read_cmdline(collectd_pid, proc) if collectd_pid else []
    args = parse_cmdline(argv[1:])

    parent = parent_of(collectd_pid, proc) if collectd_pid else None
    monitor = parent if parent is not None and is_collectdmon(parent, proc) else None

    config = _option(options, "ConfigPath") or args.get("-C") or DEFAULT_CONFIG
    pid = (
        _option(options, "PIDPath")
        or args.get("-P")
        or (monitor_pid_file(monitor, proc) if monitor else DEFAULT_PID)
    )
    binary = _option(options, "CommandPath")
    if not binary and collectd_pid:
        try:
            binary = os.readlink(f"{proc}/{collectd_pid}/exe")
        except OSError:
            binary = None
        if binary and binary.endswith(" (deleted)"):
            binary = None
    binary = binary or shutil.which("collectd") or DEFAULT_BINARY
    report = _option(options, "ReplacerReportPath") or str(Path(pid).parent / REPORT_NAME)

    commands = {key.lower(): value for key, value in (_option(options, "commands") or {}).items()}
    start, stop = commands.get("start"), commands.get("stop")
    mode = _option(options, "ServiceManager") or _option(options, "Manager")
    unit = None
    if collectd_pid and os.path.isdir(systemd_root):
        unit = systemd_unit_of(collectd_pid, proc)
    if mode is None:
        if start or stop:
            mode = "commands"
        elif unit is not None:
            mode = "systemd"
        elif monitor is not None:
            mode = "collectdmon"
        elif os.path.isfile(init_script) and (str(config), str(pid)) == (
            DEFAULT_CONFIG,
            DEFAULT_PID,
        ):
            mode = "init"
        else:
            mode = "pidfile"
    mode = MODE_ALIASES.get(str(mode).lower(), str(mode).lower())
    if mode == "pidfile" and "-f" in argv[1:]:
        raise ReplaceFailed(
            ResultCode.REPLACE_PATH_NOT_FOUND,
            f"collectd (pid {collectd_pid}) runs in the foreground (-f), so it writes no pid "
            f"file, and not under systemd or collectdmon (its parent is "
            f"{_describe(parent, proc)}): nothing would bring it back after a restart. "
            "Run it under systemd, collectdmon or Debian's init script, daemonized with a "
            "pid file, or set Services.collectd commands.start/stop",
        )
    try:
        timing = Timing.from_options(options)
        return ReplacerPaths(
            config=Path(config),
            binary=str(binary),
            pid=Path(pid),
            report=Path(report),
            mode=mode,
            unit=_option(options, "Unit") or unit or "collectd.service",
            start_command=_command_line(start),
            stop_command=_command_line(stop),
            timing=timing,
        )
    except (TypeError, ValueError) as exc:
        raise ReplaceFailed(
            ResultCode.REPLACE_PATH_NOT_FOUND, f"Services.collectd: {exc}"
        ) from None


def _describe(pid: int | None, proc: str) -> str:
    if pid is None:
        return "unknown"
    argv = read_cmdline(pid, proc)
    return f"{os.path.basename(argv[0]) if argv else '?'} (pid {pid})"


def _command_line(spec: Any) -> str | None:
    """``commands.start``/``stop`` as parsed by config.py (CommandSpec) or a raw string."""
    if spec is None:
        return None
    line = getattr(spec, "line", None)
    if line is not None:
        return str(line)
    argv = getattr(spec, "argv", None)
    if argv is not None:
        import shlex

        return shlex.join(argv)
    if isinstance(spec, str):
        return spec
    raise TypeError("commands.start/stop must be a command line")


def check_paths(paths: ReplacerPaths) -> None:
    """0x200a unless the live config, the binary and the pid file's directory exist."""
    missing = []
    if not paths.config.is_file():
        missing.append(f"config {paths.config}")
    if paths.mode != "systemd" and not os.access(paths.binary, os.X_OK):
        missing.append(f"collectd binary {paths.binary}")
    if not paths.pid.parent.is_dir():
        missing.append(f"pid file directory {paths.pid.parent}")
    if not paths.report.parent.is_dir():
        missing.append(f"report directory {paths.report.parent}")
    if missing:
        raise ReplaceFailed(ResultCode.REPLACE_PATH_NOT_FOUND, "not found: " + ", ".join(missing))
