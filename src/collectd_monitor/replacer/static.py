"""Checks of a new collectd.conf that execute nothing of it.

``collectd -T`` is not a passive check: it loads every plugin, runs their
init and one read cycle, so an ``exec`` plugin or a Python module of the new
config runs during validation. Everything that can be judged from the text
alone is therefore judged here first, and only a config that passed these
checks (and, for a push, the trust checks before them) ever reaches ``-T``:

* its size (``MaxConfigBytes``);
* collectd.conf syntax: balanced ``<Blocks>``, closed quotes, one statement per line;
* the remote plugin: ``LoadPlugin python`` (or ``AutoLoadPlugin true``) before
  the ``<Plugin python>`` block that imports ``collectd_monitor.remote``, followed
  by its ``<Module "collectd_monitor.remote">`` block naming ``MonitorConfigPath``
  (or an inline ``Host``), and that configuration loading as the plugin would
  load it (config.json readable and valid, not refused by StrictPermissions);
* no ``Interactive true`` in the python plugin (it would wait for a terminal).

The remote plugin must be set up in the text itself: ``Include`` is not followed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.config import load_config
from collectd_monitor.errors import ConfigError
from collectd_monitor.replacer.confsyntax import ConfSyntaxError, Node, parse
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.security_config import check_permissions

REMOTE_MODULE = "collectd_monitor.remote"
DEFAULT_MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StaticCheck:
    loads_remote: bool
    """The new config imports our remote plugin (and configures it so it can connect)."""


def _broken(message: str) -> ReplaceFailed:
    return ReplaceFailed(ResultCode.REPLACE_CONFIG_BROKEN, message)


def python_blocks(root: Node) -> list[Node]:
    return [
        node
        for node in root.find("Plugin")
        if node.block and str(node.first or "").lower() == "python"
    ]


def leaf_options(node: Node) -> dict[str, Any]:
    """A block's ``Key value`` options as the plugin receives them (nested blocks skipped)."""
    options: dict[str, Any] = {}
    for child in node.children:
        if not child.block:
            options[child.key] = child.values[0] if len(child.values) == 1 else list(child.values)
    return options


def imports(root: Node, module: str = REMOTE_MODULE) -> bool:
    return any(
        child.first == module for block in python_blocks(root) for child in block.find("Import")
    )


def module_block(root: Node, module: str = REMOTE_MODULE) -> Node | None:
    """The first ``<Module "module">`` block that follows the module's ``Import``."""
    imported = False
    for block in python_blocks(root):
        for child in block.children:
            if child.key.lower() == "import" and child.first == module:
                imported = True
            elif (
                imported
                and child.block
                and child.key.lower() == "module"
                and str(child.first).lower() == module.lower()
            ):
                return child
    return None


def _python_loaded_first(root: Node) -> bool:
    """``LoadPlugin python`` comes before the first ``<Plugin python>`` (or autoload is on)."""
    for child in root.children:
        key = child.key.lower()
        if key == "autoloadplugin" and child.first is True:
            return True
        if key == "loadplugin" and str(child.first).lower() == "python":
            return True
        if key == "plugin" and child.block and str(child.first).lower() == "python":
            return False
    return False


def _remote_problem(root: Node) -> str | None:
    if not imports(root):
        return (
            f"the new config does not load {REMOTE_MODULE}: this host would no longer take "
            "remote commands or config pushes (apply such a config with replace-config "
            "on the host)"
        )
    if not _python_loaded_first(root):
        return (
            f"the new config imports {REMOTE_MODULE} but has no 'LoadPlugin python' before "
            "its <Plugin python> block: collectd would ignore the block"
        )
    block = module_block(root)
    if block is None:
        return (
            f'the new config has no <Module "{REMOTE_MODULE}"> block after Import '
            f'"{REMOTE_MODULE}": the plugin would stay idle'
        )
    keys = {key.lower() for key in leaf_options(block)}
    if not keys & {"monitorconfigpath", "host"}:
        return (
            f'the <Module "{REMOTE_MODULE}"> block (line {block.line}) names neither '
            "MonitorConfigPath nor Host: the plugin would not know its broker"
        )
    return None


def _check_remote_config(options: dict[str, Any]) -> None:
    try:
        config = load_config(options)
    except ConfigError as exc:
        raise _broken(f"{REMOTE_MODULE} would stay idle with the new config: {exc}") from None
    exposed = check_permissions(config.source, bool(config.secrets or config.security.ed25519_keys))
    if exposed and config.security.strict_permissions:
        raise _broken(
            f"{REMOTE_MODULE} would refuse to start with the new config "
            f"(Security.StrictPermissions): {exposed}"
        )


def static_check(
    text: str, *, require_remote: bool, max_bytes: int = DEFAULT_MAX_CONFIG_BYTES
) -> StaticCheck:
    """Raise 0x2002 for a config that fails a check done without running any of it."""
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise _broken(
            f"the new config is {size} bytes; this host accepts at most {max_bytes} "
            "(Services.collectd MaxConfigBytes)"
        )
    try:
        root = parse(text)
    except ConfSyntaxError as exc:
        raise _broken(f"the new config is not valid collectd.conf: {exc}") from None
    for block in python_blocks(root):
        for child in block.find("Interactive"):
            if child.first is True:
                raise _broken(
                    f"line {child.line}: 'Interactive true' in <Plugin python> would make "
                    "collectd wait for a terminal"
                )
    loads_remote = imports(root)
    problem = _remote_problem(root)
    if problem is not None and (require_remote or loads_remote):
        raise _broken(problem)
    module = module_block(root)
    if loads_remote and module is not None:  # _remote_problem made sure there is one
        _check_remote_config(leaf_options(module))
    return StaticCheck(loads_remote=loads_remote)
