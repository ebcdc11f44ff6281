"""Start-up of central detection from the plugin's options, shared by the plugin and tests.

A config that cannot be loaded keeps the plugin idle (one log line naming the
file and key); a bad rule is logged and left out, the others run. The
``ThresholdRules`` key of the ``<Module>`` block names the threshold block that
``collectd-monitor collectd-conf --central`` printed for these rules: when it
matches, those rules are left to collectd's threshold plugin (each rule's line
in the log says where it is judged); when it is absent or stale, every value
rule is judged in Python.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from collectd_monitor import logsetup
from collectd_monitor.errors import ConfigError
from collectd_monitor.fleetrules.engine import CentralEngine
from collectd_monitor.fleetrules.link import CentralLink
from collectd_monitor.fleetrules.notes import PLUGIN_NAME, Note
from collectd_monitor.fleetrules.settings import CentralConfig, load_central_config
from collectd_monitor.rules.declarative import RuleSet, parse_rules
from collectd_monitor.rules.loader import THRESHOLD_KEY, collectd_datasets, threshold_plan
from collectd_monitor.security_config import check_permissions

log = logging.getLogger(PLUGIN_NAME)


def central_rules(config: CentralConfig) -> tuple[RuleSet, list[str]]:
    """The declarative rules of ``config`` and one line per problem.

    Actions are not checked against local services: they name commands of the
    hosts, which the engine checks against each host's presence instead.
    """
    monitor = config.monitor
    rules = parse_rules(monitor.rules, None, source=monitor.source)
    return rules, [f"{error}; rule left out" for error in rules.errors]


def load_for_central(options: Mapping[str, Any], *, collectd: Any = None) -> CentralConfig | None:
    warnings: list[str] = []
    try:
        config = load_central_config(options, warn=warnings.append)
    except ConfigError as exc:
        logsetup.configure(collectd=collectd)
        log.error("%s; plugin stays idle", exc)
        return None
    monitor = config.monitor
    logsetup.configure(monitor.log_device, monitor.log_level, monitor.secrets, collectd=collectd)
    for line in warnings:
        log.warning("%s", line)
    exposed = check_permissions(
        monitor.source, bool(monitor.secrets or config.central.signer is not None)
    )
    if exposed and monitor.security.strict_permissions:
        log.error("SECURITY: %s; refusing to start (Security.StrictPermissions)", exposed)
        return None
    if exposed:
        log.warning("SECURITY WARNING: %s", exposed)
    return config


@dataclass
class CentralMonitor:
    engine: CentralEngine
    link: CentralLink

    def stop(self) -> None:
        self.link.stop()


def start_central(
    options: Mapping[str, Any],
    *,
    emit: Callable[[Note], None],
    collectd: Any = None,
    offline: bool = False,
) -> CentralMonitor | None:
    ours = {k: v for k, v in options.items() if k.lower() == THRESHOLD_KEY.lower()}
    config = load_for_central(
        {k: v for k, v in options.items() if k not in ours}, collectd=collectd
    )
    if config is None:
        return None
    rules, errors = central_rules(config)
    for line in errors:
        log.error("%s", line)
    settings = config.central
    log.info(
        "%d value rule(s), %d notification rule(s); commands to %s, signed: %s, history: %s",
        len(rules.values),
        len(rules.notifications),
        settings.command_topic.text,
        "yes" if settings.signer is not None else "no",
        "yes" if settings.history else "no",
    )
    for rule in rules.values:
        if rule.selector.host is not None and rule.selector.host.wild:
            log.info("%s: host pattern %r judged in Python", rule.name, rule.selector.host.text)
    if offline:
        log.info("offline mode (config validation run): rules loaded, not monitoring")
        return None
    if config.monitor.local_monitor_config_dir and os.path.isdir(
        config.monitor.local_monitor_config_dir
    ):
        log.warning("rule files (LocalMonitorConfigDir) are not run by the central plugin")
    expected = next((str(v) for v in ours.values()), None)
    plan = threshold_plan(rules, collectd_datasets(collectd), expected, central=True, logger=log)
    link = CentralLink(config.monitor, settings)
    engine = CentralEngine(
        rules,
        settings,
        send=link.send,
        emit=emit,
        record=link.record if settings.history else None,
        source=config.monitor.source,
        plan=plan,
    )
    link.attach(engine)
    link.start()
    if not engine.wants_values and not engine.wants_notifications:
        log.warning("no rules: nothing to watch (key Rules)")
    return CentralMonitor(engine, link)
