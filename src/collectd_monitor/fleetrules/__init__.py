"""Central detection: rules over the whole fleet's values, repairs sent to the right host.

The core of the ``collectd_monitor.central`` plugin, which runs in a central
collectd that receives every host's values (network plugin, or collectd's
mqtt plugin): ``settings`` (config.json), ``engine`` (per-host state and the
decisions), ``limits`` (fleet-wide safety), ``notes`` (the notifications),
``link`` (commands out and results in over MQTT, history records) and
``loader`` (start-up, shared by the plugin and ``test-rules --central``).
"""
