"""Monitor configuration: the plugin's ``<Module>`` block merged with config.json.

The file named by ``MonitorConfigPath`` wins over the ``<Module>`` block, key by
key. Keys are matched case-insensitively (collectd's own keys are, and the
original's example file spells ``Commands`` as ``commands``). Every problem is
raised as a :class:`ConfigError` naming the file and the key, so the plugin can
log one clear line and stay idle instead of half-working.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.security import SecuritySettings, parse_security
from collectd_monitor.errors import ConfigError, ProtocolError

LOG_LEVELS = ("fatal", "error", "warn", "info", "debug")
LOG_DEVICES = ("collectd", "stdout", "syslog")

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
DEFAULT_STATE_DIR = "/var/lib/collectd-monitor"
DEFAULT_CONFIG_PATH = "/etc/collectd/monitor/config.json"
"""Where the CLI looks for config.json when it is not named."""
MQTT_VERSIONS = ("auto", "5", "3.1.1")


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
    options: Mapping[str, Any] = field(default_factory=dict)
    """Every other key of the service (for ``collectd``: ConfigPath, PIDPath...)."""


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "localhost"
    port: int = DEFAULT_PORT
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    secure: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    clean_session: bool = False
    qos: int = 2
    keepalive: int = 60
    reconnect_interval: float = 5.0
    reconnect_max_interval: float = 60.0
    client_id: str = ""
    protocol: str = "auto"
    """MQTT version: "5", "3.1.1", or "auto" (5, falling back to 3.1.1)."""

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class MonitorConfig:
    source: str | None
    broker: BrokerSettings
    command_topic: str
    result_topic: str
    status_topic: str = ""
    log_device: str = "collectd"
    log_level: str = "info"
    local_monitor_config_dir: str | None = None
    services: Mapping[str, Service] = field(default_factory=dict)
    command_timeout: float = 60.0
    max_output_bytes: int = 64 * 1024
    max_concurrent_commands: int = 4
    max_queued_commands: int = 64
    duplicate_memory: int = 10_000
    state_dir: str | None = DEFAULT_STATE_DIR
    security: SecuritySettings = field(default_factory=SecuritySettings)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """The merged keys as given (canonical spelling), for parts with keys of their own."""

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never reach a log."""
        return tuple(s for s in (self.broker.password, *self.security.secrets) if s)


# --------------------------------------------------------------------------- converters


def _as_str(value: Any, key: str) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
        return False
    raise TypeError(f"expected true or false, got {value!r}")


def _as_int(value: Any, key: str) -> int:
    # collectd hands every number of a <Module> block over as a float.
    if isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise TypeError(f"expected an integer, got {value!r}")


def _as_positive_float(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"expected a number, got {value!r}") from None
    if not number > 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    return number


def _as_positive_int(value: Any, key: str) -> int:
    number = _as_int(value, key)
    if number < 1:
        raise ValueError(f"must be at least 1, got {value!r}")
    return number


def _as_qos(value: Any, key: str) -> int:
    number = _as_int(value, key)
    if number not in (0, 1, 2):
        raise ValueError(f"must be 0, 1 or 2, got {value!r}")
    return number


def _as_log_level(value: Any, key: str) -> str:
    level = _as_str(value, key).strip().lower()
    level = {"warning": "warn", "err": "error", "critical": "fatal", "notice": "info"}.get(
        level, level
    )
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _as_log_device(value: Any, key: str) -> str:
    device = _as_str(value, key).strip().lower()
    if device not in LOG_DEVICES:
        raise ValueError(f"must be one of {', '.join(LOG_DEVICES)}, got {value!r}")
    return device


def _as_mqtt_version(value: Any, key: str) -> str:
    text = str(value).strip().lower()
    text = {"5.0": "5", "v5": "5", "311": "3.1.1", "3.1.1": "3.1.1", "4": "3.1.1"}.get(text, text)
    if text not in MQTT_VERSIONS:
        raise ValueError(f"must be one of {', '.join(MQTT_VERSIONS)}, got {value!r}")
    return text


def _as_object(value: Any, key: str) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    raise TypeError(f"expected an object, got {type(value).__name__}")


def _as_any(value: Any, key: str) -> Any:
    return value


Converter = Callable[[Any, str], Any]

# Canonical key -> converter. Keys of other parts (local rules, security) are
# listed so that they are not reported as unknown; those parts parse them.
KEYS: dict[str, Converter] = {
    "MonitorConfigPath": _as_str,
    "Host": _as_str,
    "User": _as_str,
    "Password": _as_str,
    "Secure": _as_bool,
    "CAFile": _as_str,
    "CertFile": _as_str,
    "KeyFile": _as_str,
    "ClientId": _as_str,
    "CleanSession": _as_bool,
    "QoS": _as_qos,
    "KeepAlive": _as_positive_int,
    "ReconnectInterval": _as_positive_float,
    "ReconnectMaxInterval": _as_positive_float,
    "CommandTopic": _as_str,
    "CommandResultTopic": _as_str,
    "StatusTopic": _as_str,
    "MqttVersion": _as_mqtt_version,
    "LogDevice": _as_log_device,
    "LogLevel": _as_log_level,
    "LocalMonitorConfigDir": _as_str,
    "Services": _as_object,
    "CommandTimeout": _as_positive_float,
    "MaxOutputBytes": _as_positive_int,
    "MaxConcurrentCommands": _as_positive_int,
    "MaxQueuedCommands": _as_positive_int,
    "DuplicateMemory": _as_positive_int,
    "AllowConfigReplace": _as_bool,
    # Parsed by the parts that own them.
    "Rules": _as_any,
    "Security": _as_any,
    "StateDir": _as_str,
}
_CANONICAL = {key.lower(): key for key in KEYS}


