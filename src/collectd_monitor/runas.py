"""Who a command runs as, and with which environment.

``user`` drops root completely: that user's uid, its primary group (or the
command's ``group``), exactly the supplementary groups the system gives it (as
``initgroups`` would, never root's), and ``HOME``/``USER``/``LOGNAME``/``SHELL``
from its passwd entry unless the command's ``env`` sets them.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from collectd_monitor.config import CommandSpec
from collectd_monitor.plugin_support import SAFE_PATH

SHELL = "/bin/sh"


def child_env(spec: CommandSpec, account: pwd.struct_passwd | None) -> dict[str, str] | None:
    if spec.env_allow is None and not spec.env and account is None:
        return None  # inherit collectd's environment, as the original does
    base = (
        os.environ
        if spec.env_allow is None
        else {name: os.environ[name] for name in spec.env_allow if name in os.environ}
    )
    env = dict(base)
    env.setdefault("PATH", SAFE_PATH)
    if account is not None:  # a login's variables, never root's
        env.update(
            HOME=account.pw_dir,
            USER=account.pw_name,
            LOGNAME=account.pw_name,
            SHELL=account.pw_shell or SHELL,
        )
    env.update(spec.env)
    return env


@dataclass(frozen=True)
class Identity:
    """Who a command runs as: uid, primary gid and supplementary groups."""

    account: pwd.struct_passwd | None
    group: str | int | None
    extra_groups: list[int] | None


def identity_of(spec: CommandSpec) -> Identity:
    """Drop root completely for ``user``: its primary group and its groups (initgroups).

    Raises ``KeyError`` for an unknown user or group.
    """
    if spec.user is None:
        return Identity(None, spec.group, None)
    account = pwd.getpwnam(spec.user) if not spec.user.isdigit() else pwd.getpwuid(int(spec.user))
    if spec.group is not None:
        gid = int(spec.group) if spec.group.isdigit() else grp.getgrnam(spec.group).gr_gid
    else:
        gid = account.pw_gid
    if os.geteuid() != 0:  # cannot change groups anyway; let Popen report it
        return Identity(account, gid, None)
    return Identity(account, gid, sorted(set(os.getgrouplist(account.pw_name, gid))))
