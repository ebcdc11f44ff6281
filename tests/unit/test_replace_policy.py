"""Replacement policy, pure parts: syntax, static checks and their order, paths, lock, daemons,
signed pushes and the reserved collectd commands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import decode_request, format_timestamp
from collectd_monitor.commands.security import SecuritySettings, SignatureCheck, Signer
from collectd_monitor.errors import ProtocolError
from collectd_monitor.replacer.confsyntax import ConfSyntaxError, parse
from collectd_monitor.replacer.errors import ReplaceFailed
from collectd_monitor.replacer.paths import (
    ReplacerPaths,
    Timing,
    check_single_daemon,
    discover,
    lock_path_for,
)
from collectd_monitor.replacer.procfs import daemons_using
from collectd_monitor.replacer.static import static_check
from collectd_monitor.replacer.transaction import Transaction
from collectd_monitor.replacer.validate import ProcessResult

from .test_replacer_parts import fake_proc

# --------------------------------------------------------------------------- syntax


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("<Plugin cpu>\n", "<Plugin cpu> is never closed"),
        ('Hostname "x\n', "quoted string is never closed"),
        ("</Plugin>\n", "closes no open block"),
        ("<A>\n</B>\n", "</B> closes <A> opened in line 1"),
        ("<A>\n</a>\n", "</a> closes <A>"),  # collectd compares block names exactly
        ("File /var/log/x\n", "unexpected '/'"),
        ("Interval\n", "Interval needs a value"),
        ("<Plugin x\n</Plugin>\n", "not closed with '>'"),
        ("<Plugin x> Foo 1\n</Plugin>\n", "unexpected 'Foo'"),
    ],
)
def test_syntax_errors_name_the_line(text, words):
    with pytest.raises(ConfSyntaxError) as failed:
        parse(text)
    assert words in str(failed.value)


def test_comments_continuations_and_values():
    root = parse(
        'A "x # not a comment" # a comment\nB 1 \\\n  true off\n<C "d e">\n  F "\\"q\\""\n</C>'
    )
    a, b, c = root.children
    assert a.values == ["x # not a comment"]
    assert b.values == [1.0, True, False]
    assert (c.key, c.values, c.block, c.tag) == ("C", ["d e"], True, 'C "d e"')
    assert c.children[0].values == ['"q"']


def test_a_block_hidden_in_a_quoted_string_is_not_a_block():
    text = 'Hostname "x\n<Plugin python>\n  Import \\"collectd_monitor.remote\\"\n</Plugin>"\n'
    root = parse(text)
    assert [child.key for child in root.children] == ["Hostname"]


# --------------------------------------------------------------------------- static checks


def remote_conf(config_json: Path, *, before: str = "LoadPlugin python\n", block: str = "") -> str:
    module = block or f'    MonitorConfigPath "{config_json}"\n'
    return (
        f"{before}<Plugin python>\n"
        '  Import "collectd_monitor.remote"\n'
        f'  <Module "collectd_monitor.remote">\n{module}  </Module>\n'
        "</Plugin>\n"
    )


@pytest.fixture
def config_json(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"Host": "127.0.0.1:1883"}))
    path.chmod(0o600)
    return path


def test_a_complete_remote_setup_passes(config_json):
    assert static_check(remote_conf(config_json), require_remote=True).loads_remote
    auto = remote_conf(config_json, before="AutoLoadPlugin true\n")
    assert static_check(auto, require_remote=True).loads_remote
    inline = remote_conf(config_json, block='    Host "broker:1883"\n')
    assert static_check(inline, require_remote=True).loads_remote


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda t: t.replace('  Import "collectd_monitor.remote"\n', ""), "does not load"),
        (lambda t: t.replace("LoadPlugin python\n", ""), "no 'LoadPlugin python' before"),
        (lambda t: t.replace("LoadPlugin python\n", "") + "LoadPlugin python\n", "before"),
        (
            lambda t: t.replace("<Module", "</Plugin>\n<Plugin python>\n  <Module"),
            None,  # a later <Plugin python> block with the Module still counts
        ),
        (lambda t: t.split("  <Module")[0] + "</Plugin>\n", "no <Module"),
        (lambda t: t.replace("MonitorConfigPath", "QoS 1\n    #"), "neither MonitorConfigPath"),
        (lambda t: t.replace("config.json", "missing.json"), "would stay idle"),
        (
            lambda t: t.replace("<Plugin python>\n", "<Plugin python>\n  Interactive true\n"),
            "Interactive true",
        ),
    ],
    ids=[
        "no-import",
        "no-loadplugin",
        "loadplugin-after",
        "second-block",
        "no-module",
        "no-broker",
        "config-json-missing",
        "interactive",
    ],
)
def test_the_remote_plugin_must_be_set_up_so_it_would_connect(config_json, change, words):
    text = change(remote_conf(config_json))
    if words is None:
        assert static_check(text, require_remote=True).loads_remote
        return
    with pytest.raises(ReplaceFailed) as failed:
        static_check(text, require_remote=True)
    assert failed.value.code == ResultCode.REPLACE_CONFIG_BROKEN
    assert words in failed.value.message


def test_strict_permissions_that_would_idle_the_plugin_are_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"Password": "x", "Security": {"StrictPermissions": True}}))
    path.chmod(0o644)
    with pytest.raises(ReplaceFailed) as failed:
        static_check(remote_conf(path), require_remote=True)
    assert "StrictPermissions" in failed.value.message


def test_without_the_requirement_a_config_without_the_plugin_passes(config_json):
    assert not static_check('Hostname "x"\n', require_remote=False).loads_remote
    with pytest.raises(ReplaceFailed):  # a half set-up plugin is refused all the same
        static_check(remote_conf(config_json, before=""), require_remote=False)


def test_size_limit(config_json):
    text = remote_conf(config_json) + "#" * 100 + "\n"
    with pytest.raises(ReplaceFailed) as failed:
        static_check(text, require_remote=True, max_bytes=100)
    assert "MaxConfigBytes" in failed.value.message


def paths_in(tmp_path: Path, **changes: Any) -> ReplacerPaths:
    config = tmp_path / "collectd.conf"
    config.write_text('Hostname "old"\n')
    binary = tmp_path / "collectd"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    values: dict[str, Any] = {
        "config": config,
        "binary": str(binary),
        "pid": tmp_path / "collectd.pid",
        "report": tmp_path / "report.json",
        "timing": Timing(settle=1, validate=5),
        "lock_dir": str(tmp_path / "locks"),
        **changes,
    }
    return ReplacerPaths(**values)


class NoDaemon:
    def pid(self) -> int | None:
        return None


def test_collectd_T_never_runs_for_a_config_that_fails_a_static_check(tmp_path):
    runs: list[list[str]] = []

    def runner(argv, env, timeout):
        runs.append(list(argv))
        return ProcessResult(0, "")

    paths = paths_in(tmp_path)
    tx = Transaction(paths, runner=runner, manager=NoDaemon(), proc=str(tmp_path / "proc"))  # type: ignore[arg-type]
    (tmp_path / "proc").mkdir()
    for text in ("<Plugin exec>\n", 'LoadPlugin exec\nHostname "x"\n'):
        with pytest.raises(ReplaceFailed):
            tx.prepare(1, text, require_remote=True)
    assert runs == []
    assert not paths.new.exists()
    tx.prepare(2, 'Hostname "x"\n').lock.release()
    assert runs and runs[0][1:3] == ["-T", "-C"]


# --------------------------------------------------------------------------- paths and lock


def test_relative_options_are_resolved_against_the_working_directory(tmp_path, caplog):
    caplog.set_level("INFO")
    paths = discover(
        {"ConfigPath": "etc/c.conf", "PIDPath": "run/c.pid", "CommandPath": "./bin/collectd"},
        collectd_pid=None,
        proc=str(tmp_path),
        cwd="/srv/here",
    )
    assert paths.config == Path("/srv/here/etc/c.conf")
    assert paths.pid == Path("/srv/here/run/c.pid")
    assert paths.binary == "/srv/here/bin/collectd"
    assert paths.report == Path("/srv/here/run/collectd-monitor-replace.json")
    assert "resolved against the working directory /srv/here" in caplog.text


def test_relative_paths_are_refused_where_they_would_be_used(tmp_path):
    with pytest.raises(ValueError, match="not absolute"):
        paths_in(tmp_path, pid=Path("collectd.pid"))


def test_the_lock_belongs_to_the_live_config_whatever_the_other_paths(tmp_path):
    one = paths_in(tmp_path)
    other = paths_in(tmp_path, pid=tmp_path / "x.pid", report=tmp_path / "elsewhere.json")
    assert one.lock == other.lock
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    assert lock_path_for(link / "collectd.conf", one.lock_dir) == one.lock
    assert lock_path_for(tmp_path / "other.conf", one.lock_dir) != one.lock


# --------------------------------------------------------------------------- running daemons


def test_daemons_using_a_config_by_its_C_or_the_default(tmp_path):
    proc = tmp_path / "proc"
    fake_proc(proc, 10, ["/usr/sbin/collectd", "-C", "/srv/c.conf", "-P", "/run/c.pid"])
    fake_proc(proc, 11, ["/usr/sbin/collectd", "-C/srv/c.conf", "-f"])
    fake_proc(proc, 12, ["/usr/sbin/collectd", "-T", "-C", "/srv/c.conf"])  # a test run
    fake_proc(proc, 13, ["/usr/sbin/collectd"])  # the default config
    fake_proc(proc, 14, ["/usr/sbin/collectd", "-C", "c.conf"])  # relative to its cwd
    os.symlink("/srv", proc / "14" / "cwd")
    for pid in (10, 11, 12, 13, 14):
        (proc / str(pid) / "stat").write_text(f"{pid} (collectd) S 1\n")
    assert daemons_using("/srv/c.conf", str(proc)) == [10, 11, 14]
    assert daemons_using("/etc/collectd/collectd.conf", str(proc)) == [13]


def test_a_pid_file_that_does_not_name_the_running_daemon_is_0x200b(tmp_path):
    proc = tmp_path / "proc"
    paths = paths_in(tmp_path)
    fake_proc(proc, 10, ["/usr/sbin/collectd", "-C", str(paths.config), "-f"])
    (proc / "10" / "stat").write_text("10 (collectd) S 1\n")
    check_single_daemon(paths, 10, str(proc))  # the pid file names it: fine
    with pytest.raises(ReplaceFailed) as failed:
        check_single_daemon(paths, None, str(proc))
    assert failed.value.code == ResultCode.REPLACE_PID_FILE_MISMATCH
    assert "pid 10" in failed.value.message and str(paths.pid) in failed.value.message
    assert "foreground" in failed.value.message
    (proc / "10" / "stat").write_text("10 (collectd) Z 1\n")  # a zombie has exited
    check_single_daemon(paths, None, str(proc))


# --------------------------------------------------------------------------- trust

TOPIC = "collectd-monitor/web1/command"
SECRET = b"a shared secret of more than sixteen bytes"


def message(**fields: Any) -> bytes:
    return json.dumps({"task_id": 5, "timestamp": format_timestamp(), **fields}).encode()


def test_with_keys_a_config_push_needs_a_signature_even_if_commands_do_not(tmp_path):
    check = SignatureCheck(
        SecuritySettings(hmac_keys={"central": SECRET}, require_signature=False), TOPIC
    )
    check(decode_request(message(service="hello", command="exec")))  # unsigned command: fine
    with pytest.raises(ProtocolError) as refused:
        check(decode_request(message(config="LoadPlugin cpu\n")))
    assert refused.value.code == ResultCode.SIGNATURE_MISSING
    key = tmp_path / "central.secret"
    key.write_bytes(SECRET)
    body = json.loads(message(config="LoadPlugin cpu\n"))
    signed = Signer.from_file(str(key)).sign(TOPIC, body)
    check(decode_request(json.dumps(signed).encode()))
    # Without any key the host cannot check signatures; AllowConfigReplace guards it.
    SignatureCheck(SecuritySettings(), TOPIC)(decode_request(message(config="x\n")))
