"""collectd.conf replacement as a transaction with automatic rollback.

* :mod:`~collectd_monitor.replacer.paths`: where collectd's files are (config, discovery)
* :mod:`~collectd_monitor.replacer.lock`: one replacement at a time, crash-safe
* :mod:`~collectd_monitor.replacer.validate`: ``collectd -T`` with our plugins offline
* :mod:`~collectd_monitor.replacer.manager`: stop/start collectd (direct, commands, systemd)
* :mod:`~collectd_monitor.replacer.transaction`: the steps and the rollback
* :mod:`~collectd_monitor.replacer.helper`: the detached process that restarts collectd
* :mod:`~collectd_monitor.replacer.report`: report and plugin-status files
* :mod:`~collectd_monitor.replacer.plugin`: the remote plugin's side
"""

from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.paths import ReplacerPaths, Timing, discover
from collectd_monitor.replacer.transaction import Transaction

__all__ = ["ReplaceFailed", "ReplacerPaths", "Timing", "Transaction", "discover"]
