"""Telling broker faults apart: versions to try, refusals, a client id taken over,
and collectd's Hostname for the defaults."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from collectd_monitor.commands.agent import presence
from collectd_monitor.commands.brokerfaults import (
    FlapWatch,
    VersionMemory,
    refusal_reason,
    taken_over,
)
from collectd_monitor.config import build_config
from collectd_monitor.hostname import (
    DEFAULT_COLLECTD_CONF,
    collectd_config_path,
    collectd_hostname,
    parse_host_options,
)


def test_auto_tries_what_worked_first_then_the_other_version():
    memory = VersionMemory()
    assert memory.candidates("b:1883", "auto") == [mqtt.MQTTv5, mqtt.MQTTv311]
    memory.worked("b:1883", mqtt.MQTTv311)
    assert memory.candidates("b:1883", "auto") == [mqtt.MQTTv311, mqtt.MQTTv5]
    assert memory.candidates("other:1883", "auto") == [mqtt.MQTTv5, mqtt.MQTTv311]
    assert memory.candidates("b:1883", "5") == [mqtt.MQTTv5]
    assert memory.candidates("b:1883", "3.1.1") == [mqtt.MQTTv311]


def test_refusal_reasons_in_words():
    assert refusal_reason(ReasonCode(PacketTypes.SUBACK, identifier=0x87)) == "not authorized"
    assert refusal_reason(ReasonCode(PacketTypes.PUBACK, identifier=0x87)) == "not authorized"
    assert "not authorized" in (
        refusal_reason(ReasonCode(PacketTypes.SUBACK, identifier=0x80)) or ""
    )
    assert refusal_reason(ReasonCode(PacketTypes.SUBACK, identifier=1)) is None
    assert refusal_reason(ReasonCode(PacketTypes.PUBACK, identifier=0x10)) is None  # no subscribers
    assert taken_over(ReasonCode(PacketTypes.DISCONNECT, identifier=0x8E))
    assert not taken_over(ReasonCode(PacketTypes.DISCONNECT, identifier=0))


def test_a_taken_over_session_is_reported_once_per_series():
    watch = FlapWatch(short=30)
    assert watch.ended(5, taken=True)
    assert not watch.ended(5, taken=True)
    assert not watch.ended(4, taken=True)
    assert watch.flapping
    assert not watch.ended(300, taken=False)  # a stable connection ends the series
    assert not watch.flapping
    assert watch.ended(300, taken=True)  # a new series


def test_short_connections_in_a_row_without_a_reason_are_reported_once():
    watch = FlapWatch(short=30, repeats=3)
    assert [watch.ended(2, taken=False) for _ in range(6)] == [False, False, True] + [False] * 3
    assert not watch.ended(60, taken=False)
    assert [watch.ended(2, taken=False) for _ in range(3)] == [False, False, True]


def test_presence_names_what_the_broker_refused():
    config = build_config({"StatusTopic": "collectd-monitor/web7/status"})
    problem = "subscribe collectd-monitor/web7/command refused: not authorized"
    body = json.loads(presence("online", config, problems=(problem,)))
    assert body["problems"] == [problem]
    assert "problems" not in json.loads(presence("online", config))


def test_collectd_config_path_from_its_command_line():
    assert collectd_config_path(b"collectd\0-C\0/x/c.conf\0-f\0") == "/x/c.conf"
    assert collectd_config_path(b"collectd\0-C/y.conf\0") == "/y.conf"
    assert collectd_config_path(b"/usr/sbin/collectd\0") == DEFAULT_COLLECTD_CONF


def test_hostname_and_fqdnlookup_at_the_top_level_only():
    text = """
    # Hostname "commented"
    FQDNLookup false
    <Plugin network>
      Hostname "inside-a-block"
    </Plugin>
    Hostname "web-test-1"   # the one
    """
    assert parse_host_options(text) == ("web-test-1", False)
    assert parse_host_options("") == (None, True)
    assert parse_host_options("fqdnlookup true\n") == (None, True)


def test_collectd_hostname_falls_back_as_collectd_does(tmp_path: Path):
    conf = tmp_path / "collectd.conf"
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"collectd\0-C\0" + str(conf).encode() + b"\0-f\0")

    def name() -> str:
        return collectd_hostname(
            proc_cmdline=str(cmdline), gethostname=lambda: "os-name", getfqdn=lambda: "os.fq"
        )

    conf.write_text('Hostname "web-test-1"\n')
    assert name() == "web-test-1"
    conf.write_text("FQDNLookup false\n")
    assert name() == "os-name"
    conf.write_text("Interval 10\n")
    assert name() == "os.fq"  # collectd's FQDNLookup defaults to true
    conf.unlink()
    assert name() == "os-name"  # not inside collectd: the OS host name, as before


def test_defaults_follow_the_hostname_given_to_the_loader():
    config = build_config({}, hostname="web-test-1")
    assert config.command_topic == "collectd-monitor/web-test-1/command"
    assert config.status_topic == "collectd-monitor/web-test-1/status"
    assert config.broker.client_id == "collectd-monitor-web-test-1"
    assert json.loads(presence("online", config))["host"] == "web-test-1"
