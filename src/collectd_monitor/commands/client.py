"""A paho client built from :class:`~collectd_monitor.brokersettings.BrokerSettings`.

One construction for every MQTT user of the package: the plugin's link
(:mod:`.transport`), the CLI's sender and the fleet tools. Credentials, TLS
and ``TCP_NODELAY`` are set here; with MQTT 5 the session is asked to outlive
the connection as a 3.1.1 persistent session would.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collectd_monitor.brokersettings import BrokerSettings
from collectd_monitor.commands.brokerfaults import versions

SESSION_NEVER_EXPIRES = 0xFFFFFFFF


def new_client(
    settings: BrokerSettings, client_id: str, protocol: MQTTProtocolVersion
) -> mqtt.Client:
    """A paho client for ``settings``; clean session is given at connect time for MQTT 5."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if protocol == mqtt.MQTTv5 else settings.clean_session,
        protocol=protocol,
    )
    configure_client(client, settings)
    return client


def connect(client: mqtt.Client, settings: BrokerSettings, *, clean: bool | None = None) -> None:
    """Connect, asking an MQTT 5 broker to keep the session as 3.1.1 would."""
    clean = settings.clean_session if clean is None else clean
    if client.protocol == mqtt.MQTTv5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 0 if clean else SESSION_NEVER_EXPIRES
        client.connect(
            settings.host,
            settings.port,
            keepalive=settings.keepalive,
            clean_start=clean,
            properties=properties,
        )
    else:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive)


def first_protocol(settings: BrokerSettings) -> MQTTProtocolVersion:
    return versions.candidates(settings.address, settings.protocol)[0]


def set_nodelay(sock: Any) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def configure_client(client: mqtt.Client, settings: BrokerSettings) -> None:
    """Credentials, TLS and socket options shared by the plugin and the CLI."""
    if settings.user is not None:
        client.username_pw_set(settings.user, settings.password)
    if settings.secure:
        context = ssl.create_default_context(cafile=settings.ca_file)
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        client.tls_set_context(context)

    def on_socket_open(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        set_nodelay(sock)

    client.on_socket_open = on_socket_open
