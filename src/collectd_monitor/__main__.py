from collectd_monitor.cli import run

run()
