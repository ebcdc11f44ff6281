"""The package uses paho only through its public API.

Private attributes of paho's client and message objects change between
releases without notice; the acknowledgement logic once read
``MQTTMessageInfo._published`` and called ``Client._reset_sockets``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import collectd_monitor

SOURCE = Path(collectd_monitor.__file__).parent


def paho_private_names() -> set[str]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    objects = (client, mqtt.MQTTMessageInfo(1), mqtt.MQTTMessage())
    return {
        name
        for obj in objects
        for name in dir(obj)
        if name.startswith("_") and not name.startswith("__")
    }


def private_uses(tree: ast.AST, private: set[str]) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in private:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append((node.lineno, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in private
        ):
            found.append((node.lineno, str(node.args[1].value)))
    return found


def test_the_scan_finds_what_the_old_code_did() -> None:
    old = "published = getattr(info, '_published', None)\nclient._reset_sockets(True)\n"
    assert [name for _, name in private_uses(ast.parse(old), paho_private_names())] == [
        "_published",
        "_reset_sockets",
    ]


def test_no_module_touches_paho_internals() -> None:
    private = paho_private_names()
    offenders = [
        f"{path.relative_to(SOURCE)}:{line}: {name}"
        for path in sorted(SOURCE.rglob("*.py"))
        for line, name in private_uses(ast.parse(path.read_text()), private)
    ]
    assert offenders == []
