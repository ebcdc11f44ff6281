"""Each subcommand imports only what it uses (start-up time of the CLI)."""

from __future__ import annotations

import json
import socket
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


RUN_PROBE = """
import json, sys
from collectd_monitor.cli import main
status = main(sys.argv[1:])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""

ONE_HOST_NEEDS_NONE_OF = (
    "collectd_monitor.cli.fanout",
    "collectd_monitor.cli.progress",
    "collectd_monitor.fleet.broadcast",
    "collectd_monitor.fleet.fanout",
    "collectd_monitor.fleet.presence",
    "collectd_monitor.fleet.journal",
    "collectd_monitor.commands.security",
    "cryptography",
    "psycopg",
)
"""What a plain send-command to one host never imports: fan-out, signing, PostgreSQL."""

NOT_ON_THE_SEND_PATH = (
    "logging.handlers",  # with pickle and queue: only for logging to syslog
    "pickle",
    "pathlib",  # only where a history file is opened
    "getpass",
)
"""Standard modules that paho does not import and that a send without history need not."""

NOT_WHILE_PARSING = (
    *ONE_HOST_NEEDS_NONE_OF,
    *NOT_ON_THE_SEND_PATH,
    "collectd_monitor.fleet.history",
    "collectd_monitor.fleet.store",
    "sqlite3",
    "collectd_monitor.config",  # the config.json schema: only with --config
    "collectd_monitor.schema",
    "collectd_monitor.services",
    "collectd_monitor.security_config",
)


def loaded_after_parsing(*argv: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def loaded_after_running(*argv: str) -> tuple[int, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", RUN_PROBE, *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    data = json.loads(out.splitlines()[-1])
    return data["status"], set(data["modules"])


def closed_port() -> int:
    """A loopback port nobody listens on: the send fails at once (exit 4)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def found(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if m in names or m.startswith(tuple(n + "." for n in names))}


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


@pytest.mark.parametrize(
    "extra", [(), ("--to", "web-1"), ("--host", "broker:1883", "--no-history")]
)
def test_parsing_send_command_for_one_host_loads_no_fanout_history_signing_or_schema(extra):
    modules = loaded_after_parsing("send-command", "svc", "cmd", *extra)
    assert found(modules, NOT_WHILE_PARSING) == set()


def test_sending_to_one_host_without_history_loads_no_fanout_history_or_signing():
    status, modules = loaded_after_running(
        "send-command", "svc", "cmd", "--quiet", "--no-history",
        "--host", f"127.0.0.1:{closed_port()}", "--to", "web-1", "--timeout", "5",
    )  # fmt: skip
    assert status == 4  # nobody listens: the send was tried, and failed, for real
    unwanted = (
        *ONE_HOST_NEEDS_NONE_OF,
        *NOT_ON_THE_SEND_PATH,
        "sqlite3",
        "collectd_monitor.config",
    )
    assert found(modules, unwanted) == set()


def test_the_history_is_loaded_when_recording_and_still_records(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    status, modules = loaded_after_running(
        "send-command", "svc", "cmd", "--quiet", "--history", url,
        "--host", f"127.0.0.1:{closed_port()}", "--to", "web-1", "--timeout", "5",
    )  # fmt: skip
    assert status == 4
    assert "sqlite3" in modules and "collectd_monitor.fleet.history" in modules
    assert found(modules, ONE_HOST_NEEDS_NONE_OF) == set()
    from collectd_monitor.fleet.history import open_history

    history = open_history(url)
    try:
        [entry] = history.entries()
    finally:
        history.close()
    assert (entry.host, entry.service, entry.command, entry.code) == ("web-1", "svc", "cmd", None)
    assert entry.message.startswith("not sent: ")


def test_signing_and_config_are_loaded_when_asked_for(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"Host": f"127.0.0.1:{closed_port()}"}))
    key = tmp_path / "ops.key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef")
    key.chmod(0o600)
    status, modules = loaded_after_running(
        "send-command", "svc", "cmd", "--quiet", "--no-history", "--config", str(config),
        "--sign-key", str(key), "--to", "web-1", "--timeout", "5",
    )  # fmt: skip
    assert status == 4
    assert {"collectd_monitor.config", "collectd_monitor.commands.security"} <= modules


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


def test_the_process_exits_with_the_status_of_main_and_flushes_its_output():
    done = subprocess.run(
        [sys.executable, "-m", "collectd_monitor", "send-command", "svc", "cmd", "--no-history",
         "--host", f"127.0.0.1:{closed_port()}", "--to", "web-1", "--timeout", "5"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 4
    assert done.stdout == ""
    assert done.stderr.startswith("collectd-monitor: sending svc/cmd as task ")
    assert done.stderr.splitlines()[-1].startswith("collectd-monitor: cannot connect to 127.0.0.1:")
