"""Where the replacer finds collectd: config, binary, pid file, report file.

Paths come from ``Services.collectd`` in config.json (``ConfigPath``,
``CommandPath``, ``PIDPath``, ``ReplacerReportPath``, ``commands.start`` /
``commands.stop``). What is not given is discovered from the running
collectd's command line (``/proc/PID/cmdline``: its ``-C`` and ``-P``
arguments, ``/proc/PID/exe`` for the binary), then from Debian's defaults.
``proc`` is a parameter so tests can point discovery at a fixture tree.

Every path is made absolute here, against the caller's working directory,
before anything uses it: collectd changes into its ``BaseDir`` before it
writes its pid file, so a relative ``-P`` would land somewhere else.

The replacement lock belongs to the live config file (its real path), not to
the report path: whoever replaces one collectd.conf, with whatever other
paths, takes the same lock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.errors import ConfigError
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.procfs import (
    DEFAULT_CONFIG,
    _pid_in,
    daemon_path,
    daemons_using,
    find_collectd_pids,
    is_collectdmon,
    monitor_pid_file,
    parent_of,
    parse_cmdline,
    read_cmdline,
    systemd_unit_of,
)
from collectd_monitor.replacer.static import DEFAULT_MAX_CONFIG_BYTES
from collectd_monitor.schema import Section
from collectd_monitor.services import SERVICE_MANAGERS, CollectdServiceSettings

log = logging.getLogger("collectd_monitor.replacer")

LOCK_DIR = "/run/lock/collectd-monitor"
"""Where replacement locks live: one per live config file, whatever the other paths."""
DEFAULT_PID = "/var/run/collectd.pid"
DEFAULT_BINARY = "/usr/sbin/collectd"
REPORT_NAME = "collectd-monitor-replace.json"

MODES = SERVICE_MANAGERS
MODE_ALIASES = {"direct": "pidfile"}
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
        settings = _settings(options)
        given = {
            "settle": settings.settle_time,
            "connect": settings.connect_timeout,
            "stop": settings.stop_timeout,
            "start": settings.start_timeout,
            "validate": settings.validate_timeout,
            "watch": settings.watch_time,
        }
        return cls(**{name: value for name, value in given.items() if value is not None})


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
    max_config_bytes: int = DEFAULT_MAX_CONFIG_BYTES
    """(MaxConfigBytes) the largest config accepted."""
    lock_dir: str = LOCK_DIR

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", MODE_ALIASES.get(self.mode, self.mode))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        for name in ("config", "pid", "report"):
            if not getattr(self, name).is_absolute():
                raise ValueError(f"the {name} path {getattr(self, name)} is not absolute")
        if self.max_config_bytes <= 0:
            raise ValueError("MaxConfigBytes must be positive")

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
        """The lock of the live config file: the same for every path that leads to it."""
        return lock_path_for(self.config, self.lock_dir)

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
            "max_config_bytes": self.max_config_bytes,
            "lock_dir": self.lock_dir,
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
            max_config_bytes=int(data.get("max_config_bytes", DEFAULT_MAX_CONFIG_BYTES)),
            lock_dir=str(data.get("lock_dir", LOCK_DIR)),
        )


def _settings(options: Mapping[str, Any]) -> CollectdServiceSettings:
    """``Services.collectd`` options read as config.json's are (ConfigError when bad)."""
    return CollectdServiceSettings.read(Section(options, path="Services.collectd"))


def lock_path_for(config: os.PathLike[str] | str, lock_dir: str = LOCK_DIR) -> Path:
    """``LOCK_DIR/NAME-HASH.lock``, HASH of the config's real path (symlinks resolved)."""
    real = os.path.realpath(config)
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Path(lock_dir) / f"{os.path.basename(real)}-{digest}.lock"


def absolute(path: str, what: str, cwd: str | None = None) -> str:
    """``path`` made absolute against ``cwd`` (the caller's working directory); logged."""
    if os.path.isabs(path):
        return os.path.normpath(path)
    base = cwd or os.getcwd()
    resolved = os.path.normpath(os.path.join(base, path))
    log.info(
        "relative %s %s resolved against the working directory %s: %s", what, path, base, resolved
    )
    return resolved


