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
from typing import Any

from collectd_monitor.brokersettings import (
    DEFAULT_PORT,
    DEFAULT_TLS_PORT,
    BrokerSettings,
    default_status_topic,
    default_topics,
    parse_host,
)
from collectd_monitor.codes import ResultCode
from collectd_monitor.errors import ConfigError, ProtocolError
from collectd_monitor.logsetup import quote
from collectd_monitor.schema import (
    Converter,
    Section,
    as_bool,
    as_int,
    as_object,
    as_positive_float,
    as_positive_int,
    as_str,
    choice,
    integer,
)
from collectd_monitor.security_config import SecuritySettings, parse_security
from collectd_monitor.services import (
    CollectdServiceSettings,
    CommandSpec,
    Service,
    collectd_settings,
    parse_services,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "BrokerSettings",
    "CommandSpec",
    "MonitorConfig",
    "Service",
    "build_config",
    "default_status_topic",
    "default_topics",
    "load_config",
    "lookup_command",
    "parse_host",
]

LOG_LEVELS = ("fatal", "error", "warn", "info", "debug")
LOG_DEVICES = ("collectd", "stdout", "syslog")

DEFAULT_STATE_DIR = "/var/lib/collectd-monitor"
DEFAULT_CONFIG_PATH = "/etc/collectd/monitor/config.json"
"""Where the CLI looks for config.json when it is not named."""
MQTT_VERSIONS = ("auto", "5", "3.1.1")
DEFAULT_MAX_RESULT_BYTES = 64 * 1024
DEFAULT_MAX_REFUSALS_PER_SECOND = 20.0


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
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    """Largest result payload ever published (refusals and command output are cut to fit)."""
    max_refusals_per_second: float = DEFAULT_MAX_REFUSALS_PER_SECOND
    max_concurrent_commands: int = 4
    max_queued_commands: int = 64
    duplicate_memory: int = 10_000
    state_dir: str | None = DEFAULT_STATE_DIR
    collectd: CollectdServiceSettings = field(default_factory=CollectdServiceSettings)
    """``Services.collectd``: the config replacer's paths and timings."""
    allow_config_replace: bool = False
    security: SecuritySettings = field(default_factory=SecuritySettings)
    rules: Section | None = field(default=None, repr=False)
    """The ``Rules`` object, read by the local monitoring's rule parser."""

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never reach a log."""
        return tuple(s for s in (self.broker.password, *self.security.secrets) if s)


# --------------------------------------------------------------------------- keys


def as_qos(value: Any) -> int:
    level = as_int(value)
    if level not in (0, 1, 2):
        raise ValueError(f"must be 0, 1 or 2, got {value!r}")
    return level


def as_topic(value: Any) -> str:
    topic = as_str(value)
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError("not a valid MQTT topic name")
    return topic


as_log_level = choice(
    LOG_LEVELS, {"warning": "warn", "err": "error", "critical": "fatal", "notice": "info"}
)
as_log_device = choice(LOG_DEVICES, {"console": "stdout"})
"""``console`` is the original's name for stdout."""
as_mqtt_version = choice(
    MQTT_VERSIONS, {"5.0": "5", "v5": "5", "311": "3.1.1", "3.1.1": "3.1.1", "4": "3.1.1"}
)

# Every top-level key and how it is read; anything else is warned about and ignored.
KEYS: dict[str, Converter[Any]] = {
    "MonitorConfigPath": as_str,
    "Host": as_str,
    "User": as_str,
    "Password": as_str,
    "Secure": as_bool,
    "CAFile": as_str,
    "CertFile": as_str,
    "KeyFile": as_str,
    "ClientId": as_str,
    "CleanSession": as_bool,
    "QoS": as_qos,
    "KeepAlive": as_positive_int,
    "ReconnectInterval": as_positive_float,
    "ReconnectMaxInterval": as_positive_float,
    "CommandTopic": as_topic,
    "CommandResultTopic": as_topic,
    "StatusTopic": as_topic,
    "MqttVersion": as_mqtt_version,
    "LogDevice": as_log_device,
    "LogLevel": as_log_level,
    "LocalMonitorConfigDir": as_str,
    "Services": as_object,
    "CommandTimeout": as_positive_float,
    "MaxOutputBytes": as_positive_int,
    "MaxResultBytes": integer(minimum=1024),
    "MaxRefusalsPerSecond": as_positive_float,
    "MaxConcurrentCommands": as_positive_int,
    "MaxQueuedCommands": as_positive_int,
    "DuplicateMemory": as_positive_int,
    "AllowConfigReplace": as_bool,
    "Rules": as_object,
    "Security": as_object,
    "StateDir": as_str,
}


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
    """Merge both sources into canonical keys, converting and checking each value.

    Each source is checked on its own so that an error names where the value
    came from; config.json wins key by key.
    """
    merged: dict[str, Any] = {}
    for origin, options in (("<Module> block", module_options), (source, file_options)):
        section = Section(options, source=origin)
        section.warn_unknown(KEYS, warn)
        merged.update(section.read(KEYS))
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
        path = Section(module_options, source="<Module> block").get("MonitorConfigPath", as_str)
    file_options = read_json_file(path) if path else {}
    options = merge_options(module_options, file_options, source=path, warn=warn)
    return build_config(options, source=path, hostname=hostname, warn=warn)


