"""The import rules of ARCHITECTURE.md, checked on the source.

Every module of the package is parsed with ``ast`` (imports inside functions
count too) and sorted into a layer; the table below says which layers each
layer may import. A new top-level module must be given a layer here, so a
change of the floor plan is always a visible change of this file, and the
table in ARCHITECTURE.md must say the same.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import collectd_monitor

PACKAGE = "collectd_monitor"
ROOT = Path(collectd_monitor.__file__).resolve().parent

CORE_MODULES = {
    "brokersettings",
    "cmdline",
    "codes",
    "config",
    "configwatch",
    "confblock",
    "errors",
    "executor",
    "process",
    "fsutil",
    "hostname",
    "logsetup",
    "permissions",
    "plugin_support",
    "runas",
    "runtime",
    "schema",
    "security_config",
    "services",
}
"""Top-level modules shared by every feature."""
FEATURE_PACKAGES = {"commands", "replacer", "rules", "fleet", "fleetrules", "cli", "testing"}
PLUGIN_MODULES = {"remote", "local", "central"}

ALLOWED: dict[str, set[str]] = {
    # a layer name allows the whole layer, a dotted name one module
    "core": {"core"},
    "rules": {"core", "rules"},
    "commands": {"core", "commands"},
    "replacer": {
        "core",
        "replacer",
        f"{PACKAGE}.commands.protocol",  # Request/Result, the wire format
        f"{PACKAGE}.commands.outbox",  # the helper drops its outcome into the plugin's outbox
        f"{PACKAGE}.commands.agent",  # the hook that plugs the replacer into the agent
    },
    "fleet": {"core", "commands", "fleet"},
    "fleetrules": {"core", "rules", "commands", "fleet", "fleetrules"},
    "plugins": {"core", "commands", "replacer", "rules", "fleetrules"},
    "cli": {"core", "commands", "replacer", "rules", "fleet", "fleetrules", "testing", "cli"},
    "testing": {"core", "commands", "testing"},
    "main": {"cli"},
}

TEMPORARY_EDGES: set[tuple[str, str]] = set()
"""Edges allowed for now against the table (none today)."""
ONLY_THROUGH_TEMPORARY: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """Every module ``name`` imports, anywhere in its body, as absolute names."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # ``from collectd_monitor.rules import notify`` imports a module
            found.update(
                f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES
            )
    return found


def _layer(name: str) -> str:
    parts = name.split(".")
    if parts == [PACKAGE]:
        return "core"
    top = parts[1]
    if top == "__main__":
        return "main"
    if top in PLUGIN_MODULES:
        return "plugins"
    if top in FEATURE_PACKAGES:
        return top
    if top in CORE_MODULES:
        return "core"
    raise AssertionError(f"{name} has no layer: add it to the table in {__file__}")


def _edges() -> list[tuple[str, str]]:
    return sorted(
        (source, target)
        for source in MODULES
        for target in _imports(source)
        if target == PACKAGE or target.startswith(PACKAGE + ".")
    )


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        _layer(name)


def test_layers_import_only_what_the_table_allows() -> None:
    wrong = [
        f"{source} ({_layer(source)}) imports {target} ({_layer(target)})"
        for source, target in _edges()
        if _layer(target) not in ALLOWED[_layer(source)]
        and target not in ALLOWED[_layer(source)]
        and (source, target) not in TEMPORARY_EDGES
    ]
    assert wrong == []


def test_only_the_cli_uses_the_test_harness() -> None:
    users = {
        source
        for source, target in _edges()
        if _layer(target) == "testing" and _layer(source) != "testing"
    }
    assert {_layer(source) for source in users} <= {"cli"}, sorted(users)


def test_only_main_imports_the_cli() -> None:
    users = {
        source for source, target in _edges() if _layer(target) == "cli" and _layer(source) != "cli"
    }
    assert users == {f"{PACKAGE}.__main__"}


