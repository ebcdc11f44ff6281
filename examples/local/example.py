"""Example rule file for collectd_monitor.local (put it in LocalMonitorConfigDir).

Each handler gets one metric or notification and returns None (nothing to do)
or {"service": ..., "command": ...} naming a command of config.json's
Services. The plugin gates every run: one at a time per command, a cooldown
after each run, and a circuit breaker (Rules.Defaults in config.json).

Check it before deploying:

    collectd-monitor test-rules --config /etc/collectd/monitor/config.json series.txt
"""

GIB = 1024**3


def memory_free_is_low(metric):
    """The memory plugin's free memory under 1 GiB: restart the leaking worker."""
    if metric.plugin == "memory" and metric.type_instance == "free" and metric.values[0] < GIB:
        return {"service": "worker", "command": "restart"}
    return None


def nginx_has_no_process(metric):
    """processes plugin with ProcessMatch/Process "nginx": no process left."""
    if (
        metric.plugin == "processes"
        and metric.plugin_instance == "nginx"
        and metric.type == "ps_count"
        and metric.values[0] < 1  # dsnames: ("processes", "threads")
    ):
        return {"service": "nginx", "command": "restart"}
    return None


metric_handlers = {
    "memory_free_is_low": memory_free_is_low,
    "nginx_has_no_process": nginx_has_no_process,
}


def disk_threshold(notification):
    """collectd's threshold plugin reports a full disk (severity 1 = FAILURE)."""
    if notification.plugin == "df" and notification.severity == 1:
        return {"service": "logs", "command": "rotate"}
    return None


notification_handlers = disk_threshold
