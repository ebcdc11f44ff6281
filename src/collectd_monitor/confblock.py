"""The collectd.conf block that loads this install's plugins.

Used by ``collectd-monitor collectd-conf``, by the config replacer's helper
(which must find the package the same way collectd does) and by the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import collectd_monitor


def module_paths() -> list[str]:
    """The ``ModulePath`` entries collectd needs to import this install.

    collectd puts each entry on sys.path but ignores ``.pth`` files, so an
    editable install needs its source directory listed next to site-packages.
    """
    import paho

    paths: list[str] = []
    for module in (collectd_monitor, paho):
        parent = str(Path(module.__file__ or "").resolve().parent.parent)
        if parent not in paths:
            paths.append(parent)
    return paths


def python_block(
    modules: Mapping[str, Mapping[str, Any]], paths: Sequence[str] | None = None
) -> str:
    """The ``<LoadPlugin python>`` / ``<Plugin python>`` block importing ``modules``.

    ``modules`` maps a plugin module name to its ``<Module>`` options.
    """
    lines = ["<LoadPlugin python>", "  Globals true", "</LoadPlugin>", "", "<Plugin python>"]
    lines += [f'  ModulePath "{path}"' for path in (paths or module_paths())]
    for module, options in modules.items():
        lines += ["", f'  Import "{module}"', f'  <Module "{module}">']
        lines += [f"    {key} {_conf_value(value)}" for key, value in options.items()]
        lines.append("  </Module>")
    lines.append("</Plugin>")
    return "\n".join(lines) + "\n"


def _conf_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
