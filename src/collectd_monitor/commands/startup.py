"""Start-up of the remote plugin's core from its raw options."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from collectd_monitor.commands.agent import RemoteAgent
from collectd_monitor.runtime import load_for_plugin, shared_executor

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
    agent = RemoteAgent(config, executor=shared_executor(config))
    if config.raw.get("AllowConfigReplace", False):
        from collectd_monitor.replacer.plugin import install

        install(agent)
    agent.start()
    return agent
