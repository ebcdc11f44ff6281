"""Start-up of the plugins' cores from their raw options, shared by all plugins.

Kept apart from the collectd modules so that the same code path runs in
collectd, in the CLI and in tests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from collectd_monitor import logsetup
from collectd_monitor.config import MonitorConfig, load_config
from collectd_monitor.errors import ConfigError
from collectd_monitor.executor import CommandExecutor
from collectd_monitor.permissions import check_all, collectd_conf_path, own_cmdline

EXECUTOR_STOP_TIMEOUT = 0.4
"""Seconds the last plugin to stop waits for aborted commands to report."""


class SharedExecutor:
    """The one executor of a collectd process, shared by the remote and local plugins.

    Both plugins live in one interpreter; one pool means one concurrency limit
    for the host's recovery commands. Each plugin acquires it when it starts
    and releases its lease when it stops; the pool is shut down once, when the
    last lease is released, so a plugin that stops first cannot abort the
    other's commands. The first plugin to start sizes it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: CommandExecutor | None = None
        self._holders = 0

    def acquire(self, config: MonitorConfig) -> ExecutorLease:
        with self._lock:
            if self._executor is None:
                self._executor = CommandExecutor(
                    max_concurrent=config.max_concurrent_commands,
                    max_queued=config.max_queued_commands,
                    default_timeout=config.command_timeout,
                    max_output=config.max_output_bytes,
                )
            self._holders += 1
            executor = self._executor
        return ExecutorLease(executor, give_back=lambda timeout: self._release(executor, timeout))

    @property
    def holders(self) -> int:
        with self._lock:
            return self._holders

    def _release(self, executor: CommandExecutor, timeout: float) -> None:
        with self._lock:
            self._holders -= 1
            last = self._holders == 0
            if last:
                self._executor = None
        if last:  # outside the lock: aborted commands report through other plugins' code
            executor.shutdown(timeout=timeout)


class ExecutorLease:
    """One plugin's hold on the shared executor; :meth:`release` it exactly once."""

    def __init__(self, executor: CommandExecutor, *, give_back: Callable[[float], None]) -> None:
        self.executor = executor
        self._give_back = give_back
        self._released = False
        self._lock = threading.Lock()

    def release(self, timeout: float = EXECUTOR_STOP_TIMEOUT) -> None:
        """Give the executor back; the last holder shuts it down (waiting up to ``timeout``)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._give_back(timeout)


executors = SharedExecutor()
"""The shared executor of this process."""


def load_for_plugin(
    name: str, options: Mapping[str, Any], *, collectd: Any = None, hostname: str | None = None
) -> MonitorConfig | None:
    """Load the config and set up logging; on error log one line and return None.

    ``hostname`` is collectd's ``Hostname``, the default in topics and ClientId.
    """
    warnings: list[str] = []
    try:
        config = load_config(options, hostname=hostname, warn=warnings.append)
    except ConfigError as exc:
        logsetup.configure(collectd=collectd)
        logging.getLogger(name).error("%s; plugin stays idle", exc)
        return None
    logsetup.configure(config.log_device, config.log_level, config.secrets, collectd=collectd)
    logger = logging.getLogger(name)
    for line in warnings:
        logger.warning("%s", line)
    strict = config.security.strict_permissions
    # collectd.conf is ours to check only inside collectd (its -C names it)
    conf = collectd_conf_path(own_cmdline()) if collectd is not None else None
    findings = check_all(config, module_options=options, collectd_conf=conf)
    for finding in findings:
        if strict:
            logger.error("SECURITY: %s; refusing to start (Security.StrictPermissions)", finding)
        else:
            logger.warning("SECURITY WARNING: %s", finding)
    return None if findings and strict else config


def reload_for_plugin(
    name: str, options: Mapping[str, Any], *, hostname: str | None = None
) -> MonitorConfig:
    """Load the config again as :func:`load_for_plugin` did; raise ConfigError instead of
    going idle, so that a running plugin keeps its config when the new one is unusable."""
    warnings: list[str] = []
    config = load_config(options, hostname=hostname, warn=warnings.append)
    logger = logging.getLogger(name)
    for line in warnings:
        logger.warning("%s", line)
    findings = check_all(config, module_options=options)
    if findings and config.security.strict_permissions:
        raise ConfigError(
            f"SECURITY: {findings[0]} (Security.StrictPermissions)", path=config.source
        )
    for finding in findings:
        logger.warning("SECURITY WARNING: %s", finding)
    logsetup.update(config.log_level, config.secrets)
    return config
