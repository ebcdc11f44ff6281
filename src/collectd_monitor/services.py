"""``Services``: the recovery commands a host allows, and where collectd itself lives.

Each key of ``Services`` names a service; its ``Commands`` (or ``commands``)
map command names to a shell line, an argument list, or an object with
options. The service ``collectd`` may also give the config replacer's paths
and timings (:class:`CollectdServiceSettings`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from collectd_monitor.schema import (
    Converter,
    Section,
    as_positive_float,
    as_str,
    choice,
    integer,
    number,
)

SERVICE_MANAGERS = ("pidfile", "commands", "init", "collectdmon", "systemd")
"""How the replacer stops and starts collectd (``direct`` is an old name of ``pidfile``)."""
MIN_SETTLE_TIME = 0.5
"""The settle time is the only guard against a daemon that dies late."""


@dataclass(frozen=True)
class CommandSpec:
    """One recovery command a host allows.

    Exactly one of ``line`` (a shell command line, the original's form) and
    ``argv`` (an argument list run without any shell) is set.
    """

    service: str
    name: str
    line: str | None = None
    argv: tuple[str, ...] | None = None
    timeout: float | None = None
    user: str | None = None
    group: str | None = None
    cwd: str | None = None
    env_allow: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.line is None) == (self.argv is None):
            raise ValueError("exactly one of line and argv must be given")

    @property
    def label(self) -> str:
        return f"{self.service}/{self.name}"


@dataclass(frozen=True)
class Service:
    name: str
    commands: Mapping[str, CommandSpec]


@dataclass(frozen=True)
class CollectdServiceSettings:
    """``Services.collectd``: how the config replacer finds and restarts collectd.

    ``None`` means "not given": the replacer discovers it from the running
    daemon or uses its default. Start/stop command lines are the service's
    ``commands.start`` / ``commands.stop``.
    """

    config_path: str | None = None
    command_path: str | None = None
    pid_path: str | None = None
    report_path: str | None = None
    service_manager: str | None = None
    unit: str | None = None
    settle_time: float | None = None
    connect_timeout: float | None = None
    stop_timeout: float | None = None
    start_timeout: float | None = None
    validate_timeout: float | None = None
    watch_time: float | None = None
    max_config_bytes: int | None = None

    @classmethod
    def read(cls, section: Section) -> CollectdServiceSettings:
        given = section.read({key: converter for key, (_, converter) in COLLECTD_KEYS.items()})
        return cls(**{COLLECTD_KEYS[key][0]: value for key, value in given.items()})

    def to_options(self) -> dict[str, Any]:
        """The given settings under their config.json keys (what :meth:`read` reads)."""
        names = {attribute: key for key, (attribute, _) in COLLECTD_KEYS.items()}
        return {
            names[item.name]: getattr(self, item.name)
            for item in fields(self)
            if getattr(self, item.name) is not None
        }


_seconds = number(minimum=0)

COLLECTD_KEYS: dict[str, tuple[str, Converter[Any]]] = {
    "ConfigPath": ("config_path", as_str),
    "CommandPath": ("command_path", as_str),
    "PIDPath": ("pid_path", as_str),
    "ReplacerReportPath": ("report_path", as_str),
    "ServiceManager": ("service_manager", choice(SERVICE_MANAGERS, {"direct": "pidfile"})),
    "Unit": ("unit", as_str),
    "SettleTime": ("settle_time", number(minimum=MIN_SETTLE_TIME)),
    "ConnectTimeout": ("connect_timeout", _seconds),
    "StopTimeout": ("stop_timeout", _seconds),
    "StartTimeout": ("start_timeout", _seconds),
    "ValidateTimeout": ("validate_timeout", _seconds),
    "WatchTime": ("watch_time", _seconds),
    "MaxConfigBytes": ("max_config_bytes", integer(minimum=1)),
}


def parse_services(
    value: Mapping[str, Any] | Section,
    *,
    source: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Service]:
    section = Section.of(value, source=source, path="Services")
    services: dict[str, Service] = {}
    for name, body in section.items():
        service = section.child(name, body)
        known = ["Commands", *(COLLECTD_KEYS if name == "collectd" else ())]
        service.warn_unknown(known, warn)
        commands: dict[str, CommandSpec] = {}
        listed = service.section_or_empty("Commands")
        for command, spec in listed.items():
            commands[command] = parse_command(name, command, spec, listed)
        services[name] = Service(name=name, commands=commands)
    return services


def collectd_settings(
    value: Mapping[str, Any] | Section | None, *, source: str | None = None
) -> CollectdServiceSettings:
    """The ``collectd`` entry of ``Services`` (defaults when there is none).

    Service names are names, matched exactly like :func:`parse_services` keys.
    """
    if value is None:
        return CollectdServiceSettings()
    services = Section.of(value, source=source, path="Services")
    body = dict(services.items()).get("collectd")
    if body is None:
        return CollectdServiceSettings()
    return CollectdServiceSettings.read(services.child("collectd", body))


_COMMAND_KEYS = ("Command", "Argv", "Timeout", "User", "Group", "Cwd", "Env", "EnvAllow")


def parse_command(service: str, name: str, spec: Any, commands: Section) -> CommandSpec:
    """A command is a shell line, an argument list, or an object with options.

    ``commands`` is the ``Commands`` section that lists it under ``name``.
    """
    if isinstance(spec, str):
        spec = {"command": spec}
    elif isinstance(spec, list):
        spec = {"argv": spec}
    if not isinstance(spec, Mapping):
        raise commands.error("expected a command line, an argument list or an object", name)
    section = commands.child(name, spec)
    for key in section.unknown(_COMMAND_KEYS):
        raise section.error(f"unknown command option {key!r}", key)
    line = section.raw("command")
    argv = section.raw("argv")
    if isinstance(line, list):
        line, argv = None, line
    if (line is None) == (argv is None):
        raise section.error("give exactly one of 'command' (a shell line) and 'argv' (a list)")
    if line is not None and (not isinstance(line, str) or not line.strip()):
        raise section.error("the command line must be a non-empty string")
    if argv is not None and (
        not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv)
    ):
        raise section.error("argv must be a non-empty list of strings")
    return CommandSpec(
        service=service,
        name=name,
        line=line,
        argv=tuple(argv) if argv is not None else None,
        timeout=section.get("Timeout", as_positive_float),
        user=section.get("User", _name_or_id),
        group=section.get("Group", _name_or_id),
        cwd=section.get("Cwd", _name_or_id),
        env_allow=section.get("EnvAllow", _variable_names),
        env=section.get("Env", _environment, {}),
    )


def _name_or_id(value: Any) -> str:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise TypeError("expected a string")


def _environment(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError("env must map names to strings")
    return dict(value)


def _variable_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("EnvAllow must be a list of variable names")
    return tuple(value)
