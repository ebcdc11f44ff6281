from __future__ import annotations

import json

import pytest

from collectd_monitor.config import load_config, parse_host
from collectd_monitor.errors import ConfigError


def write(tmp_path, data) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


@pytest.mark.parametrize(
    ("text", "secure", "expected"),
    [
        ("broker", False, ("broker", 1883)),
        ("broker", True, ("broker", 8883)),
        ("broker:1999", False, ("broker", 1999)),
        ("127.0.0.1:1", True, ("127.0.0.1", 1)),
        ("[::1]:1884", False, ("::1", 1884)),
        ("::1", False, ("::1", 1883)),
    ],
)
def test_parse_host(text, secure, expected):
    assert parse_host(text, secure) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:99999", "host:abc", "[::1"])
def test_parse_host_rejects(text):
    with pytest.raises(ValueError):
        parse_host(text, False)


def test_defaults(tmp_path):
    config = load_config({"MonitorConfigPath": write(tmp_path, {})}, hostname="web1")
    assert config.broker.host == "localhost" and config.broker.port == 1883
    assert config.broker.qos == 2 and config.broker.clean_session is False
    assert config.command_topic == "collectd-monitor/web1/command"
    assert config.result_topic == "collectd-monitor/web1/result"
    assert config.broker.client_id == "collectd-monitor-web1"
    assert config.services == {}


def test_json_wins_over_module_block_and_floats_are_ints(tmp_path):
    path = write(tmp_path, {"QoS": 1, "commandtopic": "a/b"})
    config = load_config({"MonitorConfigPath": path, "QoS": 0.0, "MaxOutputBytes": 100.0})
    assert config.broker.qos == 1
    assert config.command_topic == "a/b"
    assert config.max_output_bytes == 100


def test_commands_both_spellings_and_forms(tmp_path):
    path = write(
        tmp_path,
        {
            "Services": {
                "a": {"commands": {"x": "echo x"}},
                "b": {
                    "Commands": {"y": ["/bin/echo", "y"], "z": {"command": "sleep 1", "timeout": 2}}
                },
                "collectd": {
                    "ConfigPath": "/etc/collectd/collectd.conf",
                    "commands": {"start": "x"},
                },
            }
        },
    )
    config = load_config({"MonitorConfigPath": path})
    assert config.services["a"].commands["x"].line == "echo x"
    assert config.services["b"].commands["y"].argv == ("/bin/echo", "y")
    assert config.services["b"].commands["z"].timeout == 2.0
    assert config.collectd.config_path == "/etc/collectd/collectd.conf"
    assert config.services["collectd"].commands["start"].line == "x"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"QoS": 3}, "QoS"),
        ({"Secure": "maybe"}, "Secure"),
        ({"Host": "h:0"}, "Host"),
        ({"ReconnectInterval": -1}, "ReconnectInterval"),
        ({"LogLevel": "loud"}, "LogLevel"),
        ({"CommandTopic": "a/#"}, "CommandTopic"),
        ({"Services": []}, "Services"),
        ({"Services": {"s": {"commands": {"c": ""}}}}, "Services.s.commands.c"),
        (
            {"Services": {"s": {"commands": {"c": {"command": "x", "timeout": 0}}}}},
            "Services.s.commands.c.timeout",
        ),
        (
            {"Services": {"s": {"commands": {"c": {"command": "x", "bogus": 1}}}}},
            "Services.s.commands.c.bogus",
        ),
        ({"CAFile": "/nonexistent/ca.pem"}, "CAFile"),
    ],
)
def test_invalid_values_name_file_and_key(tmp_path, data, key):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config({"MonitorConfigPath": path})
    assert info.value.path == path
    assert info.value.key == key
    assert path in str(info.value) and key in str(info.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config({"MonitorConfigPath": str(tmp_path / "none.json")})
    with pytest.raises(ConfigError, match="line 1 column 2"):
        load_config({"MonitorConfigPath": write(tmp_path, "{x")})
    with pytest.raises(ConfigError, match="JSON object"):
        load_config({"MonitorConfigPath": write(tmp_path, "[]")})


def test_unknown_keys_warn(tmp_path):
    warnings: list[str] = []
    load_config({"MonitorConfigPath": write(tmp_path, {"Hots": "x"})}, warn=warnings.append)
    assert len(warnings) == 1 and "'Hots'" in warnings[0]


def test_password_is_not_in_repr(tmp_path):
    config = load_config({"MonitorConfigPath": write(tmp_path, {"Password": "hunter2"})})
    assert "hunter2" not in repr(config)
    assert config.secrets == ("hunter2",)