def canonical_key(key: str) -> str | None:
    return _CANONICAL.get(key.lower())


def default_topics(hostname: str | None = None) -> tuple[str, str]:
    host = hostname or socket.gethostname()
    return f"collectd-monitor/{host}/command", f"collectd-monitor/{host}/result"


def default_status_topic(hostname: str | None = None) -> str:
    return f"collectd-monitor/{hostname or socket.gethostname()}/status"


def parse_host(value: str, secure: bool) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6addr]:port`` or a bare IPv6 address."""
    default = DEFAULT_TLS_PORT if secure else DEFAULT_PORT
    text = value.strip()
    if not text:
        raise ValueError("is empty")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"unbalanced '[' in {value!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' in {value!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a name, an IPv4 address or a bare IPv6 address
        host, port_text = text, None
    if not host:
        raise ValueError(f"no host name in {value!r}")
    if port_text is None:
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {value!r}")
    return host, int(port_text)


# --------------------------------------------------------------------------- loading


def read_json_file(path: str) -> Mapping[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise ConfigError("file not found", path=path) from None
    except PermissionError:
        raise ConfigError("permission denied", path=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 ({exc.reason})", path=path) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path=path
        ) from None
    except OSError as exc:
        raise ConfigError(exc.strerror or str(exc), path=path) from None
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a JSON object", path=path)
    return data


def merge_options(
    module_options: Mapping[str, Any],
    file_options: Mapping[str, Any],
    *,
    source: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Merge both sources into canonical keys, converting and checking each value."""
    merged: dict[str, Any] = {}
    for origin, options in (("<Module> block", module_options), (source, file_options)):
        for key, value in options.items():
            canonical = canonical_key(key)
            if canonical is None:
                if warn is not None:
                    warn(f"{origin or 'config'}: unknown key {key!r} ignored")
                continue
            try:
                merged[canonical] = KEYS[canonical](value, canonical)
            except (TypeError, ValueError) as exc:
                raise ConfigError(str(exc), path=origin, key=key) from None
    return merged


