"""collectd plugin: recovery commands (and config pushes) received over MQTT.

Load it in collectd.conf (``collectd-monitor collectd-conf`` prints the block)::

    <LoadPlugin python>
      Globals true
    </LoadPlugin>
    <Plugin python>
      ModulePath "/path/to/site-packages"
      Import "collectd_monitor.remote"
      <Module "collectd_monitor.remote">
        MonitorConfigPath "/etc/collectd/monitor/config.json"
      </Module>
    </Plugin>

This file is the only place that touches ``collectd`` for the remote side: it
reads the ``<Module>`` block, wires init and shutdown to the core and plugs
the config replacer (:mod:`collectd_monitor.replacer`) into the agent.
"""

from __future__ import annotations

from typing import Any

import collectd

from collectd_monitor import logsetup
from collectd_monitor.commands.startup import start_remote
from collectd_monitor.hostname import collectd_hostname
from collectd_monitor.plugin_support import block_options, offline, restore_sigchld
from collectd_monitor.replacer.plugin import install as install_replacer

NAME = "collectd_monitor.remote"

_options: dict[str, Any] = {}
_configured = False
_agent: Any = None


def _config(conf: Any) -> None:
    global _configured
    _options.update(block_options(conf))
    _configured = True


def _init() -> None:
    global _agent
    restore_sigchld()
    logsetup.configure(collectd=collectd)
    if not _configured:
        collectd.error(f'{NAME}: no <Module "{NAME}"> block with MonitorConfigPath; plugin idle')
        return
    _agent = start_remote(
        _options,
        collectd=collectd,
        offline=offline(),
        config_replacer=install_replacer,
        hostname=collectd_hostname(),
    )


def _shutdown() -> None:
    if _agent is not None:
        _agent.stop()


collectd.register_config(_config)
collectd.register_init(_init)
collectd.register_shutdown(_shutdown)
