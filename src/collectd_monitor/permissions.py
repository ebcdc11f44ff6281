"""Who may read or change the files that decide what runs as root: one place for every check.

collectd usually runs as root, so whoever may change config.json, a public
key, a rule file (Python code the local plugin imports) or collectd.conf may
run code as root; whoever may read an HMAC secret or a broker password may
sign commands or speak for the host. Each finding names the file, the problem
and the command that fixes it. The plugins log findings as warnings, or refuse
to start with ``Security.StrictPermissions``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectd_monitor.config import MonitorConfig

DEFAULT_COLLECTD_CONF = "/etc/collectd/collectd.conf"
SECRET_OPTIONS = ("password", "hmackeys")
"""``<Module>`` block options (lower case) that hold a secret."""

_WRITABLE = stat.S_IWGRP | stat.S_IWOTH
_READABLE = stat.S_IRGRP | stat.S_IROTH


@dataclass(frozen=True)
class Finding:
    path: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path} {self.problem}; run: {self.fix}"


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _mode(info: os.stat_result) -> str:
    return f"{stat.S_IMODE(info.st_mode):04o}"


def _trusted_owner(info: os.stat_result) -> bool:
    return info.st_uid in (0, os.geteuid())


def _owner_finding(path: str, info: os.stat_result, what: str) -> Finding | None:
    if _trusted_owner(info):
        return None
    return Finding(
        path,
        f"is owned by uid {info.st_uid}, not by root or us: that user can change {what}",
        f"chown root:root {path}",
    )


def config_readable(path: str | None, has_secrets: bool) -> list[Finding]:
    """config.json holding a password or key must be for our eyes only."""
    info = _stat(path) if path and has_secrets else None
    if path is None or info is None or not info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return []
    problem = f"holds a password or key but is accessible by group or others (mode {_mode(info)})"
    return [Finding(path, problem, f"chmod 600 {path}")]


def config_owner(path: str | None) -> list[Finding]:
    """config.json names the commands that run as root: its owner could add any."""
    info = _stat(path) if path else None
    if path is None or info is None:
        return []
    found = _owner_finding(path, info, "the commands run as root")
    if found is None and info.st_mode & _WRITABLE:
        found = Finding(
            path,
            f"is writable by group or others (mode {_mode(info)}): they can change the commands "
            "run as root",
            f"chmod go-w {path}",
        )
    return [found] if found else []


def public_key_files(paths: Iterable[str]) -> list[Finding]:
    """Whoever can change a trusted public key can sign commands."""
    findings = []
    for path in paths:
        info = _stat(path)
        if info is None:
            continue
        found = _owner_finding(path, info, "which signatures are trusted")
        if found is None and info.st_mode & _WRITABLE:
            found = Finding(
                path,
                f"(a trusted public key) is writable by group or others (mode {_mode(info)})",
                f"chmod go-w {path}",
            )
        if found:
            findings.append(found)
    return findings


def secret_files(paths: Iterable[str]) -> list[Finding]:
    """Whoever can read an HMAC secret can sign commands."""
    findings = []
    for path in paths:
        info = _stat(path)
        if info is None:
            continue
        found = _owner_finding(path, info, "the HMAC secret")
        if found is None and info.st_mode & _READABLE:
            found = Finding(
                path,
                f"(an HMAC secret) is readable by group or others (mode {_mode(info)})",
                f"chmod 600 {path}",
            )
        if found:
            findings.append(found)
    return findings


def rule_files(directory: str | None) -> list[Finding]:
    """Rule files are Python code imported as root: nobody else may change them or their folder."""
    if not directory:
        return []
    info = _stat(directory)
    if info is None or not stat.S_ISDIR(info.st_mode):
        return []
    findings = []
    found = _owner_finding(directory, info, "the rule files (code run as root)")
    if found is None and info.st_mode & _WRITABLE:
        found = Finding(
            directory,
            f"(rule files: code run as root) is writable by group or others (mode {_mode(info)})",
            f"chmod go-w {directory}",
        )
    if found:
        findings.append(found)
    for path in sorted(str(p) for p in Path(directory).glob("*.py")):
        file_info = _stat(path)
        if file_info is None or not stat.S_ISREG(file_info.st_mode):
            continue
        found = _owner_finding(path, file_info, "this rule file (code run as root)")
        if found is None and file_info.st_mode & _WRITABLE:
            found = Finding(
                path,
                f"(a rule file: code run as root) is writable by group or others "
                f"(mode {_mode(file_info)})",
                f"chmod go-w {path}",
            )
        if found:
            findings.append(found)
    return findings


def collectd_conf_path(cmdline: Sequence[str]) -> str:
    """collectd.conf of the collectd whose command line this is (``-C``), else the default."""
    for index, arg in enumerate(cmdline):
        if arg == "-C" and index + 1 < len(cmdline):
            return cmdline[index + 1]
        if arg.startswith("-C") and len(arg) > 2:
            return arg[2:]
    return DEFAULT_COLLECTD_CONF


def own_cmdline(proc: str = "/proc") -> list[str]:
    try:
        with open(f"{proc}/self/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def block_has_secret(options: Mapping[str, Any]) -> bool:
    return any(str(key).lower() in SECRET_OPTIONS for key in options)


def collectd_conf_secrets(path: str, block_secret: bool) -> list[Finding]:
    """A password or key in our ``<Module>`` block of a collectd.conf others may read."""
    info = _stat(path) if block_secret else None
    if info is None or not info.st_mode & stat.S_IROTH:
        return []
    if not block_secret:
        return []
    return [
        Finding(
            path,
            f"holds a password or key in a <Module> block but is readable by others "
            f"(mode {_mode(info)})",
            f"chmod o-r {path}",
        )
    ]


def check_all(
    config: MonitorConfig,
    *,
    module_options: Mapping[str, Any] | None = None,
    collectd_conf: str | None = None,
) -> list[Finding]:
    """Every finding for this plugin's files; ``collectd_conf`` only when running in collectd."""
    findings: list[Finding] = []
    findings += config_readable(config.source, bool(config.secrets or config.security.has_keys))
    findings += config_owner(config.source)
    findings += public_key_files(config.security.ed25519_files)
    findings += secret_files(config.security.hmac_files)
    findings += rule_files(config.local_monitor_config_dir)
    if collectd_conf:
        findings += collectd_conf_secrets(collectd_conf, block_has_secret(module_options or {}))
    return findings
