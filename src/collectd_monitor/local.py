"""collectd plugin: local monitoring, rules that detect faults and repair them.

Load it in collectd.conf (``collectd-monitor collectd-conf --local`` prints it)::

    <Plugin python>
      ModulePath "/path/to/site-packages"
      Import "collectd_monitor.local"
      <Module "collectd_monitor.local">
        MonitorConfigPath "/etc/collectd/monitor/config.json"
        LocalMonitorConfigDir "/etc/collectd/monitor/local/"
      </Module>
    </Plugin>

This is the only module of local monitoring that imports ``collectd``. It
registers the write callback only when some rule wants values in Python (a
Python write callback is the expensive part of a busy collectd; value rules
compiled to collectd's threshold plugin arrive as notifications), asks the index before
converting anything, and turns collectd's objects into frozen dataclasses for
the engine (:mod:`collectd_monitor.rules`).
"""

from __future__ import annotations

import logging
from typing import Any

import collectd

from collectd_monitor import logsetup
from collectd_monitor.plugin_support import Datasets, block_options, offline, restore_sigchld
from collectd_monitor.rules import notify
from collectd_monitor.rules.index import MetricIndex
from collectd_monitor.rules.loader import LocalMonitor, start_local
from collectd_monitor.rules.model import Metric, Notice, Outgoing

NAME = notify.PLUGIN_NAME
TICK = 0.5
"""Seconds between checks for missing data and closing breakers."""
log = logging.getLogger(NAME)

_options: dict[str, Any] = {}
_configured = False
_monitor: LocalMonitor | None = None
_index = MetricIndex(())
_handlers = False
_dataset = Datasets(collectd.get_dataset)


def _config(conf: Any) -> None:
    global _configured
    _options.update(block_options(conf))
    _configured = True


def _init() -> None:
    global _monitor, _index, _handlers
    restore_sigchld()
    logsetup.configure(collectd=collectd)
    if not _configured:
        collectd.error(f'{NAME}: no <Module "{NAME}"> block with MonitorConfigPath; plugin idle')
        return
    _monitor = start_local(_options, emit=_emit, collectd=collectd, offline=offline())
    if _monitor is None:
        return
    engine = _monitor.engine
    _index, _handlers = engine.index, engine.metric_handlers
    if engine.wants_values:
        collectd.register_write(_write, name=NAME)
        log.info(
            "watching values: %d rule(s) on %s",
            len(_index),
            "all plugins" if _index.plugins is None else f"{len(_index.plugins)} plugin(s)",
        )
    else:
        log.info("no rule needs values: write callback not registered")
    if engine.wants_notifications:
        collectd.register_notification(_notification, name=NAME)
    collectd.register_read(_tick, TICK, name=NAME)


def _write(vl: Any) -> None:
    try:
        rules = _index.rules_for(vl)
        if not rules and not _handlers:
            return
        dsnames, dstypes = _dataset(vl.type)
        metric = Metric(
            vl.host,
            vl.plugin,
            vl.plugin_instance,
            vl.type,
            vl.type_instance,
            vl.time,
            vl.interval,
            tuple(vl.values),
            dsnames,
            dstypes,
        )
        assert _monitor is not None
        _monitor.engine.on_metric(metric, rules)
    except Exception:  # an exception makes collectd back off from calling us
        log.exception("write callback failed")


def _notification(n: Any) -> None:
    if n.plugin == NAME or _monitor is None:
        return
    try:
        _monitor.engine.on_notification(*Notice.of(n))
    except Exception:
        log.exception("notification callback failed")


def _tick() -> None:
    try:
        if _monitor is not None:
            _monitor.engine.tick()
    except Exception:
        log.exception("periodic check failed")


def _emit(item: Outgoing) -> None:
    collectd.Notification(
        plugin=NAME,
        type=notify.NOTIFICATION_TYPE,
        type_instance=item.type_instance,
        severity=int(item.severity),
        message=item.message,
    ).dispatch()


def _shutdown() -> None:
    if _monitor is not None:
        _monitor.stop()


collectd.register_config(_config)
collectd.register_init(_init)
collectd.register_shutdown(_shutdown)
