"""Validation of a new collectd.conf before anything live is touched.

``collectd -t`` checks nothing in collectd 5.12 (DESIGN.md §6); ``collectd -T``
parses, loads every plugin, runs their init and one read, and exits 1 on a
syntax error, an unknown plugin or a Python import/config error. It runs with
``COLLECTD_MONITOR_OFFLINE=1`` so that our own plugins load and check their
config but never connect: a validation run must not publish or take over the
live daemon's MQTT session. A Python *init* error does not fail ``-T``, so the
remote plugin's own config (the ``<Module>`` block and its config.json) is
checked here as well.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.config import load_config
from collectd_monitor.errors import ConfigError
from collectd_monitor.replacer.environment import validation_env
from collectd_monitor.replacer.errors import ReplaceFailed

REMOTE_MODULE = "collectd_monitor.remote"
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


# --------------------------------------------------------------------------- the <Module> block

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


def _value(quoted: str | None, bare: str | None) -> Any:
    if quoted is not None:
        return re.sub(r"\\(.)", r"\1", quoted)
    assert bare is not None
    if bare.lower() in ("true", "false"):
        return bare.lower() == "true"
    try:
        return float(bare)  # collectd hands numbers to Python as floats
    except ValueError:
        return bare


def _tokens(line: str) -> list[Any]:
    return [_value(m.group(1), m.group(2)) for m in _TOKEN.finditer(line)]


def _strip_comment(line: str) -> str:
    out, quoted, escaped = [], False, False
    for char in line:
        if char == "#" and not quoted:
            break
        out.append(char)
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
    return "".join(out).strip()


def loads_module(text: str, module: str = REMOTE_MODULE) -> bool:
    """Whether the config imports ``module`` in its python plugin."""
    for raw in text.splitlines():
        tokens = _tokens(_strip_comment(raw))
        if len(tokens) >= 2 and str(tokens[0]).lower() == "import" and tokens[1] == module:
            return True
    return False


def blocks(text: str, kind: str, name: str) -> list[dict[str, Any]]:
    """The flat ``Key value`` options of every ``<kind "name">`` block.

    A small reader for the only shapes the replacer needs to look into (the
    remote plugin's ``<Module>`` block, ``<Plugin logfile>``); nested blocks
    inside them are skipped.
    """
    found: list[dict[str, Any]] = []
    options: dict[str, Any] | None = None
    depth = 0
    opening = re.compile(rf'<\s*{kind}\s+"?([^">]+)"?\s*>', re.IGNORECASE)
    closing = re.compile(rf"</\s*{kind}\s*>", re.IGNORECASE)
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if options is None:
            match = opening.match(line)
            if match and match.group(1).strip() == name:
                options, depth = {}, 0
            continue
        if depth == 0 and closing.match(line):
            found.append(options)
            options = None
        elif line.startswith("</"):
            depth -= 1
        elif line.startswith("<"):
            depth += 1
        elif depth == 0 and len(tokens := _tokens(line)) >= 2:
            options[str(tokens[0])] = tokens[1] if len(tokens) == 2 else tokens[1:]
    return found


def plugin_blocks(text: str, plugin: str) -> list[dict[str, Any]]:
    return blocks(text, "Plugin", plugin)


def module_options(text: str, module: str = REMOTE_MODULE) -> dict[str, Any] | None:
    """The ``<Module "module">`` block's options (``None`` without such a block)."""
    found = blocks(text, "Module", module)
    return found[0] if found else None


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
    files = []
    for options in plugin_blocks(text, "logfile"):
        value = options.get("File")
        if isinstance(value, str) and value.lower() not in ("stdout", "stderr"):
            files.append(value)
    return files


# --------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class Validation:
    loads_remote: bool
    """The new config loads our remote plugin (so its restart can be checked on the broker)."""


def validate(
    binary: str,
    path: str,
    text: str,
    *,
    timeout: float = 60.0,
    runner: Runner = run_process,
    require_remote: bool = False,
) -> Validation:
    """Raise 0x2002 with collectd's own error lines if the config at ``path`` is broken."""
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
    loads_remote = loads_module(text)
    if loads_remote:
        options = module_options(text) or {}
        try:
            load_config(options)
        except ConfigError as exc:
            raise ReplaceFailed(
                ResultCode.REPLACE_CONFIG_BROKEN,
                f"{REMOTE_MODULE} would stay idle with the new config: {exc}",
            ) from None
    elif require_remote:
        raise ReplaceFailed(
            ResultCode.REPLACE_CONFIG_BROKEN,
            f"the new config does not load {REMOTE_MODULE}: this host would no longer take "
            "remote commands or config pushes (apply such a config with replace-config "
            "on the host)",
        )
    return Validation(loads_remote=loads_remote)
