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
from collectd_monitor.errors import ConfigError
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.schema import Section
from collectd_monitor.services import SERVICE_MANAGERS, CollectdServiceSettings

DEFAULT_CONFIG = "/etc/collectd/collectd.conf"
DEFAULT_PID = "/var/run/collectd.pid"
DEFAULT_BINARY = "/usr/sbin/collectd"
REPORT_NAME = "collectd-monitor-replace.json"

MODES = SERVICE_MANAGERS


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

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Timing:
        settings = _settings(options)
        given = {
            "settle": settings.settle_time,
            "connect": settings.connect_timeout,
            "stop": settings.stop_timeout,
            "start": settings.start_timeout,
            "validate": settings.validate_timeout,
        }
        return cls(**{name: value for name, value in given.items() if value is not None})


@dataclass(frozen=True)
class ReplacerPaths:
    config: Path
    binary: str
    pid: Path
    report: Path
    mode: str = "direct"
    unit: str = "collectd.service"
    start_command: str | None = None
    stop_command: str | None = None
    timing: Timing = field(default_factory=Timing)

    def __post_init__(self) -> None:
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


def _settings(options: Mapping[str, Any]) -> CollectdServiceSettings:
    """``Services.collectd`` options read as config.json's are (ConfigError when bad)."""
    return CollectdServiceSettings.read(Section(options, path="Services.collectd"))


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


def find_collectd_pids(proc: str = "/proc") -> list[int]:
    pids = []
    for entry in os.listdir(proc):
        if entry.isdigit() and is_collectd(int(entry), proc):
            pids.append(int(entry))
    return sorted(pids)


def _pid_in(path: str, proc: str) -> int | None:
    try:
        pid = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
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
) -> ReplacerPaths:
    """Build the paths from ``Services.collectd`` options and the running collectd.

    ``collectd_pid`` is the running daemon (inside collectd: ``os.getpid()``);
    without it the only collectd process found under ``proc`` is used, if any.
    Raises :class:`ReplaceFailed` (0x200a) when the binary cannot be found or
    an option is malformed.
    """
    try:
        settings = _settings(options)
        commands = Section(options, path="Services.collectd").section_or_empty("Commands")
    except ConfigError as exc:
        raise ReplaceFailed(ResultCode.REPLACE_PATH_NOT_FOUND, str(exc)) from None
    if collectd_pid is None:
        pid_option = settings.pid_path
        if pid_option:
            collectd_pid = _pid_in(pid_option, proc)
        else:
            running = find_collectd_pids(proc)
            collectd_pid = running[0] if len(running) == 1 else None
    argv = read_cmdline(collectd_pid, proc) if collectd_pid else []
    args = parse_cmdline(argv[1:])

    config = settings.config_path or args.get("-C") or DEFAULT_CONFIG
    pid = settings.pid_path or args.get("-P") or DEFAULT_PID
    binary = settings.command_path
    if not binary and collectd_pid:
        try:
            binary = os.readlink(f"{proc}/{collectd_pid}/exe")
        except OSError:
            binary = None
        if binary and binary.endswith(" (deleted)"):
            binary = None
    binary = binary or shutil.which("collectd") or DEFAULT_BINARY
    report = settings.report_path or str(Path(pid).parent / REPORT_NAME)

    start, stop = commands.raw("start"), commands.raw("stop")
    mode = settings.service_manager
    unit = None
    if collectd_pid and os.path.isdir(systemd_root):
        unit = systemd_unit_of(collectd_pid, proc)
    if mode is None:
        if start or stop:
            mode = "commands"
        elif unit is not None:
            mode = "systemd"
        else:
            mode = "direct"
    if mode == "direct" and "-f" in argv[1:]:
        raise ReplaceFailed(
            ResultCode.REPLACE_PATH_NOT_FOUND,
            "collectd runs in the foreground (-f) without a pid file or a service manager; "
            "run it daemonized with a pid file, under systemd, or set "
            "Services.collectd commands.start/stop",
        )
    try:
        timing = Timing.from_options(options)
        return ReplacerPaths(
            config=Path(config),
            binary=str(binary),
            pid=Path(pid),
            report=Path(report),
            mode=str(mode).lower(),
            unit=settings.unit or unit or "collectd.service",
            start_command=_command_line(start),
            stop_command=_command_line(stop),
            timing=timing,
        )
    except (TypeError, ValueError) as exc:
        raise ReplaceFailed(
            ResultCode.REPLACE_PATH_NOT_FOUND, f"Services.collectd: {exc}"
        ) from None


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
