"""A plain shell line runs without /bin/sh, with the shell's own results."""

from __future__ import annotations

import os

import pytest

from collectd_monitor.cmdline import direct_argv
from collectd_monitor.config import CommandSpec
from collectd_monitor.process import _argv, run_command

PATH = os.environ.get("PATH", "/usr/bin:/bin")


@pytest.mark.parametrize(
    ("line", "argv"),
    [
        ("true", None),  # a builtin
        ("/bin/echo hello world", ["/bin/echo", "hello", "world"]),
        ("ls -l '/tmp/a b'", ["ls", "-l", "/tmp/a b"]),
        ('printenv "HOME"', ["printenv", "HOME"]),
        ("  uname   -a  ", ["uname", "-a"]),
    ],
)
def test_plain_lines_run_directly(line, argv):
    assert direct_argv(line, PATH) == argv


@pytest.mark.parametrize(
    "line",
    [
        "",
        "echo hi",  # a builtin: dash's echo differs from /bin/echo
        "exit 3",
        "cd /tmp",
        "ls | cat",
        "ls && ls",
        "sleep 1; ls",
        "ls > /tmp/x",
        "ls $HOME",
        "ls `pwd`",
        'ls "$(pwd)"',
        "ls *.txt",
        "ls ~",
        "FOO=1 env",
        "ls # comment",
        "ls 'unbalanced",
        "ls a\\ b",
        "ls\nrm -rf /tmp/x",
        "no-such-program-anywhere --x",
        "./local-script",
        "if true; then :; fi",
        "(ls)",
        "{ ls; }",
    ],
)
def test_lines_that_need_the_shell_keep_it(line):
    assert direct_argv(line, PATH) is None


@pytest.mark.parametrize(
    "line",
    [
        "/bin/echo a 'b  c' \"d\"",
        "/usr/bin/printf '%s|' one two",
        "ls -d /",
        "/bin/false",
        "sh -c 'exit 7'",
        "no-such-program-anywhere",
        "cat /nonexistent/file",
    ],
)
def test_direct_and_shell_runs_give_identical_results(line):
    spec = CommandSpec(service="s", name="c", line=line)
    forced = CommandSpec(service="s", name="c", argv=("/bin/sh", "-c", line))
    direct = run_command(spec, timeout=10, max_output=4096)
    shell = run_command(forced, timeout=10, max_output=4096)
    assert (direct.code, direct.output) == (shell.code, shell.output)
    assert bool(direct.errors) == bool(shell.errors)


def test_the_executor_uses_the_direct_form_and_keeps_the_shell_otherwise():
    plain = CommandSpec(service="s", name="c", line="ls -d /")
    piped = CommandSpec(service="s", name="c", line="ls -d / | cat")
    as_user = CommandSpec(service="s", name="c", line="ls -d /", user="nobody")
    assert _argv(plain, None) == ["ls", "-d", "/"]
    assert _argv(piped, None)[:2] == ["/bin/sh", "-c"]
    assert _argv(as_user, None)[:2] == ["/bin/sh", "-c"]
