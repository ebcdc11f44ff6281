"""Each subcommand imports only what it uses (start-up time of the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from collectd_monitor.cli import SUBCOMMANDS, main

PROBE = """
import json, sys
from collectd_monitor.cli import build_parser
build_parser(sys.argv[1:])
print(json.dumps(sorted(sys.modules)))
"""


def loaded_after_parsing(*argv: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_send_command_loads_neither_the_replacer_nor_the_rules_nor_the_harness():
    modules = loaded_after_parsing("send-command", "svc", "cmd")
    assert "collectd_monitor.cli.send" in modules
    unwanted = {
        m
        for m in modules
        if m.startswith(
            ("collectd_monitor.replacer", "collectd_monitor.rules", "collectd_monitor.testing")
        )
    }
    assert not unwanted
    assert "collectd_monitor.cli.testrules" not in modules


def test_top_level_help_imports_no_subcommand():
    modules = loaded_after_parsing()
    assert not {m for m in modules if m.startswith("collectd_monitor.cli.")} - {
        "collectd_monitor.cli.status",
        "collectd_monitor.cli.argtypes",
    }


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_is_listed_and_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    assert f"usage: collectd-monitor {name}" in capsys.readouterr().out


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name, (_, help_text) in SUBCOMMANDS.items():
        assert name in out and help_text[:30] in out
