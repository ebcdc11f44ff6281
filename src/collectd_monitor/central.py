"""collectd plugin: central detection, rules over every host's values on a central collectd.

Load it in the collectd that receives the fleet's values (network plugin, or
collectd's mqtt plugin)::

    <Plugin python>
      ModulePath "/path/to/site-packages"
      Import "collectd_monitor.central"
      <Module "collectd_monitor.central">
        MonitorConfigPath "/etc/collectd/monitor/central.json"
      </Module>
    </Plugin>

Glue only. It registers the write callback only when some value rule is
judged in Python (rules compiled to collectd's threshold plugin, see
``collectd-monitor collectd-conf --central``, arrive as notifications); per
value it tests the plugin name, then looks the identity up with collectd's
raw fields and returns at once when no rule watches it: nothing is converted
or allocated for a value no rule judges (:mod:`collectd_monitor.fleetrules.watch`).
It dispatches the core's notifications (:mod:`collectd_monitor.fleetrules`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import collectd

from collectd_monitor.fleetrules.loader import CentralMonitor, start_central
from collectd_monitor.fleetrules.notes import NOTIFICATION_TYPE, PLUGIN_NAME, Note
from collectd_monitor.fleetrules.watch import Identity, Watch
from collectd_monitor.plugin_support import Datasets, block_options, offline, restore_sigchld
from collectd_monitor.rules.model import Notice

NAME = PLUGIN_NAME
TICK = 0.5
"""Seconds between checks for missing data, result timeouts and breakers."""
log = logging.getLogger(NAME)

_options: dict[str, Any] = {}
_configured = False
_monitor: CentralMonitor | None = None
_plugins: frozenset[str] | None = frozenset()
"""Plugins a Python value rule can match (None: any plugin)."""
_watches: dict[Identity, Watch] = {}
_on_values: Callable[[Watch, float, float, Sequence[float]], None] | None = None
_dataset = Datasets(collectd.get_dataset)


def _config(conf: Any) -> None:
    global _configured
    _options.update(block_options(conf))
    _configured = True


def _init() -> None:
    global _monitor, _plugins, _watches, _on_values
    restore_sigchld()
    if not _configured:
        collectd.error(f'{NAME}: no <Module "{NAME}"> block with MonitorConfigPath; plugin idle')
        return
    _monitor = start_central(_options, emit=_emit, collectd=collectd, offline=offline())
    if _monitor is None:
        return
    engine = _monitor.engine
    _plugins, _watches, _on_values = engine.index.plugins, engine.watches, engine.on_values
    if engine.wants_values:
        collectd.register_write(_write, name=NAME)
        log.info(
            "watching values in Python: %d rule(s) on %s",
            len(engine.index),
            "all plugins" if _plugins is None else f"{len(_plugins)} plugin(s)",
        )
    elif engine.plan.compiled:
        log.info("every value rule is judged by the threshold plugin: no write callback")
    else:
        log.info("no value rule: write callback not registered")
    if engine.wants_notifications:
        collectd.register_notification(_notification, name=NAME)
    collectd.register_read(_tick, TICK, name=NAME)


def _write(vl: Any) -> None:
    try:
        if _plugins is not None and vl.plugin not in _plugins:
            return  # no rule names this plugin: nothing built, nothing looked up
        key = (vl.host, vl.plugin, vl.plugin_instance, vl.type, vl.type_instance)
        found = _watches.get(key)
        if found is None:
            assert _monitor is not None
            found = _monitor.engine.watch(key, *_dataset(vl.type))
        if found.items and _on_values is not None:
            _on_values(found, vl.time, vl.interval, vl.values)
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


def _emit(item: Note) -> None:
    fields: dict[str, Any] = {
        "plugin": NAME,
        "type": NOTIFICATION_TYPE,
        "type_instance": item.type_instance,
        "severity": int(item.severity),
        "message": item.message,
    }
    if item.host:
        fields["host"] = item.host
    collectd.Notification(**fields).dispatch()


def _shutdown() -> None:
    if _monitor is not None:
        _monitor.stop()


collectd.register_config(_config)
collectd.register_init(_init)
collectd.register_shutdown(_shutdown)
