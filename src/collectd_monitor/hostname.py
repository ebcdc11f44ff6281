"""The ``Hostname`` collectd uses, for the defaults of topics, ClientId and StatusTopic.

collectd's Python API does not tell a plugin its host name, so we read it
where collectd does: the top level of its config file (``-C FILE`` on
collectd's command line, else the Debian default). Without a ``Hostname``,
collectd asks the resolver for the canonical name when ``FQDNLookup`` is
true (its default) and takes the OS host name otherwise; so do we.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from collections.abc import Callable

DEFAULT_COLLECTD_CONF = "/etc/collectd/collectd.conf"

_OPTION = re.compile(r"^\s*(Hostname|FQDNLookup)\s+(.+?)\s*$", re.IGNORECASE)
_FALSE = ("false", "no", "off", "0")


def collectd_config_path(cmdline: bytes) -> str:
    """The config file named by ``-C`` in a NUL-separated command line, or the default."""
    args = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
    for i, arg in enumerate(args):
        if arg == "-C" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("-C") and len(arg) > 2:
            return arg[2:]
    return DEFAULT_COLLECTD_CONF


def parse_host_options(text: str) -> tuple[str | None, bool]:
    """``Hostname`` and ``FQDNLookup`` (default true) from the top level of a collectd.conf."""
    hostname: str | None = None
    fqdn = True
    depth = 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("</"):
            depth = max(depth - 1, 0)
            continue
        if stripped.startswith("<"):
            depth += 1
            continue
        match = _OPTION.match(line) if depth == 0 else None
        if match is None:
            continue
        try:
            words = shlex.split(match.group(2), comments=True)
        except ValueError:  # unbalanced quotes: collectd refuses the file anyway
            continue
        if not words:
            continue
        if match.group(1).lower() == "hostname":
            hostname = words[0] or None
        else:
            fqdn = words[0].lower() not in _FALSE
    return hostname, fqdn


def collectd_hostname(
    *,
    proc_cmdline: str = "/proc/self/cmdline",
    gethostname: Callable[[], str] = socket.gethostname,
    getfqdn: Callable[[], str] = socket.getfqdn,
) -> str:
    """The host name collectd (this process, when we run inside it) reports values under."""
    try:
        with open(proc_cmdline, "rb") as handle:
            path = collectd_config_path(handle.read())
    except OSError:
        path = DEFAULT_COLLECTD_CONF
    try:
        with open(os.path.abspath(path), encoding="utf-8", errors="replace") as handle:
            hostname, fqdn = parse_host_options(handle.read())
    except OSError:
        hostname, fqdn = None, False
    if hostname:
        return hostname
    return (getfqdn() if fqdn else gethostname()) or gethostname()
