"""Every failed connection says why, once: TLS handshake failures against real mosquitto.

Before, plaintext to a TLS port and mutual TLS without a client certificate
produced no log line at all: the broker dropped the socket before its CONNACK,
paho's loop returned an error code and called none of our handlers with a
reason. Each case must give exactly one WARNING with the reason however many
attempts fail, in-process, in collectd's log, and from ``send-command``.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from collectd_monitor.commands.transport import MqttLink
from collectd_monitor.config import BrokerSettings
from collectd_monitor.testing.sandbox import Broker, Certs, wait_for

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "collectd_monitor"]
TRANSPORT = "collectd_monitor.commands.transport"


def cases(broker: Broker, certs: Certs) -> dict[str, tuple[dict[str, Any], str]]:
    """name -> (BrokerSettings fields, what the one warning must say)."""
    return {
        "plaintext to a TLS port": ({"port": broker.tls_port}, "does this port expect TLS"),
        "mutual TLS without a client certificate": (
            {"port": broker.mtls_port, "secure": True, "ca_file": str(certs.ca)},
            "require a client certificate",
        ),
        "unknown CA": (
            {"port": broker.tls_port, "secure": True, "ca_file": str(certs.other_ca)},
            "certificate verify failed",
        ),
        "wrong host name": (
            {"host": "127.1", "port": broker.tls_port, "secure": True, "ca_file": str(certs.ca)},
            "Hostname mismatch",
        ),
    }


CASE_NAMES = [
    "plaintext to a TLS port",
    "mutual TLS without a client certificate",
    "unknown CA",
    "wrong host name",
]


@pytest.fixture
def links() -> Iterator[list[MqttLink]]:
    made: list[MqttLink] = []
    yield made
    for link in made:
        link.stop(2)


# paho does not close its SSL socket when the handshake fails (the certificate
# cases); CPython frees it as soon as the exception is gone, with a ResourceWarning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("case", CASE_NAMES)
def test_each_tls_failure_is_one_warning_with_its_reason(broker, certs, links, caplog, case):
    fields, expected = cases(broker, certs)[case]
    settings = BrokerSettings(
        **{
            "host": "127.0.0.1",
            "client_id": f"tls-{uuid.uuid4().hex[:8]}",
            "reconnect_interval": 0.05,
            "reconnect_max_interval": 0.1,
            **fields,
        }
    )
    caplog.set_level(logging.DEBUG, logger=TRANSPORT)
    link = MqttLink(settings)
    links.append(link)
    link.start()

    def attempts() -> int:
        return sum(
            1 for r in caplog.records if r.name == TRANSPORT and "cannot connect" in r.getMessage()
        )

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == TRANSPORT]

    wait_for(lambda: attempts() >= 4, 20, what=f"four failed attempts ({messages()})")
    link.stop(2)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == TRANSPORT and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert expected in warnings[0]
    assert settings.address in warnings[0]
    assert not link.connected


def test_a_recovered_link_says_after_how_many_failures(tmp_path, certs, links, caplog):
    broker = Broker(tmp_path / "late", certs=certs)  # not started yet
    settings = BrokerSettings(
        host="127.0.0.1",
        port=broker.port,
        client_id=f"late-{uuid.uuid4().hex[:8]}",
        reconnect_interval=0.05,
        reconnect_max_interval=0.1,
    )
    caplog.set_level(logging.DEBUG, logger=TRANSPORT)
    link = MqttLink(settings)
    links.append(link)
    link.start()
    wait_for(
        lambda: sum("cannot connect" in r.getMessage() for r in caplog.records) >= 3,
        20,
        what="failures",
    )
    broker.start()
    try:
        wait_for(lambda: link.connected, 20, what="the link to connect")
        text = caplog.text
        assert re.search(r"connected again to \S+ after \d+ failed attempts", text)
        refused = [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and "refused" in r.getMessage()
        ]
        assert len(refused) <= 1  # the first refusal, none for the repeats
    finally:
        link.stop(2)
        broker.stop()


# --------------------------------------------------------------------------- collectd


@pytest.mark.parametrize("case", CASE_NAMES[:2])
def test_collectd_logs_one_warning_for_a_silent_tls_failure(
    monitor, fresh_broker, certs, case
) -> None:
    fields, expected = cases(fresh_broker, certs)[case]
    config: dict[str, Any] = {"Host": f"127.0.0.1:{fields['port']}"}
    if fields.get("secure"):
        config.update({"Secure": True, "CAFile": fields["ca_file"]})
    m = monitor(config, broker=fresh_broker, wait_connected=False)
    port = fields["port"]

    def broker_saw() -> int:
        """Attempts the broker logged: mosquitto names the port for some of them and
        only says "Client connection from ... failed" for others (a readiness probe's
        plain close reads "unexpected eof" and is not one of ours)."""
        log = fresh_broker.log_path.read_text(errors="replace")
        named = re.findall(rf"New connection from \S+ on port {port}\.", log)
        unnamed = re.findall(r"Client connection from \S+ failed: (?!.*unexpected eof)", log)
        return len(named) + len(unnamed)

    wait_for(lambda: broker_saw() >= 4, 60, what="four connection attempts at the broker")
    m.collectd.wait_log(re.escape(expected))
    lines = [line for line in m.log().splitlines() if "cannot connect to" in line]
    assert len(lines) == 1, lines
    assert "warning" in lines[0].lower()
    assert "connected to" not in m.log()


# --------------------------------------------------------------------------- send-command


@pytest.mark.parametrize("case", CASE_NAMES)
def test_send_command_exits_4_with_a_one_line_reason(broker, certs, case) -> None:
    fields, expected = cases(broker, certs)[case]
    args = ["--host", f"{fields.get('host', '127.0.0.1')}:{fields['port']}"]
    if fields.get("secure"):
        args += ["--ca-file", fields["ca_file"]]
    topic = f"tls/{uuid.uuid4().hex}"
    done = subprocess.run(
        [*CLI, "send-command", "hello", "exec", "--quiet", "--topic", topic, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert "Traceback" not in done.stderr
