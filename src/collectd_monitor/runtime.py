"""Start-up of the plugins' cores from their raw options, shared by all plugins.

Kept apart from the collectd modules so that the same code path runs in
collectd, in the CLI and in tests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from collectd_monitor import logsetup
from collectd_monitor.agent import RemoteAgent
from collectd_monitor.config import MonitorConfig, load_config
from collectd_monitor.errors import ConfigError
from collectd_monitor.security import check_permissions

log = logging.getLogger("collectd_monitor.remote")


def load_for_plugin(
    name: str, options: Mapping[str, Any], *, collectd: Any = None
) -> MonitorConfig | None:
    """Load the config and set up logging; on error log one line and return None."""
    warnings: list[str] = []
    try:
        config = load_config(options, warn=warnings.append)
    except ConfigError as exc:
        logsetup.configure(collectd=collectd)
        logging.getLogger(name).error("%s; plugin stays idle", exc)
        return None
    logsetup.configure(config.log_device, config.log_level, config.secrets, collectd=collectd)
    logger = logging.getLogger(name)
    for line in warnings:
        logger.warning("%s", line)
    exposed = check_permissions(config.source, bool(config.secrets or config.security.ed25519_keys))
    if exposed and config.security.strict_permissions:
        logger.error("SECURITY: %s; refusing to start (Security.StrictPermissions)", exposed)
        return None
    if exposed:
        logger.warning("SECURITY WARNING: %s", exposed)
    return config


def start_remote(
    options: Mapping[str, Any], *, collectd: Any = None, offline: bool = False
) -> RemoteAgent | None:
    config = load_for_plugin("collectd_monitor.remote", options, collectd=collectd)
    if config is None:
        return None
    if offline:
        log.info("offline mode (config validation run): config loaded, not connecting")
        return None
    agent = RemoteAgent(config)
    if config.raw.get("AllowConfigReplace", True):
        from collectd_monitor.replacer.plugin import install

        install(agent)
    agent.start()
    return agent
