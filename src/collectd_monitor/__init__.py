"""collectd-monitor: automatic fault recovery for hosts monitored by collectd.

The package is split by role. Only the collectd plugin modules
(:mod:`collectd_monitor.remote`, :mod:`collectd_monitor.local`) import
``collectd``; everything else is plain Python that tests drive directly.
"""

from collectd_monitor.codes import ResultCode
from collectd_monitor.errors import ConfigError, MonitorError, ProtocolError

__all__ = ["ConfigError", "MonitorError", "ProtocolError", "ResultCode", "__version__"]

__version__ = "0.1.0"