def discover(
    options: Mapping[str, Any],
    *,
    collectd_pid: int | None = None,
    proc: str = "/proc",
    systemd_root: str = "/run/systemd/system",
    cwd: str | None = None,
    init_script: str = INIT_SCRIPT,
) -> ReplacerPaths:
    """Build the paths from ``Services.collectd`` options and the running collectd.

    Relative paths are resolved against ``cwd`` (default: the working directory).

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
            collectd_pid = _pid_in(absolute(str(pid_option), "PIDPath", cwd), proc)
        else:
            running = find_collectd_pids(proc)
            collectd_pid = running[0] if len(running) == 1 else None
    argv = read_cmdline(collectd_pid, proc) if collectd_pid else []
    args = parse_cmdline(argv[1:])

    parent = parent_of(collectd_pid, proc) if collectd_pid else None
    monitor = parent if parent is not None and is_collectdmon(parent, proc) else None

    if settings.config_path:
        config = absolute(settings.config_path, "ConfigPath", cwd)
    elif args.get("-C"):
        config = daemon_path(args["-C"], collectd_pid, proc)
    else:
        config = DEFAULT_CONFIG
    if settings.pid_path:
        pid = absolute(settings.pid_path, "PIDPath", cwd)
    elif args.get("-P"):
        pid = daemon_path(args["-P"], collectd_pid, proc)
    elif monitor:
        pid = monitor_pid_file(monitor, proc) or DEFAULT_PID
    else:
        pid = DEFAULT_PID
    binary = settings.command_path
    if not binary and collectd_pid:
        try:
            binary = os.readlink(f"{proc}/{collectd_pid}/exe")
        except OSError:
            binary = None
        if binary and binary.endswith(" (deleted)"):
            binary = None
    binary = binary or shutil.which("collectd") or DEFAULT_BINARY
    if os.sep in str(binary):
        binary = absolute(str(binary), "CommandPath", cwd)
    if settings.report_path:
        report = absolute(settings.report_path, "ReplacerReportPath", cwd)
    else:
        report = str(Path(pid).parent / REPORT_NAME)

    start, stop = commands.raw("start"), commands.raw("stop")
    mode: str | None = settings.service_manager
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
            unit=settings.unit or unit or "collectd.service",
            start_command=_command_line(start),
            stop_command=_command_line(stop),
            timing=timing,
            max_config_bytes=settings.max_config_bytes or DEFAULT_MAX_CONFIG_BYTES,
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


# --------------------------------------------------------------------------- running daemons


def check_single_daemon(paths: ReplacerPaths, recorded: int | None, proc: str = "/proc") -> None:
    """0x200b unless every collectd running on this config is the one ``recorded`` names.

    ``recorded`` is the pid the service manager knows (pid file or MainPID).
    Stopping that one while another daemon runs on the same config, or
    starting a second one beside an unknown daemon, would leave two.
    """
    running = daemons_using(paths.config, proc)
    strays = [pid for pid in running if pid != recorded]
    if not strays:
        return
    where = f"systemd unit {paths.unit}" if paths.mode == "systemd" else f"the pid file {paths.pid}"
    named = f"names pid {recorded}" if recorded is not None else "names no running collectd"
    listing = ", ".join(f"pid {pid}" for pid in strays)
    foreground = [pid for pid in strays if "-f" in read_cmdline(pid, proc)[1:]]
    hint = " (it runs in the foreground with -f, which writes no pid file)" if foreground else ""
    raise ReplaceFailed(
        ResultCode.REPLACE_PID_FILE_MISMATCH,
        f"collectd runs with {paths.config} ({listing}){hint} but {where} {named}; "
        "nothing was changed: replacing now would leave two collectd daemons. "
        "Give the pid file that collectd really uses (PIDPath / --pid-path)",
    )
