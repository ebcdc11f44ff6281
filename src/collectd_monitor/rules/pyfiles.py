"""Python rule files: ``*.py`` in ``LocalMonitorConfigDir`` (the original's API).

A file defines ``metric_handlers`` and/or ``notification_handlers``, each one
function or a mapping of names to functions. A handler takes a
:class:`~collectd_monitor.rules.model.Metric` or
:class:`~collectd_monitor.rules.model.Notice` and returns ``None`` or
``{"service": ..., "command": ...}``.

Every failure is pinned to a file and a line, because the operator who wrote
the rule has to find it from one line in collectd's log. A file that fails to
load is left out; a handler that raises is reported and skipped for that call.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

from collectd_monitor.rules.model import Action

METRIC = "metric"
NOTIFICATION = "notification"
_ATTRIBUTES = {METRIC: "metric_handlers", NOTIFICATION: "notification_handlers"}
_MODULE_PREFIX = "collectd_monitor_rulefile_"


@dataclass(frozen=True)
class Handler:
    name: str
    """``<file>::<metric|notification>::<name>``: the notification's ``type_instance``."""
    func: Callable[[Any], Any]
    path: str
    line: int
    """Where the handler is defined, for messages about what it returned."""


@dataclass(frozen=True)
class RuleFiles:
    metric: tuple[Handler, ...] = ()
    notification: tuple[Handler, ...] = ()
    errors: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    """Not errors, but worth a line in the log: the original's ``*.lua`` files left behind."""


class HandlerError(Exception):
    """A handler raised or returned something unusable; the text names file and line."""


def handler_name(path: str, kind: str, name: str) -> str:
    return f"{os.path.basename(path)}::{kind}::{name}"


def _line_in(path: str, tb: TracebackType | None, fallback: int) -> int:
    line = fallback
    for frame in traceback.extract_tb(tb):
        if os.path.abspath(frame.filename) == os.path.abspath(path) and frame.lineno:
            line = frame.lineno
    return line


def load_module(path: str) -> ModuleType:
    stem = os.path.splitext(os.path.basename(path))[0]
    module_name = _MODULE_PREFIX + "".join(c if c.isalnum() else "_" for c in stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _handlers_of(module: ModuleType, path: str, kind: str) -> list[Handler]:
    attribute = _ATTRIBUTES[kind]
    value = getattr(module, attribute, None)
    if value is None:
        return []
    if callable(value):
        items: list[tuple[Any, Any]] = [(getattr(value, "__name__", attribute), value)]
    elif isinstance(value, Mapping):
        items = list(value.items())
    else:
        raise TypeError(
            f"{attribute} must be a function or a mapping of names to functions, "
            f"not {type(value).__name__}"
        )
    handlers = []
    for name, func in items:
        if not isinstance(name, str) or not callable(func):
            raise TypeError(f"{attribute}[{name!r}] is not a function")
        code = getattr(func, "__code__", None)
        handlers.append(
            Handler(
                name=handler_name(path, kind, name),
                func=func,
                path=path,
                line=code.co_firstlineno if code is not None else 0,
            )
        )
    return handlers


def rule_file_paths(directory: str) -> list[str]:
    names = sorted(
        name
        for name in os.listdir(directory)
        if name.endswith(".py") and not name.startswith((".", "_"))
    )
    return [os.path.join(directory, name) for name in names]


def leftover_lua_files(directory: str) -> list[str]:
    """The original project's ``*.lua`` rule files in ``directory``: never loaded here."""
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(".lua"))
    except OSError:
        return []
    return [os.path.join(directory, name) for name in names]


def lua_warning(directory: str) -> str | None:
    leftovers = leftover_lua_files(directory)
    if not leftovers:
        return None
    return (
        f"{directory}: ignoring {len(leftovers)} Lua rule file(s) of lua-collectd-monitor: "
        f"{', '.join(os.path.basename(path) for path in leftovers)}; "
        "rule files are Python (*.py) now: port them and remove the *.lua files"
    )


def load_rule_files(directory: str | None) -> RuleFiles:
    """Load every rule file of ``directory``; each failure becomes one line in ``errors``."""
    if not directory:
        return RuleFiles()
    try:
        paths = rule_file_paths(directory)
    except OSError as exc:
        return RuleFiles(errors=(f"{directory}: cannot list rule files: {exc.strerror or exc}",))
    metric: list[Handler] = []
    notification: list[Handler] = []
    errors: list[str] = []
    loaded: list[str] = []
    warning = lua_warning(directory)
    for path in paths:
        try:
            module = load_module(path)
            found = {kind: _handlers_of(module, path, kind) for kind in _ATTRIBUTES}
        except SyntaxError as exc:
            errors.append(f"{path} line {exc.lineno}: syntax error: {exc.msg}; file skipped")
            continue
        except Exception as exc:
            line = _line_in(path, exc.__traceback__, 0)
            where = f"{path} line {line}" if line else path
            errors.append(f"{where}: {type(exc).__name__}: {exc}; file skipped")
            continue
        if not found[METRIC] and not found[NOTIFICATION]:
            errors.append(f"{path}: defines neither metric_handlers nor notification_handlers")
        metric += found[METRIC]
        notification += found[NOTIFICATION]
        loaded.append(path)
    return RuleFiles(
        tuple(metric),
        tuple(notification),
        tuple(errors),
        tuple(loaded),
        (warning,) if warning else (),
    )


def to_action(handler: Handler, result: Any) -> Action | None:
    if result is None:
        return None
    if isinstance(result, Mapping):
        service, command = result.get("service"), result.get("command")
        if isinstance(service, str) and isinstance(command, str):
            return Action(service, command)
    raise HandlerError(
        f"{handler.path} line {handler.line}: {handler.name} returned {result!r:.100}; "
        'expected None or {"service": ..., "command": ...}'
    )


def call_handler(handler: Handler, item: Any) -> Action | None:
    """Run a handler; raise :class:`HandlerError` naming the file and line of a failure."""
    try:
        result = handler.func(item)
    except Exception as exc:
        line = _line_in(handler.path, exc.__traceback__, handler.line)
        raise HandlerError(
            f"{handler.path} line {line}: {handler.name} raised {type(exc).__name__}: {exc}"
        ) from None
    return to_action(handler, result)
