"""The config reader: case-insensitive keys, typed getters, dotted key paths, unknown keys."""

from __future__ import annotations

import pytest

from collectd_monitor.errors import ConfigError
from collectd_monitor.schema import (
    Section,
    as_bool,
    as_int,
    as_list,
    as_object,
    as_positive_float,
    as_positive_int,
    as_str,
    choice,
    integer,
    number,
)

SOURCE = "/etc/collectd/monitor/config.json"


def section(data: dict, path: str = "") -> Section:
    return Section(data, source=SOURCE, path=path)


def test_keys_are_case_insensitive_and_paths_use_the_files_spelling():
    top = section({"qos": 1, "Services": {"nginx": {"commands": {}}}})
    assert top.get("QoS", as_int) == 1 and "QOS" in top and "Host" not in top
    assert top.where("QoS") == "qos"
    assert top.where("Host") == "Host"  # absent: its documented name
    nginx = top.section_or_empty("services").child("nginx", {"commands": {"restart": 5}})
    assert nginx.where("Commands") == "Services.nginx.commands"


def test_absent_and_null_give_the_default():
    top = section({"User": None})
    assert top.get("User", as_str) is None
    assert top.get("User", as_str, "nobody") == "nobody"
    assert top.get("Host", as_str, "localhost") == "localhost"
    assert top.section("Security") is None
    assert list(top.section_or_empty("Security").items()) == []


def test_a_bad_value_is_a_config_error_naming_file_and_dotted_key():
    rules = section({"Values": [{}, {}, {"above": "high"}]}, "Rules")
    path, body = rules.elements("values")[2]
    assert path == "Rules.Values[2]"
    with pytest.raises(ConfigError) as info:
        Section.of(body, source=SOURCE, path=path).get("Above", number())
    assert info.value.path == SOURCE and info.value.key == "Rules.Values[2].above"
    assert str(info.value) == (
        f"{SOURCE}: key 'Rules.Values[2].above': expected a number, got 'high'"
    )


def test_nested_sections_carry_their_path():
    top = section({"Security": {"Ed25519Keys": {"ops": 7}}})
    keys = top.section_or_empty("Security").section_or_empty("Ed25519Keys")
    assert keys.error("bad", "ops").key == "Security.Ed25519Keys.ops"
    with pytest.raises(ConfigError, match="expected an object, got int") as info:
        keys.section("ops")
    assert info.value.key == "Security.Ed25519Keys.ops"


def test_require_names_a_missing_key():
    with pytest.raises(ConfigError, match="missing") as info:
        section({}, "Rules.Values[0]").require("Name", as_str)
    assert info.value.key == "Rules.Values[0].Name"


def test_read_converts_every_present_key_by_its_documented_name():
    fields = {"QoS": as_int, "Secure": as_bool, "Host": as_str}
    assert section({"qos": 2.0, "SECURE": "yes"}).read(fields) == {"QoS": 2, "Secure": True}


def test_unknown_keys_warn_or_fail_in_one_place():
    top = section({"Hots": "x", "Host": "h"})
    assert top.unknown(["Host"]) == ["Hots"]
    warnings: list[str] = []
    top.warn_unknown(["host"], warnings.append)
    assert warnings == [f"{SOURCE}: unknown key 'Hots' ignored"]
    nested = section({"Bogus": 1}, "Security")
    nested.warn_unknown([], warnings.append)
    assert warnings[-1] == f"{SOURCE}: unknown key 'Security.Bogus' ignored"
    with pytest.raises(ConfigError, match="unknown option") as info:
        nested.reject_unknown(["RequireSignature"], "unknown option")
    assert info.value.key == "Security.Bogus"


@pytest.mark.parametrize(
    ("converter", "value", "expected"),
    [
        (as_bool, True, True),
        (as_bool, "off", False),
        (as_bool, 1.0, True),  # collectd hands numbers over as floats
        (as_int, 3.0, 3),
        (as_int, " 7", 7),
        (as_positive_int, 1, 1),
        (as_positive_float, "0.5", 0.5),
        (number(minimum=0), 0, 0.0),
        (integer(minimum=1), 2.0, 2),
        (choice(("5", "3.1.1"), {"v5": "5"}), "V5", "5"),
        (choice(("5", "3.1.1")), 5.0, "5"),
        (as_object, {"a": 1}, {"a": 1}),
        (as_list, (1, 2), [1, 2]),
    ],
)
def test_converters_accept(converter, value, expected):
    assert converter(value) == expected


@pytest.mark.parametrize(
    ("converter", "value", "text"),
    [
        (as_str, 5, "expected a string, got int"),
        (as_bool, "maybe", "expected true or false"),
        (as_bool, 2, "expected true or false"),
        (as_int, 2.5, "expected a whole number"),
        (as_int, True, "expected a number"),
        (as_int, "x", "expected a number"),
        (as_positive_int, 0, "must be at least 1"),
        (as_positive_float, 0, "must be greater than 0"),
        (number(), float("nan"), "finite"),
        (number(minimum=0.5), 0.1, "must be at least 0.5"),
        (choice(("a", "b")), "c", "must be one of a, b"),
        (choice(("a", "b")), None, "expected one of a, b"),
        (as_object, [], "expected an object, got list"),
        (as_list, "x", "expected a list, got str"),
    ],
)
def test_converters_refuse(converter, value, text):
    with pytest.raises((TypeError, ValueError), match=text):
        converter(value)


def test_elements_of_a_non_list_is_an_error_at_its_key():
    with pytest.raises(ConfigError, match="expected a list") as info:
        section({"values": {}}, "Rules").elements("Values")
    assert info.value.key == "Rules.values"
    assert section({}, "Rules").elements("Values") == []
