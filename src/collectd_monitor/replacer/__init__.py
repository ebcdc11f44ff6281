"""collectd.conf replacement as a transaction with automatic rollback.

* :mod:`~collectd_monitor.replacer.paths`: where collectd's files are (config, discovery)
* :mod:`~collectd_monitor.replacer.lock`: one replacement at a time, crash-safe
* :mod:`~collectd_monitor.replacer.validate`: ``collectd -T`` with our plugins offline
* :mod:`~collectd_monitor.replacer.environment`: the service-manager environment collectd gets
* :mod:`~collectd_monitor.replacer.manager`: stop/start collectd (pid file, commands, init
  script, collectdmon, systemd)
* :mod:`~collectd_monitor.replacer.health`: is the restarted collectd fit to keep
* :mod:`~collectd_monitor.replacer.steps`: stop and wait, start and wait, the old config back
* :mod:`~collectd_monitor.replacer.transaction`: the phases: prepare, apply, rollback, watch,
  recovery
* :mod:`~collectd_monitor.replacer.helper`: the detached process that restarts collectd
* :mod:`~collectd_monitor.replacer.guardian`: recovers when the helper's worker dies midway
* :mod:`~collectd_monitor.replacer.report`: the outcome (into an outbox), plugin status
* :mod:`~collectd_monitor.replacer.plugin`: the remote plugin's side
"""

from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.paths import ReplacerPaths, Timing, discover
from collectd_monitor.replacer.transaction import Transaction

__all__ = ["ReplaceFailed", "ReplacerPaths", "Timing", "Transaction", "discover"]
