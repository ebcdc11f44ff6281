"""Start-up of the remote plugin's core from its raw options."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from collectd_monitor.commands.agent import RemoteAgent
from collectd_monitor.configwatch import ConfigWatch
from collectd_monitor.runtime import executors, load_for_plugin, reload_for_plugin

NAME = "collectd_monitor.remote"
log = logging.getLogger(NAME)

Extension = Callable[[RemoteAgent], object]
"""Adds a feature to an agent before it starts (the replacer's ``install``)."""


def start_remote(
    options: Mapping[str, Any],
    *,
    collectd: Any = None,
    offline: bool = False,
    config_replacer: Extension | None = None,
    hostname: str | None = None,
) -> RemoteAgent | None:
    """Load the config and start the agent; None when the plugin stays idle.

    ``config_replacer`` is installed unless config.json sets
    ``AllowConfigReplace`` to false. It is passed in by the plugin module, so
    that this package does not depend on :mod:`collectd_monitor.replacer`.
    """
    config = load_for_plugin(NAME, options, collectd=collectd, hostname=hostname)
    if config is None:
        return None
    if offline:
        log.info("offline mode (config validation run): config loaded, not connecting")
        return None
    lease = executors.acquire(config)
    agent = RemoteAgent(config, executor=lease.executor)
    agent.add_stop_hook(lease.release)
    if config_replacer is not None and config.allow_config_replace:
        config_replacer(agent)
    if config.source:
        agent.watch_config(
            ConfigWatch(
                config,
                load=lambda: reload_for_plugin(NAME, options, hostname=hostname),
                apply=agent.apply_config,
            )
        )
    agent.start()
    return agent