def load_config(
    module_options: Mapping[str, Any] | None = None,
    *,
    path: str | None = None,
    hostname: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> MonitorConfig:
    """Build a :class:`MonitorConfig` from a ``<Module>`` block and config.json.

    ``path`` overrides ``MonitorConfigPath`` from the block. Without either,
    only the block's options are used.
    """
    module_options = dict(module_options or {})
    if path is None:
        for key, value in module_options.items():
            if key.lower() == "monitorconfigpath":
                path = _as_str(value, key)
    file_options = read_json_file(path) if path else {}
    options = merge_options(module_options, file_options, source=path, warn=warn)
    return build_config(options, source=path, hostname=hostname)


def build_config(
    options: Mapping[str, Any], *, source: str | None = None, hostname: str | None = None
) -> MonitorConfig:
    secure = bool(options.get("Secure", False))
    try:
        host, port = parse_host(options.get("Host", "localhost"), secure)
    except ValueError as exc:
        raise ConfigError(str(exc), path=source, key="Host") from None
    command_topic, result_topic = default_topics(hostname)
    for key in ("CAFile", "CertFile", "KeyFile"):
        if key in options and not os.path.isfile(options[key]):
            raise ConfigError(f"file {options[key]!r} does not exist", path=source, key=key)
    if ("CertFile" in options) != ("KeyFile" in options):
        raise ConfigError("CertFile and KeyFile must be given together", path=source, key="KeyFile")
    client_id = options.get("ClientId") or f"collectd-monitor-{hostname or socket.gethostname()}"
    broker = BrokerSettings(
        host=host,
        port=port,
        user=options.get("User"),
        password=options.get("Password"),
        secure=secure,
        ca_file=options.get("CAFile"),
        cert_file=options.get("CertFile"),
        key_file=options.get("KeyFile"),
        clean_session=options.get("CleanSession", False),
        qos=options.get("QoS", 2),
        keepalive=options.get("KeepAlive", 60),
        reconnect_interval=options.get("ReconnectInterval", 5.0),
        reconnect_max_interval=max(
            options.get("ReconnectMaxInterval", 60.0), options.get("ReconnectInterval", 5.0)
        ),
        client_id=client_id,
        protocol=options.get("MqttVersion", "auto"),
    )
    services = parse_services(options.get("Services", {}), source=source)
    for key in ("CommandTopic", "CommandResultTopic", "StatusTopic"):
        if key in options and not _valid_topic(options[key]):
            raise ConfigError("not a valid MQTT topic name", path=source, key=key)
    return MonitorConfig(
        source=source,
        broker=broker,
        command_topic=options.get("CommandTopic", command_topic),
        result_topic=options.get("CommandResultTopic", result_topic),
        status_topic=options.get("StatusTopic", default_status_topic(hostname)),
        log_device=options.get("LogDevice", "collectd"),
        log_level=options.get("LogLevel", "info"),
        local_monitor_config_dir=options.get("LocalMonitorConfigDir"),
        services=services,
        command_timeout=options.get("CommandTimeout", 60.0),
        max_output_bytes=options.get("MaxOutputBytes", 64 * 1024),
        max_concurrent_commands=options.get("MaxConcurrentCommands", 4),
        max_queued_commands=options.get("MaxQueuedCommands", 64),
        duplicate_memory=options.get("DuplicateMemory", 10_000),
        state_dir=options.get("StateDir", DEFAULT_STATE_DIR) or None,
        security=parse_security(options.get("Security"), source=source),
        raw=MappingProxyType(dict(options)),
    )


def _valid_topic(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic and "\0" not in topic


def parse_services(value: Mapping[str, Any], *, source: str | None = None) -> dict[str, Service]:
    services: dict[str, Service] = {}
    for name, body in value.items():
        where = f"Services.{name}"
        if not isinstance(body, Mapping):
            raise ConfigError("expected an object", path=source, key=where)
        commands: dict[str, CommandSpec] = {}
        options: dict[str, Any] = {}
        for key, item in body.items():
            if key.lower() != "commands":
                options[key] = item
                continue
            if not isinstance(item, Mapping):
                raise ConfigError("expected an object", path=source, key=f"{where}.{key}")
            for command, spec in item.items():
                commands[command] = parse_command(
                    name, command, spec, source=source, where=f"{where}.{key}.{command}"
                )
        services[name] = Service(name=name, commands=commands, options=options)
    return services


def parse_command(
    service: str, name: str, spec: Any, *, source: str | None, where: str
) -> CommandSpec:
    """A command is a shell line, an argument list, or an object with options."""

    def fail(message: str, key: str = where) -> ConfigError:
        return ConfigError(message, path=source, key=key)

    if isinstance(spec, str):
        spec = {"command": spec}
    elif isinstance(spec, list):
        spec = {"argv": spec}
    if not isinstance(spec, Mapping):
        raise fail("expected a command line, an argument list or an object")
    known = {"command", "argv", "timeout", "user", "group", "cwd", "env", "envallow"}
    fields = {key.lower(): item for key, item in spec.items()}
    for key in spec:
        if key.lower() not in known:
            raise fail(f"unknown command option {key!r}", f"{where}.{key}")
    line = fields.get("command")
    argv = fields.get("argv")
    if isinstance(line, list):
        line, argv = None, line
    if (line is None) == (argv is None):
        raise fail("give exactly one of 'command' (a shell line) and 'argv' (a list)")
    if line is not None and (not isinstance(line, str) or not line.strip()):
        raise fail("the command line must be a non-empty string")
    if argv is not None and (
        not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv)
    ):
        raise fail("argv must be a non-empty list of strings")
    timeout = fields.get("timeout")
    if timeout is not None:
        try:
            timeout = _as_positive_float(timeout, "timeout")
        except (TypeError, ValueError) as exc:
            raise fail(str(exc), f"{where}.timeout") from None
    for key in ("user", "group", "cwd"):
        if fields.get(key) is not None and not isinstance(fields[key], str | int):
            raise fail("expected a string", f"{where}.{key}")
    env = fields.get("env") or {}
    if not isinstance(env, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise fail("env must map names to strings", f"{where}.env")
    env_allow = fields.get("envallow")
    if env_allow is not None and (
        not isinstance(env_allow, list) or not all(isinstance(v, str) for v in env_allow)
    ):
        raise fail("EnvAllow must be a list of variable names", f"{where}.EnvAllow")
    return CommandSpec(
        service=service,
        name=name,
        line=line,
        argv=tuple(argv) if argv is not None else None,
        timeout=timeout,
        user=str(fields["user"]) if fields.get("user") is not None else None,
        group=str(fields["group"]) if fields.get("group") is not None else None,
        cwd=fields.get("cwd"),
        env_allow=tuple(env_allow) if env_allow is not None else None,
        env=dict(env),
    )


def lookup_command(
    config: MonitorConfig, service: str, command: str, task_id: int | str
) -> CommandSpec:
    """The command a host allows for ``service``/``command``, or a ProtocolError."""
    if not config.services:
        raise ProtocolError(
            ResultCode.NO_SERVICES, "no services are configured on this host", task_id
        )
    entry = config.services.get(service)
    if entry is None:
        raise ProtocolError(ResultCode.UNKNOWN_SERVICE, f"unknown service {service!r}", task_id)
    spec = entry.commands.get(command)
    if spec is None:
        raise ProtocolError(
            ResultCode.UNKNOWN_COMMAND,
            f"unknown command {command!r} for service {service!r}",
            task_id,
        )
    return spec