def test_only_the_plugin_modules_import_collectd() -> None:
    users = {
        name
        for name in MODULES
        if any(target == "collectd" or target.startswith("collectd.") for target in _imports(name))
    }
    assert users == {f"{PACKAGE}.remote", f"{PACKAGE}.local", f"{PACKAGE}.central"}


def test_temporary_allowances_are_still_needed() -> None:
    edges = set(_edges())
    gone = sorted(edge for edge in TEMPORARY_EDGES if edge not in edges)
    assert gone == [], f"no longer imported: remove {gone} from TEMPORARY_EDGES"


def test_the_table_sees_function_level_imports() -> None:
    """The checker itself: an import hidden in a function still counts."""
    assert f"{PACKAGE}.confblock" in _imports(f"{PACKAGE}.replacer.helper")
    assert "paho" in _imports(f"{PACKAGE}.confblock")


README = ROOT.parent.parent / "README.md"


def test_architecture_md_shows_this_table() -> None:
    text = (README.parent / "ARCHITECTURE.md").read_text()
    section = text.split("## Who may import what", 1)[1].split("\n\n")[1]
    documented: dict[str, set[str]] = {}
    for row in section.splitlines()[2:]:
        layer, allowed = (cell.strip().strip("`") for cell in row.strip("|").split("|"))
        names = re.sub(r"\([^)]*\)", "", allowed).replace("`", "").split(",")
        documented["main" if layer == "__main__" else layer] = {
            f"{PACKAGE}.{name.strip()}" if "." in name else name.strip() for name in names
        }
    assert documented == ALLOWED


def test_architecture_md_names_every_commands_module() -> None:
    """The commands/ row of the package table lists each module of that package."""
    text = (README.parent / "ARCHITECTURE.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| **commands/**"))
    named = set(re.findall(r"`(\w+)`", row))
    modules = {path.stem for path in (ROOT / "commands").glob("*.py") if path.stem != "__init__"}
    assert modules - named == set()


def test_docstrings_point_to_readme_sections_that_exist() -> None:
    """Documents a module names exist; ``(README, "Section")`` names a real section."""
    headings = {
        line.lstrip("#").strip() for line in README.read_text().splitlines() if line.startswith("#")
    }
    wrong = []
    for name, path in MODULES.items():
        text = path.read_text()
        for document in re.findall(r"\b[\w-]+\.md\b", text):
            if not (README.parent / document).is_file():
                wrong.append(f"{name}: names {document}, which this repository does not have")
        for section in re.findall(r'README, "([^"]+)"', text):
            if section not in headings:
                wrong.append(f"{name}: README has no section {section!r}")
    assert wrong == []


LOCAL_PROBE = textwrap.dedent(
    """
    import json, sys, types

    fake = types.ModuleType("collectd")
    def ignore(*args, **kwargs):
        return None
    for name in ("register_config", "register_init", "register_shutdown", "register_read",
                 "register_write", "register_notification", "debug", "info", "notice",
                 "warning", "error", "get_dataset"):
        setattr(fake, name, ignore)
    sys.modules["collectd"] = fake
    import collectd_monitor.local
    print(json.dumps(sorted(sys.modules)))
    """
)


@pytest.fixture(scope="module")
def local_modules() -> set[str]:
    """``sys.modules`` of a fresh interpreter after ``import collectd_monitor.local``."""
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded: set[str] = set(json.loads(done.stdout))
    assert "collectd_monitor.rules.engine" in loaded  # the probe did load the core
    return loaded


def test_local_monitoring_loads_nothing_mqtt(local_modules: set[str]) -> None:
    assert sorted(m for m in local_modules if m == "paho" or m.startswith("paho.")) == []


def test_local_monitoring_loads_no_other_feature(local_modules: set[str]) -> None:
    others = sorted(
        name
        for name in local_modules
        if name.startswith(PACKAGE + ".")
        and _layer(name) in {"commands", "replacer", "fleetrules", "cli", "testing"}
        and name not in ONLY_THROUGH_TEMPORARY
    )
    assert others == []
