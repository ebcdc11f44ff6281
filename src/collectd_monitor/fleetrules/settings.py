"""The central plugin's configuration: broker, topics, fleet-wide limits, signing, history.

config.json holds the broker settings under the same keys as the remote
plugin's (``Host``, ``User``, ``Password``, ``Secure``, ``CAFile``, ``QoS``,
...), ``Rules`` in the local monitoring schema, and these keys of its own::

    "CommandTopicTemplate": "collectd-monitor/{host}/command",
    "ResultTopicTemplate": "collectd-monitor/{host}/result",
    "StatusTopicTemplate": "collectd-monitor/{host}/status",
    "ResultTimeout": 60,
    "History": "sqlite:///var/lib/collectd-monitor/central.sqlite3",
    "MaxHosts": 10000, "ForgetAfter": 3600,
    "Fleet": {"MaxConcurrentHosts": 10, "MaxHostsPerWindow": 10, "Window": 600,
              "AbortFailureRatio": 0.5, "AbortMinRepairs": 3, "ResumeAfter": 1800},
    "Security": {"SigningKey": {"File": "keys/central.key"}, "KeyId": "central"}

The central keys are taken out before the rest goes through the shared
config reader (:func:`collectd_monitor.config.build_config`), so that reader
neither warns about them nor has to know them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectd_monitor.commands.security import Signer
from collectd_monitor.config import MonitorConfig, build_config, merge_options, read_json_file
from collectd_monitor.errors import ConfigError
from collectd_monitor.schema import Section, as_str, integer, number

HOST = "{host}"
DEFAULT_COMMAND_TEMPLATE = "collectd-monitor/{host}/command"
DEFAULT_RESULT_TEMPLATE = "collectd-monitor/{host}/result"
DEFAULT_STATUS_TEMPLATE = "collectd-monitor/{host}/status"

CENTRAL_KEYS = (
    "CommandTopicTemplate",
    "ResultTopicTemplate",
    "StatusTopicTemplate",
    "ResultTimeout",
    "History",
    "Fleet",
    "MaxHosts",
    "ForgetAfter",
)
SIGNING_KEYS = ("SigningKey", "KeyId")
FLEET_KEYS = (
    "MaxConcurrentHosts",
    "MaxHostsPerWindow",
    "Window",
    "AbortFailureRatio",
    "AbortMinRepairs",
    "ResumeAfter",
)


@dataclass(frozen=True)
class FleetSettings:
    """Fleet-wide safety: what keeps a fault of the whole fleet from restarting every host."""

    max_concurrent_hosts: int = 10
    """Repairs in flight at once, over every rule."""
    max_hosts_per_window: int = 10
    """Distinct hosts one rule may repair within ``window``."""
    window: float = 600.0
    abort_failure_ratio: float = 0.5
    """A rule stops acting when more than this share of its repairs in ``window`` failed..."""
    abort_min_repairs: int = 3
    """... and at least this many of them have ended."""
    resume_after: float = 1800.0
    """Seconds an aborted rule stays stopped."""


@dataclass(frozen=True)
class TopicTemplate:
    """A topic with ``{host}`` as one whole level."""

    text: str

    def __post_init__(self) -> None:
        levels = self.text.split("/")
        if levels.count(HOST) != 1 or self.text.count(HOST) != 1:
            raise ValueError(f"must hold {HOST} once, as a whole topic level: {self.text!r}")
        if any(c in self.text for c in "+#\0"):
            raise ValueError(f"not a valid MQTT topic template: {self.text!r}")

    def topic(self, host: str) -> str:
        return self.text.replace(HOST, host)

    @property
    def subscription(self) -> str:
        """The filter that matches every host's topic (``{host}`` as ``+``)."""
        return self.text.replace(HOST, "+")

    def host_in(self, topic: str) -> str | None:
        """The host of ``topic``, or None when it does not follow the template."""
        want, have = self.text.split("/"), topic.split("/")
        if len(want) != len(have):
            return None
        host = None
        for pattern, level in zip(want, have, strict=True):
            if pattern == HOST:
                host = level
            elif pattern != level:
                return None
        return host or None


@dataclass(frozen=True)
class CentralSettings:
    command_topic: TopicTemplate = TopicTemplate(DEFAULT_COMMAND_TEMPLATE)
    result_topic: TopicTemplate = TopicTemplate(DEFAULT_RESULT_TEMPLATE)
    status_topic: TopicTemplate = TopicTemplate(DEFAULT_STATUS_TEMPLATE)
    result_timeout: float = 60.0
    history: str | None = None
    fleet: FleetSettings = field(default_factory=FleetSettings)
    signer: Signer | None = field(default=None, repr=False)
    max_hosts: int = 10_000
    """Hosts whose rule state is kept at most; a new host beyond it is not judged (logged)."""
    forget_after: float = 3600.0
    """Seconds without a value or notification of a host after which its rule state
    is dropped (for a rule with ``Missing``, at least 3 times its missing-data timeout)."""


