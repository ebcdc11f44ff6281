"""Every subcommand meets bad arguments with one line on stderr and exit status 2.

No case here reaches a broker: each is refused while parsing or checking the
arguments (a traceback, exit 1 or a connection attempt would fail the test).
"""

from __future__ import annotations

import pytest

from collectd_monitor.cli import SUBCOMMANDS, build_parser, main

BAD_SECONDS = ("nan", "inf", "-inf", "-1", "0", "1e20", "abc", "")
MISSING = "/nonexistent/file"

CASES: list[tuple[str, ...]] = [
    *(("send-command", "svc", "cmd", "--timeout", value) for value in BAD_SECONDS),
    *(("send-config", MISSING, "--timeout", value) for value in BAD_SECONDS),
    *(("send-command", "svc", "cmd", "--expiry", value) for value in ("-5", "nan", "1e20")),
    *(("send-command", "svc", "cmd", "--qos", value) for value in ("3", "-1", "nan", "1e20")),
    ("send-command", "svc", "cmd", "-q", "5"),
    ("send-command", "svc", "cmd", "--ca-file", MISSING),
    ("send-command", "svc", "cmd", "--cert-file", MISSING),
    ("send-command", "svc", "cmd", "--key-file", MISSING),
    ("send-command", "svc", "cmd", "--ca-file", "/"),
    ("send-command", "svc", "cmd", "--config", MISSING),
    ("send-command", "svc", "cmd", "--sign-key", MISSING),
    ("send-command", "svc", "cmd", "--to", "a", "--to", "b", "--parallel", "0"),
    ("send-command", "svc", "cmd", "--to", "web-*", "--rate", "nan"),
    ("send-command", "svc", "cmd", "--to", "web-*", "--abort-after", "-1"),
    ("send-config", "/etc/hostname", "--to", "web-*", "--parallel", "1e20"),
    ("send-command", "svc", "cmd", "--to", "a", "--topic", "x"),
    ("send-command", "svc", "cmd", "--to", "a", "-r", "x"),
    ("send-command", "svc", "cmd", "--host", ""),
    ("send-command", "svc", "cmd", "-h", "broker:99999"),
    ("send-command", "svc", "cmd", "-h", "[::1"),
    ("send-command", "svc", "cmd", "--mqtt-version", "7"),
    ("send-command", "svc"),
    ("send-command", "svc", "cmd", "extra"),
    ("send-config", MISSING),
    ("send-config",),
    ("replace-config", "x.conf", "--settle-time", "0"),
    *(("replace-config", "x.conf", "--settle-time", value) for value in BAD_SECONDS),
    ("replace-config", "x.conf", "--connect-timeout", "-1"),
    ("replace-config", "x.conf", "--timeout", "inf"),
    ("replace-config", "x.conf", "--monitor-config", MISSING),
    ("replace-config",),
    ("collectd-conf", "--no-remote"),
    ("collectd-conf", "--bogus"),
    ("test-rules", MISSING, "--config", MISSING),
    ("test-rules",),
    ("keygen",),
    ("keygen", "/nonexistent/dir/key"),
    ("hosts", "--ca-file", MISSING),
    ("hosts", "--to", "a"),
    ("hosts", "--expiry", "-5"),
    ("history", "--limit", "-1"),
    ("history", "--limit", "nan"),
    ("history", "--limit", "1e20"),
    ("history", "--since", "yesterday-ish"),
    ("record", "--to", "a"),
    ("record", "--ca-file", MISSING),
    ("check-config", "--bogus"),
    ("check-config", "positional"),
    ("demo", "--bogus"),
    ("no-such-subcommand",),
]


def run(argv: tuple[str, ...]) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


@pytest.mark.parametrize("argv", CASES, ids=" ".join)
def test_bad_arguments_are_one_line_and_exit_2(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    status = run(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_every_subcommand_is_covered() -> None:
    assert {argv[0] for argv in CASES} >= set(SUBCOMMANDS)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_positional_has_help(name: str) -> None:
    parser = build_parser([name])
    sub = next(action for action in parser._actions if action.dest == "subcommand").choices[name]  # type: ignore[index]
    positionals = [a for a in sub._actions if not a.option_strings]
    assert all(a.help for a in positionals), [a.dest for a in positionals if not a.help]


@pytest.mark.parametrize("name", ["send-command", "send-config"])
def test_senders_take_the_original_options_and_document_exit_statuses(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser([name])
    sub = next(a for a in parser._actions if a.dest == "subcommand").choices[name]  # type: ignore[index]
    args = sub.parse_args(
        [
            *(["x", "y"] if name == "send-command" else ["x"]),
            *("-h", "b:1884", "-u", "u", "-p", "pw", "-s", "-q", "0", "-t", "t/c", "-r", "t/r"),
        ]
    )
    assert (args.host, args.user, args.password, args.secure, args.qos) == (
        "b:1884",
        "u",
        "pw",
        True,
        0,
    )
    assert (args.topic, args.result_topic) == ("t/c", "t/r")
    assert run((name, "--help")) == 0
    out = capsys.readouterr().out
    assert "Exit status: 0" in out and "3 no result" in out
