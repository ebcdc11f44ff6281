"""What users of lua-collectd-monitor bring along: console logging, *.lua files, config edits."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.config import load_config
from collectd_monitor.configwatch import Change, ConfigWatch, file_key
from collectd_monitor.rules.pyfiles import load_rule_files
from collectd_monitor.runtime import reload_for_plugin


def write_config(path: Path, **data: Any) -> None:
    path.write_text(json.dumps(data))
    path.chmod(0o600)


def test_log_device_console_is_stdout(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_config(path, LogDevice="console")
    assert load_config(path=str(path)).log_device == "stdout"


def test_leftover_lua_rule_files_are_named_in_a_warning(tmp_path: Path) -> None:
    (tmp_path / "disk.lua").write_text("return {}")
    (tmp_path / "nginx.lua").write_text("return {}")
    (tmp_path / "ok.py").write_text("def metric_handlers(metric):\n    return None\n")
    files = load_rule_files(str(tmp_path))
    assert files.errors == ()
    (warning,) = files.warnings
    assert "disk.lua, nginx.lua" in warning and "*.py" in warning


def test_no_warning_without_lua_files(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("def metric_handlers(metric):\n    return None\n")
    assert load_rule_files(str(tmp_path)).warnings == ()


class Watched:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "config.json"
        self.options = {"MonitorConfigPath": str(self.path)}
        write_config(self.path, Services={"a": {"commands": {"x": "true"}}})
        self.changes: list[Change] = []
        self.watch = ConfigWatch(
            load_config(self.options),
            load=lambda: reload_for_plugin("test", self.options),
            apply=self.changes.append,
            interval=3600,
        )

    def rewrite(self, **data: Any) -> None:
        before = file_key(str(self.path))
        write_config(self.path, **data)
        if file_key(str(self.path)) == before:  # same size within one mtime tick
            stat = self.path.stat()
            os.utime(self.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_an_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    w = Watched(tmp_path)
    assert not w.watch.check()
    assert w.changes == []


def test_a_changed_file_is_applied_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = Watched(tmp_path)
    w.rewrite(Services={"a": {"commands": {"x": "true"}}, "b": {"commands": {"y": "true"}}})
    with caplog.at_level(logging.INFO, logger="collectd_monitor"):
        assert w.watch.check()
    (change,) = w.changes
    assert sorted(change.config.services) == ["a", "b"] and change.needs_restart == ()
    assert "config reloaded; services now: a, b" in caplog.text


def test_a_broken_file_keeps_the_running_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = Watched(tmp_path)
    w.path.write_text('{"Services": ')
    with caplog.at_level(logging.INFO, logger="collectd_monitor"):
        assert not w.watch.check()
        assert not w.watch.check()  # logged once, not on every check
    assert w.changes == [] and sorted(w.watch.current.services) == ["a"]
    assert caplog.text.count("keeping the running config") == 1
    assert "invalid JSON" in caplog.text
    w.rewrite(Services={"c": {"commands": {"z": "true"}}})
    assert w.watch.check() and sorted(w.changes[0].config.services) == ["c"]


def test_broker_changes_are_named_as_needing_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = Watched(tmp_path)
    w.rewrite(Host="broker.example:1884", Services={"a": {"commands": {"x": "true"}}})
    with caplog.at_level(logging.INFO, logger="collectd_monitor"):
        assert w.watch.check()
    assert w.changes[0].needs_restart == ("broker settings",)
    assert "only after a collectd restart: broker settings" in caplog.text


def test_a_replaced_file_is_noticed_by_its_inode(tmp_path: Path) -> None:
    w = Watched(tmp_path)
    stat = w.path.stat()
    other = tmp_path / "new.json"
    write_config(other, Services={"d": {"commands": {"x": "true"}}})
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert other.stat().st_size == stat.st_size  # only the inode tells them apart
    os.replace(other, w.path)
    assert w.watch.check()


def test_check_config_names_each_problem_with_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from collectd_monitor.cli import main

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.py").write_text("def metric_handlers(m):\n    return (\n")
    (rules / "old.lua").write_text("return {}\n")
    path = tmp_path / "config.json"
    write_config(
        path, LocalMonitorConfigDir=str(rules), Services={"a": {"commands": {"x": "true"}}}
    )
    assert main(["check-config", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"error: {rules / 'broken.py'} line" in out and "warning:" in out and "old.lua" in out
    write_config(path, Services={"a": {"commands": {"x": 5}}})
    assert main(["check-config", "--config", str(path)]) == 1
    assert "key 'Services.a.commands.x'" in capsys.readouterr().out
    write_config(path, Services={"a": {"commands": {"x": "true"}}})
    assert main(["check-config", "--config", str(path)]) == 0
    assert ": ok; 1 service(s) with 1 command(s)" in capsys.readouterr().out
