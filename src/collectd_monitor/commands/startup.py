"""Start-up of the remote plugin's core from its raw options."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from collectd_monitor.commands.agent import RemoteAgent
from collectd_monitor.runtime import executors, load_for_plugin

log = logging.getLogger("collectd_monitor.remote")


def start_remote(
    options: Mapping[str, Any], *, collectd: Any = None, offline: bool = False
) -> RemoteAgent | None:
    config = load_for_plugin("collectd_monitor.remote", options, collectd=collectd)
    if config is None:
        return None
    if offline:
        log.info("offline mode (config validation run): config loaded, not connecting")
        return None
    lease = executors.acquire(config)
    agent = RemoteAgent(config, executor=lease.executor)
    agent.add_stop_hook(lease.release)
    if config.allow_config_replace:
        from collectd_monitor.replacer.plugin import install

        install(agent)
    agent.start()
    return agent
