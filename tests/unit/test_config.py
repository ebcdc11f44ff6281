from __future__ import annotations

import json
import subprocess
import sys

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
        ({"Services": {"s": {"Commands": {"c": "x"}}, "t": 5}}, "Services.t"),
        ({"Services": {"collectd": {"SettleTime": 0.1}}}, "Services.collectd.SettleTime"),
        ({"Services": {"collectd": {"stoptimeout": "soon"}}}, "Services.collectd.stoptimeout"),
        (
            {"Services": {"collectd": {"ServiceManager": "upstart"}}},
            "Services.collectd.ServiceManager",
        ),
        ({"Security": {"Ed25519Keys": []}}, "Security.Ed25519Keys"),
        ({"Security": {"HmacKeys": "secret"}}, "Security.HmacKeys"),
        ({"Rules": []}, "Rules"),
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


def test_module_block_numbers_arrive_as_floats_and_are_typed(tmp_path):
    block = {"QoS": 1.0, "KeepAlive": 30.0, "MqttVersion": 5.0, "AllowConfigReplace": 0.0}
    config = load_config(block)
    assert (config.broker.qos, config.broker.keepalive, config.broker.protocol) == (1, 30, "5")
    assert config.allow_config_replace is False
    assert load_config({}).allow_config_replace is False  # pushes are off unless enabled
    assert load_config({"AllowConfigReplace": 1.0}).allow_config_replace is True


def test_a_bad_monitor_config_path_in_the_block_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        load_config({"monitorconfigpath": 5.0})
    assert (info.value.path, info.value.key) == ("<Module> block", "monitorconfigpath")


def test_block_values_are_checked_where_they_came_from(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config({"MonitorConfigPath": write(tmp_path, {}), "qos": 7.0})
    assert (info.value.path, info.value.key) == ("<Module> block", "qos")


def test_collectd_service_settings_are_typed_at_load(tmp_path):
    collectd = {
        "pidpath": "/run/c.pid",
        "SettleTime": "1.5",
        "ServiceManager": "Commands",
        "Commands": {"start": "service collectd start"},
    }
    config = load_config(
        {"MonitorConfigPath": write(tmp_path, {"Services": {"collectd": collectd}})}
    )
    assert config.collectd.pid_path == "/run/c.pid"
    assert config.collectd.settle_time == 1.5 and config.collectd.service_manager == "commands"
    assert config.collectd.to_options() == {
        "PIDPath": "/run/c.pid",
        "ServiceManager": "commands",
        "SettleTime": 1.5,
    }
    assert config.services["collectd"].commands["start"].line == "service collectd start"
    assert load_config({}).collectd.config_path is None


def test_unknown_service_keys_warn_with_their_dotted_path(tmp_path):
    data = {"Services": {"collectd": {"SetleTime": 3}, "nginx": {"Comands": {}}}}
    warnings: list[str] = []
    load_config({"MonitorConfigPath": write(tmp_path, data)}, warn=warnings.append)
    assert [w.split(": ", 1)[1] for w in warnings] == [
        "unknown key 'Services.collectd.SetleTime' ignored",
        "unknown key 'Services.nginx.Comands' ignored",
    ]


def test_rules_are_kept_as_a_typed_section_for_the_rule_parser(tmp_path):
    path = write(tmp_path, {"rules": {"Values": []}})
    config = load_config({"MonitorConfigPath": path})
    assert config.rules is not None
    assert (config.rules.path, config.rules.source) == ("Rules", path)
    assert config.rules.elements("Values") == []
    assert load_config({}).rules is None


def test_the_config_layer_imports_no_feature_package_and_no_cryptography():
    code = (
        "import sys, collectd_monitor.config\n"
        "bad = [m for m in sys.modules if m.split('.')[:2] in (\n"
        "    ['collectd_monitor', 'commands'], ['collectd_monitor', 'rules'],\n"
        "    ['collectd_monitor', 'replacer']) or m.split('.')[0] in ('cryptography', 'paho')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
