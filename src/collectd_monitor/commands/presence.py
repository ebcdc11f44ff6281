"""The retained status message a host publishes on its StatusTopic.

``online`` when it connects (with what it offers), ``offline`` with a reason
when collectd stops, and the same ``offline`` as the last will the broker
publishes when the link dies.
"""

from __future__ import annotations

import json
from typing import Any

from collectd_monitor import __version__
from collectd_monitor.commands.protocol import format_timestamp
from collectd_monitor.config import MonitorConfig


def presence(
    status: str,
    config: MonitorConfig,
    reason: str = "",
    problems: tuple[str, ...] = (),
    *,
    replay_protection: str = "",
) -> bytes:
    """The retained status message; an online one also tells what this host offers.

    ``since`` is when this host came online (the connection this message
    announces); services carry command names only, never command lines.
    """
    now = format_timestamp()
    body: dict[str, Any] = {
        "status": status,
        "host": presence_host(config),
        "client_id": config.broker.client_id,
        "timestamp": now,
    }
    if reason:
        body["reason"] = reason
    if status == "online":
        body["since"] = now
        body["version"] = __version__
        body["services"] = {name: sorted(s.commands) for name, s in config.services.items()}
        body["config_push"] = config.allow_config_replace
        if replay_protection:
            body["replay_protection"] = replay_protection
    if problems:  # what the broker refused us, e.g. our subscription
        body["problems"] = list(problems)
    return json.dumps(body).encode()


def presence_host(config: MonitorConfig) -> str:
    """This host's name in the fleet: the topic level before ``status`` in StatusTopic.

    The default topics are built from collectd's ``Hostname`` (the remote
    plugin reads it from collectd's config file), ``collectd-monitor/HOST/status``,
    so that level is collectd's host name unless StatusTopic is set by hand.
    Otherwise the ClientId without its ``collectd-monitor-`` prefix.
    """
    levels = config.status_topic.split("/")
    if len(levels) >= 2 and levels[-2]:
        return levels[-2]
    client_id = config.broker.client_id
    return client_id.removeprefix("collectd-monitor-") or client_id