@dataclass(frozen=True)
class CentralConfig:
    monitor: MonitorConfig
    """Broker settings, logging, ``Rules`` (read as for the local plugin)."""
    central: CentralSettings


def _template(section: Section, key: str, default: str) -> TopicTemplate:
    return section.get(key, lambda value: TopicTemplate(as_str(value)), TopicTemplate(default))


def _split(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(shared keys, central keys, signing keys of ``Security``), matched without case."""
    central_names = {key.lower() for key in CENTRAL_KEYS}
    signing_names = {key.lower() for key in SIGNING_KEYS}
    shared: dict[str, Any] = {}
    central: dict[str, Any] = {}
    signing: dict[str, Any] = {}
    for key, value in options.items():
        if key.lower() in central_names:
            central[key] = value
        elif key.lower() == "security" and isinstance(value, Mapping):
            kept = {k: v for k, v in value.items() if k.lower() not in signing_names}
            signing.update({k: v for k, v in value.items() if k.lower() in signing_names})
            if kept:
                shared[key] = kept
        else:
            shared[key] = value
    return shared, central, signing


def _signer(signing: Section, source: str | None) -> Signer | None:
    raw = signing.raw("SigningKey")
    if raw is None:
        if "KeyId" in signing:
            raise signing.error("KeyId needs SigningKey", "KeyId")
        return None
    if not isinstance(raw, Mapping):
        raise signing.error('expected {"File": "path"} (a private key file)', "SigningKey")
    name = signing.child("SigningKey", raw).require("File", as_str)
    base = Path(source).parent if source else Path(".")
    path = base / name
    try:
        return Signer.from_file(str(path), signing.get("KeyId", as_str))
    except (OSError, ValueError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise signing.error(f"cannot use {path}: {text}", "SigningKey") from None


def parse_central(
    central: Mapping[str, Any], signing: Mapping[str, Any], *, source: str | None
) -> CentralSettings:
    top = Section(central, source=source)
    fleet = top.section_or_empty("Fleet")
    fleet.reject_unknown(FLEET_KEYS)
    base = FleetSettings()
    return CentralSettings(
        command_topic=_template(top, "CommandTopicTemplate", DEFAULT_COMMAND_TEMPLATE),
        result_topic=_template(top, "ResultTopicTemplate", DEFAULT_RESULT_TEMPLATE),
        status_topic=_template(top, "StatusTopicTemplate", DEFAULT_STATUS_TEMPLATE),
        result_timeout=top.get("ResultTimeout", number(above=0), 60.0),
        history=top.get("History", as_str),
        fleet=FleetSettings(
            max_concurrent_hosts=fleet.get(
                "MaxConcurrentHosts", integer(minimum=1), base.max_concurrent_hosts
            ),
            max_hosts_per_window=fleet.get(
                "MaxHostsPerWindow", integer(minimum=1), base.max_hosts_per_window
            ),
            window=fleet.get("Window", number(above=0), base.window),
            abort_failure_ratio=fleet.get(
                "AbortFailureRatio", number(minimum=0), base.abort_failure_ratio
            ),
            abort_min_repairs=fleet.get(
                "AbortMinRepairs", integer(minimum=1), base.abort_min_repairs
            ),
            resume_after=fleet.get("ResumeAfter", number(minimum=0), base.resume_after),
        ),
        signer=_signer(Section(signing, source=source, path="Security"), source),
        max_hosts=top.get("MaxHosts", integer(minimum=1), CentralSettings.max_hosts),
        forget_after=top.get("ForgetAfter", number(above=0), CentralSettings.forget_after),
    )


def load_central_config(
    module_options: Mapping[str, Any] | None = None,
    *,
    path: str | None = None,
    hostname: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> CentralConfig:
    """The central plugin's config from its ``<Module>`` block and config.json.

    Raises :class:`ConfigError` naming the file and key of the first problem.
    """
    module_options = dict(module_options or {})
    if path is None:
        path = Section(module_options, source="<Module> block").get("MonitorConfigPath", as_str)
    file_options = read_json_file(path) if path else {}
    module_shared, module_central, module_signing = _split(module_options)
    file_shared, file_central, file_signing = _split(file_options)
    name = hostname or socket.gethostname()
    if not any(key.lower() == "clientid" for key in (*module_shared, *file_shared)):
        # not the remote plugin's default: both may run in the same collectd
        module_shared["ClientId"] = f"collectd-monitor-central-{name}"
    shared = merge_options(module_shared, file_shared, source=path, warn=warn)
    monitor = build_config(shared, source=path, hostname=name, warn=warn)
    central = parse_central(
        {**module_central, **file_central}, {**module_signing, **file_signing}, source=path
    )
    return CentralConfig(monitor, central)


__all__ = [
    "CentralConfig",
    "CentralSettings",
    "ConfigError",
    "FleetSettings",
    "TopicTemplate",
    "load_central_config",
]