def build_config(
    options: Mapping[str, Any],
    *,
    source: str | None = None,
    hostname: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> MonitorConfig:
    """The typed config of merged ``options`` (canonical keys, as from :func:`merge_options`)."""
    top = Section(options, source=source)
    secure = top.get("Secure", as_bool, False)
    host, port = top.convert(
        "Host", top.get("Host", as_str, "localhost"), lambda text: parse_host(text, secure)
    )
    for key in ("CAFile", "CertFile", "KeyFile"):
        name = top.get(key, as_str)
        if name is not None and not os.path.isfile(name):
            raise top.error(f"file {name!r} does not exist", key)
    if ("CertFile" in top) != ("KeyFile" in top):
        raise top.error("CertFile and KeyFile must be given together", "KeyFile")
    name = hostname or socket.gethostname()
    reconnect = top.get("ReconnectInterval", as_positive_float, 5.0)
    broker = BrokerSettings(
        host=host,
        port=port,
        user=top.get("User", as_str),
        password=top.get("Password", as_str),
        secure=secure,
        ca_file=top.get("CAFile", as_str),
        cert_file=top.get("CertFile", as_str),
        key_file=top.get("KeyFile", as_str),
        clean_session=top.get("CleanSession", as_bool, False),
        qos=top.get("QoS", as_qos, 2),
        keepalive=top.get("KeepAlive", as_positive_int, 60),
        reconnect_interval=reconnect,
        reconnect_max_interval=max(
            top.get("ReconnectMaxInterval", as_positive_float, 60.0), reconnect
        ),
        client_id=top.get("ClientId", as_str) or f"collectd-monitor-{name}",
        protocol=top.get("MqttVersion", as_mqtt_version, "auto"),
    )
    command_topic, result_topic = default_topics(name)
    services = top.section("Services")
    return MonitorConfig(
        source=source,
        broker=broker,
        command_topic=top.get("CommandTopic", as_topic, command_topic),
        result_topic=top.get("CommandResultTopic", as_topic, result_topic),
        status_topic=top.get("StatusTopic", as_topic, default_status_topic(name)),
        log_device=top.get("LogDevice", as_log_device, "collectd"),
        log_level=top.get("LogLevel", as_log_level, "info"),
        local_monitor_config_dir=top.get("LocalMonitorConfigDir", as_str),
        services=parse_services(services, warn=warn) if services is not None else {},
        collectd=collectd_settings(services),
        command_timeout=top.get("CommandTimeout", as_positive_float, 60.0),
        max_output_bytes=top.get("MaxOutputBytes", as_positive_int, 64 * 1024),
        max_result_bytes=top.get("MaxResultBytes", integer(minimum=1024), DEFAULT_MAX_RESULT_BYTES),
        max_refusals_per_second=top.get(
            "MaxRefusalsPerSecond", as_positive_float, DEFAULT_MAX_REFUSALS_PER_SECOND
        ),
        max_concurrent_commands=top.get("MaxConcurrentCommands", as_positive_int, 4),
        max_queued_commands=top.get("MaxQueuedCommands", as_positive_int, 64),
        duplicate_memory=top.get("DuplicateMemory", as_positive_int, 10_000),
        state_dir=top.get("StateDir", as_str, DEFAULT_STATE_DIR) or None,
        allow_config_replace=top.get("AllowConfigReplace", as_bool, False),
        security=parse_security(top.section("Security"), source=source),
        rules=top.section("Rules"),
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
        raise ProtocolError(
            ResultCode.UNKNOWN_SERVICE, f"unknown service {quote(service)}", task_id
        )
    spec = entry.commands.get(command)
    if spec is None:
        raise ProtocolError(
            ResultCode.UNKNOWN_COMMAND,
            f"unknown command {quote(command)} for service {quote(service)}",
            task_id,
        )
    return spec
