"""Run-as drops root completely: group, supplementary groups and login variables."""

from __future__ import annotations

import os
import pwd

import pytest

from collectd_monitor.config import CommandSpec
from collectd_monitor.executor import run_command

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")

REPORT = 'echo "$(id -u) $(id -g) $(id -G)"; echo "$HOME|$USER|$LOGNAME|$SHELL"'


def run_as(**kwargs: object) -> list[str]:
    spec = CommandSpec(service="s", name="c", line=REPORT, **kwargs)  # type: ignore[arg-type]
    outcome = run_command(spec, timeout=10, max_output=4096)
    assert outcome.code == 0, outcome.errors
    return outcome.message.splitlines()


def test_user_without_group_takes_the_users_primary_group_and_groups():
    entry = pwd.getpwnam("nobody")
    ids, login = run_as(user="nobody")
    uid, gid, *groups = ids.split()
    assert (int(uid), int(gid)) == (entry.pw_uid, entry.pw_gid)
    assert 0 not in {int(g) for g in groups}, "root's group must not survive"
    assert sorted(int(g) for g in groups) == sorted(set(os.getgrouplist("nobody", entry.pw_gid)))
    assert login == f"{entry.pw_dir}|nobody|nobody|{entry.pw_shell}"


def test_explicit_group_and_environment_win():
    ids, login = run_as(user="nobody", group="nogroup", env={"HOME": "/tmp"})
    assert ids.split()[1] == str(_gid("nogroup"))
    assert login.startswith("/tmp|nobody|")


def test_without_user_the_environment_is_inherited():
    _, login = run_as()
    assert login.split("|")[0] == os.environ.get("HOME", "")


def _gid(name: str) -> int:
    import grp

    return grp.getgrnam(name).gr_gid
