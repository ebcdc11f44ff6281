"""Validation of a new collectd.conf before anything live is touched.

Two stages, in this order:

1. :func:`~collectd_monitor.replacer.static.static_check`: everything that can be
   judged from the text without running any of it (size, syntax, the remote
   plugin's set-up and its config.json).
2. :func:`collectd_check`: ``collectd -T``. ``collectd -t`` checks nothing in
   collectd 5.12; ``-T`` parses, loads every plugin, **runs their init and one
   read cycle**, and exits 1 on a syntax error, an unknown plugin or a Python
   import/config error. Because it executes the config, only a config that
   passed stage 1 (and, for a push, the trust checks) reaches it. It runs with
   ``COLLECTD_MONITOR_OFFLINE=1`` so that our own plugins load and check their
   config but never connect: a validation run must not publish or take over
   the live daemon's MQTT session.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.replacer.confsyntax import ConfSyntaxError, Node, parse
from collectd_monitor.replacer.environment import validation_env
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.static import (
    DEFAULT_MAX_CONFIG_BYTES,
    REMOTE_MODULE,
    StaticCheck,
    imports,
    leaf_options,
    module_block,
    static_check,
)

MAX_ERROR_LINES = 30

_NOISE = re.compile(
    r"successfully loaded|^Exiting normally|Stopping \d+ write threads|No read-functions"
    r"|offline mode \(config validation run\)"
)


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    output: str


Runner = Callable[[Sequence[str], Mapping[str, str], float], ProcessResult]
"""Runs argv with an environment and a timeout; returns exit status and merged output."""


def run_process(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> ProcessResult:
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProcessResult(124, f"timed out after {timeout:g} s")
    except OSError as exc:
        return ProcessResult(127, f"cannot run {argv[0]}: {exc}")
    return ProcessResult(done.returncode, done.stdout.decode("utf-8", errors="replace"))


def offline_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A service manager's environment (not the caller's), with our plugins offline."""
    return validation_env(base)


_ERRORISH = re.compile(
    r"error|warn|fail|could not|cannot|unable|unknown|invalid|exception", re.IGNORECASE
)


def error_lines(output: str, *, only_errors: bool = False) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    lines = [line for line in lines if not _NOISE.search(line)]
    if only_errors:
        lines = [line for line in lines if _ERRORISH.search(line)]
    if len(lines) > MAX_ERROR_LINES:
        lines = [*lines[:MAX_ERROR_LINES], f"[{len(lines) - MAX_ERROR_LINES} more lines]"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- reading the text


def _tree(text: str) -> Node | None:
    try:
        return parse(text)
    except ConfSyntaxError:
        return None


def loads_module(text: str, module: str = REMOTE_MODULE) -> bool:
    """Whether the config imports ``module`` in its python plugin."""
    root = _tree(text)
    return root is not None and imports(root, module)


def module_options(text: str, module: str = REMOTE_MODULE) -> dict[str, Any] | None:
    """The ``<Module "module">`` block's options (``None`` without such a block)."""
    root = _tree(text)
    block = module_block(root, module) if root is not None else None
    return leaf_options(block) if block is not None else None


class LogTail:
    """What collectd appends to a log file during the validation run.

    Once the logfile plugin is loaded, collectd -T reports an unknown plugin
    or a failing Python module there, not on its stderr. The live daemon may
    write to the same file meanwhile; :func:`error_lines` keeps the error-ish ones.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.offset = path.stat().st_size
        except OSError:
            self.offset = 0

    def read_new(self, limit: int = 64 * 1024) -> str:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                return handle.read(limit).decode("utf-8", errors="replace")
        except OSError:
            return ""


def logfile_paths(text: str) -> list[str]:
    """The ``File`` of every ``<Plugin logfile>`` block (not stdout/stderr)."""
    root = _tree(text)
    files = []
    for block in root.find("Plugin") if root is not None else []:
        if not (block.block and str(block.first).lower() == "logfile"):
            continue
        value = leaf_options(block).get("File")
        if isinstance(value, str) and value.lower() not in ("stdout", "stderr"):
            files.append(value)
    return files


# --------------------------------------------------------------------------- the check


def collectd_check(
    binary: str, path: str, text: str, *, timeout: float = 60.0, runner: Runner = run_process
) -> None:
    """``collectd -T`` on ``path``: raise 0x2002 with collectd's own error lines.

    This *runs* the config (plugin init and one read cycle): call it only for a
    config that passed :func:`static_check` and, for a push, the trust checks.
    """
    logs = [LogTail(Path(log)) for log in logfile_paths(text)]
    done = runner([binary, "-T", "-C", path], offline_env(), timeout)
    if done.returncode != 0:
        logged = "\n".join(tail.read_new() for tail in logs)
        details = error_lines(logged, only_errors=True) + "\n" + error_lines(done.output)
        details = details.strip() or "(collectd printed nothing; see its log)"
        raise ReplaceFailed(
            ResultCode.REPLACE_CONFIG_BROKEN,
            f"collectd -T rejected the new config (exit {done.returncode}):\n{details}",
        )


def validate(
    binary: str,
    path: str,
    text: str,
    *,
    timeout: float = 60.0,
    runner: Runner = run_process,
    require_remote: bool = False,
    max_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
) -> StaticCheck:
    """Static checks first, then ``collectd -T``; raise 0x2002 if the config is broken."""
    checked = static_check(text, require_remote=require_remote, max_bytes=max_bytes)
    collectd_check(binary, path, text, timeout=timeout, runner=runner)
    return checked
