"""Remote recovery commands: the MQTT side of collectd-monitor.

Messages arrive on a host's command topic, are decoded (:mod:`.protocol`),
checked (:mod:`.security`, :mod:`.seen`), run through the shared executor and
answered through a durable outbox (:mod:`.outbox`) over one MQTT link
(:mod:`.transport`, with its failure side in :mod:`.connecting` and the paho
client built in :mod:`.client`). :mod:`.sender` is the other end, used by the CLI.
"""
