"""Pure logic of the fleet parts: URLs, topic templates, filters, presence bodies."""

from __future__ import annotations

import json

import pytest

from collectd_monitor.cli.history import parse_since
from collectd_monitor.commands.agent import presence
from collectd_monitor.config import build_config
from collectd_monitor.fleet.history import glob_to_like, iso
from collectd_monitor.fleet.hook import request_record
from collectd_monitor.fleet.location import HistoryURLError, default_path, redact, resolve
from collectd_monitor.fleet.presence import parse_status
from collectd_monitor.fleet.topics import host_in, host_of, matches


@pytest.mark.parametrize(
    ("url", "kind", "target"),
    [
        ("sqlite:///var/h.db", "sqlite", "/var/h.db"),
        ("sqlite:////var/h.db", "sqlite", "/var/h.db"),
        ("sqlite:rel/h.db", "sqlite", "rel/h.db"),
        ("/var/h.db", "sqlite", "/var/h.db"),
        ("h.db", "sqlite", "h.db"),
        ("postgresql://u:p@db:5432/audit", "postgresql", "postgresql://u:p@db:5432/audit"),
        ("postgres://u@db/audit", "postgresql", "postgresql://u@db/audit"),
    ],
)
def test_history_urls(url, kind, target):
    location = resolve(url, environ={})
    assert (location.kind, location.target) == (kind, target)


def test_the_default_history_follows_xdg_then_the_environment_variable():
    assert resolve(None, {"XDG_STATE_HOME": "/s"}).target == ("/s/collectd-monitor/history.sqlite3")
    assert str(default_path({"HOME": "/h"})).endswith(
        ".local/state/collectd-monitor/history.sqlite3"
    )
    assert resolve(None, {"COLLECTD_MONITOR_HISTORY": "/e.db"}).target == "/e.db"
    assert resolve("/x.db", {"COLLECTD_MONITOR_HISTORY": "/e.db"}).target == "/x.db"


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "postgresql:nohost", "sqlite://"])
def test_bad_history_urls_are_usage_errors_without_the_password(url):
    with pytest.raises(HistoryURLError) as failed:
        resolve(url, {})
    assert ":p@" not in str(failed.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgresql://u:s3cret@h/db?password=s3cret", "postgresql://u@h/db"),
        ("postgresql://:s3cret@h/db", "postgresql://h/db"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("postgresql://h/db?password=s3cret", "postgresql://h/db"),
    ],
)
def test_urls_are_shown_without_their_password(url, shown):
    assert redact(url) == shown
    assert resolve(url, {}).shown == shown


def test_globs_become_like_patterns():
    assert glob_to_like("web-*") == "web-%"
    assert glob_to_like("db?_1%") == "db_\\_1\\%"


def test_since_takes_ages_and_iso_times():
    assert parse_since("90s", now=1000.0) == 910.0
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("1970-01-01T00:01:00Z") == 60.0
    assert parse_since("1970-01-01T00:01:00") == 60.0
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_since("yesterday")


def test_iso_times_are_utc_to_the_millisecond():
    assert iso(60.5) == "1970-01-01T00:01:00.500Z"
    assert iso(None) is None


@pytest.mark.parametrize(
    ("template", "topic", "host"),
    [
        ("collectd-monitor/+/result", "collectd-monitor/web1/result", "web1"),
        ("collectd-monitor/+/result", "collectd-monitor/web1/result/extra", None),
        ("collectd-monitor/+/result", "other/web1/result", None),
        ("a/+/b/+/c", "a/h1/b/x/c", "h1"),
        ("site/#", "site/web1/result", "web1"),
    ],
)
def test_topic_templates_name_the_host(template, topic, host):
    assert host_in(template, topic) == host
    assert matches(template, topic) == (host is not None)


def test_host_of_a_per_host_topic():
    assert host_of("collectd-monitor/web1/command") == "web1"
    assert host_of("flat") == "flat"


def test_a_config_request_is_recorded_by_its_hash_only():
    record = request_record({"task_id": 5, "config": "Hostname x\n"}, "web1", 1.0, "me@here")
    assert record.kind == "config" and record.service is None
    assert record.config_sha256 is not None and len(record.config_sha256) == 64
    assert "Hostname" not in repr(record)


def test_presence_tells_what_the_host_offers_but_no_command_line():
    config = build_config(
        {
            "StatusTopic": "collectd-monitor/web7/status",
            "ClientId": "cm-web7",
            "AllowConfigReplace": False,
            "Services": {"nginx": {"Commands": {"restart": "systemctl restart nginx"}}},
        },
        hostname="ignored",
    )
    online = json.loads(presence("online", config))
    assert online["host"] == "web7" and online["status"] == "online"
    assert online["services"] == {"nginx": ["restart"]} and online["config_push"] is False
    assert online["since"] == online["timestamp"] and online["version"]
    assert "systemctl" not in json.dumps(online)
    offline = json.loads(presence("offline", config, "connection lost"))
    assert offline["host"] == "web7" and offline["reason"] == "connection lost"
    assert "services" not in offline


def test_presence_host_falls_back_to_the_client_id():
    config = build_config({"StatusTopic": "status", "ClientId": "collectd-monitor-db3"})
    assert json.loads(presence("online", config))["host"] == "db3"


def test_status_messages_are_read_leniently():
    status = parse_status(
        "p/+/status", "p/web1/status", b'{"status": "offline", "timestamp": "2026-01-01T00:00:00Z"}'
    )
    assert status is not None and (status.host, status.since) == ("web1", "2026-01-01T00:00:00Z")
    assert parse_status("p/+/status", "p/web1/status", b"") is None
    assert parse_status("p/+/status", "p/web1/status", b'{"status": 1}') is None
    assert parse_status("p/+/status", "p/web1/status", b"[1]") is None
