"""Start-up of the plugins' cores from their raw options, shared by all plugins.

Kept apart from the collectd modules so that the same code path runs in
collectd, in the CLI and in tests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from collectd_monitor import logsetup
from collectd_monitor.config import MonitorConfig, load_config
from collectd_monitor.errors import ConfigError
from collectd_monitor.executor import CommandExecutor
from collectd_monitor.fsutil import check_permissions

_executor: CommandExecutor | None = None
_executor_lock = threading.Lock()


def shared_executor(config: MonitorConfig) -> CommandExecutor:
    """The one executor of this collectd process, shared by the remote and local plugins.

    Both plugins live in one interpreter; one pool means one concurrency limit
    for the host's recovery commands. The first plugin to start sizes it.
    """
    global _executor
    with _executor_lock:
        if _executor is None or _executor.closed:
            _executor = CommandExecutor(
                max_concurrent=config.max_concurrent_commands,
                max_queued=config.max_queued_commands,
                default_timeout=config.command_timeout,
                max_output=config.max_output_bytes,
            )
        return _executor


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
