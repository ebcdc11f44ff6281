"""The remote plugin inside a real collectd, driven over a real mosquitto."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import format_timestamp
from collectd_monitor.testing.sandbox import wait_for

from ..conftest import command_message, next_task_id, pids_of

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "collectd_monitor"]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def send_args(m, *extra: str) -> list[str]:
    return [
        "--host",
        m.broker.host,
        "--topic",
        m.command_topic,
        "--result-topic",
        m.result_topic,
        *extra,
    ]


def test_hello_exec_round_trip_with_the_cli(monitor):
    m = monitor()
    done = cli("send-command", "hello", "exec", *send_args(m))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["code"] == 0
    assert result["message"] == "Hello World!"
    assert set(result) == {"task_id", "timestamp", "message", "code", "stderr"}
    assert result["stderr"] == ""
    m.collectd.wait_log("hello/exec ended with code 0 \\(success\\)")


def test_original_sender_shape_is_answered_in_the_original_shape(monitor, peer):
    m = monitor()
    p = peer(m)
    # Exactly as the Lua sender sends it: key order varies, task_id up to 2^32.
    raw = (
        f'{{"timestamp":"{format_timestamp()}","service":"hello",'
        '"task_id":3126260400,"command":"exec"}'
    )
    p.send(m.command_topic, raw, qos=2)
    result = p.result_for(m.result_topic, 3126260400)
    assert result["message"] == "Hello World!"
    assert result["code"] == 0
    assert isinstance(result["task_id"], int)
    assert isinstance(result["timestamp"], str) and result["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    ("service", "command", "code"),
    [
        ("nosuch", "exec", ResultCode.UNKNOWN_SERVICE),
        ("hello", "nosuch", ResultCode.UNKNOWN_COMMAND),
    ],
)
def test_unknown_service_and_command(monitor, peer, service, command, code):
    m = monitor()
    p = peer(m)
    message = command_message(service, command)
    p.send(m.command_topic, message)
    result = p.result_for(m.result_topic, message["task_id"])
    assert result["code"] == code
    assert "unknown" in result["message"]


def test_no_services_configured(monitor, peer):
    m = monitor(services={})
    p = peer(m)
    message = command_message("hello", "exec")
    p.send(m.command_topic, message)
    assert p.result_for(m.result_topic, message["task_id"])["code"] == ResultCode.NO_SERVICES


def test_cli_exit_status_for_a_failed_remote_command(monitor):
    m = monitor()
    done = cli("send-command", "hello", "nosuch", *send_args(m))
    assert done.returncode == 1
    assert json.loads(done.stdout)["code"] == ResultCode.UNKNOWN_COMMAND


@pytest.mark.parametrize(
    ("task_id", "payload", "code"),
    [
        (41, b'{"task_id": 41, "service": "hello", "command": ', ResultCode.MALFORMED_JSON),
        (
            42,
            b'{"task_id": 42, "timestamp": "2020-11-26T00:41:19Z", "service": "hello"}',
            ResultCode.MISSING_FIELD,
        ),
        (43, b'{"task_id": 43, "service": "hello", "command": "exec"}', ResultCode.MISSING_FIELD),
        (
            44,
            b'{"task_id": 44, "timestamp": "2020-11-26T00:41:19Z", "service": 1, "command": "x"}',
            ResultCode.INVALID_FIELD,
        ),
        (
            45,
            b'{"task_id": 45, "timestamp": 7, "service": "hello", "command": "exec"}',
            ResultCode.INVALID_FIELD,
        ),
        (
            "46",
            b'{"task_id": "46", "timestamp": "2020-11-26T00:41:19Z", "service": "hello", '
            b'"command": "exec"}',
            ResultCode.INVALID_FIELD,
        ),
        (
            47,
            b'{"task_id": 47, "timestamp": "yesterday", "service": "hello", "command": "exec"}',
            ResultCode.INVALID_FIELD,
        ),
    ],
    ids=[
        "truncated-json",
        "no-command",
        "no-timestamp",
        "service-not-string",
        "timestamp-not-string",
        "task-id-string",
        "timestamp-not-iso",
    ],
)
def test_bad_messages_get_their_code_and_nothing_runs(monitor, peer, task_id, payload, code):
    m = monitor(services={"hello": {"commands": {"exec": "touch ran-it"}}})
    p = peer(m)
    p.send(m.command_topic, payload)
    result = p.result_for(m.result_topic, task_id)
    assert result["code"] == code
    assert not list(m.collectd.directory.rglob("ran-it"))


def test_messages_without_task_id_are_logged_and_plugin_keeps_serving(monitor, peer):
    m = monitor()
    p = peer(m)
    for junk in (b"\xff\xfe", b"[1,2]", b"null", b'{"service": "hello", "command": "exec"}', b""):
        p.send(m.command_topic, junk)
    message = command_message("hello", "exec")
    p.send(m.command_topic, message)
    assert p.result_for(m.result_topic, message["task_id"])["code"] == 0
    assert "without a usable task_id" in m.log()
    assert len(p.results(m.result_topic)) == 1


def test_duplicate_task_id_is_refused_after_the_first_run(monitor, peer):
    m = monitor(services={"hello": {"commands": {"exec": "echo run >> runs.txt; echo ok"}}})
    p = peer(m)
    message = command_message("hello", "exec")
    p.send(m.command_topic, message)
    assert p.result_for(m.result_topic, message["task_id"])["code"] == 0
    p.send(m.command_topic, message)
    wait_for(lambda: len(p.results(m.result_topic)) == 2, 10, what="second result")
    codes = [r["code"] for r in p.results(m.result_topic)]
    assert codes == [0, ResultCode.DUPLICATE_TASK]


def test_true_exit_status_is_reported(monitor, peer):
    m = monitor(
        services={"svc": {"commands": {"fail": "echo partial; exit 42", "signal": "kill -TERM $$"}}}
    )
    p = peer(m)
    first, second = command_message("svc", "fail"), command_message("svc", "signal")
    p.send(m.command_topic, first)
    p.send(m.command_topic, second)
    result = p.result_for(m.result_topic, first["task_id"])
    assert (result["code"], result["message"]) == (42, "partial")
    assert p.result_for(m.result_topic, second["task_id"])["code"] == 128 + signal.SIGTERM


def test_timeout_kills_the_whole_process_group(monitor, peer):
    marker = f"cm-timeout-{uuid.uuid4().hex[:8]}"
    line = f"sh -c 'sleep 300; echo {marker}' & sleep 301; echo never {marker}"
    m = monitor(services={"svc": {"commands": {"hang": {"command": line, "timeout": 1}}}})
    p = peer(m)
    message = command_message("svc", "hang")
    p.send(m.command_topic, message)
    wait_for(lambda: pids_of(marker), 10, what="the command's processes")
    result = p.result_for(m.result_topic, message["task_id"], timeout=20)
    assert result["code"] == ResultCode.COMMAND_TIMEOUT
    assert "timed out" in result["message"]
    wait_for(lambda: not pids_of(marker), 10, what="the process group to be gone")


def test_global_command_timeout(monitor, peer):
    m = monitor({"CommandTimeout": 0.5}, services={"svc": {"commands": {"hang": "sleep 60"}}})
    p = peer(m)
    message = command_message("svc", "hang")
    p.send(m.command_topic, message)
    assert (
        p.result_for(m.result_topic, message["task_id"], 20)["code"] == ResultCode.COMMAND_TIMEOUT
    )


def test_output_over_the_cap_is_cut_with_a_marker(monitor, peer):
    m = monitor(
        {"MaxOutputBytes": 1000},
        services={"svc": {"commands": {"flood": "head -c 200000 /dev/zero | tr '\\0' x"}}},
    )
    p = peer(m)
    message = command_message("svc", "flood")
    p.send(m.command_topic, message)
    result = p.result_for(m.result_topic, message["task_id"])
    assert result["code"] == 0
    assert result["message"].startswith("x" * 1000)
    assert "[output cut at 1000 bytes of 200000]" in result["message"]
    assert len(result["message"]) < 1100


def test_a_slow_command_does_not_hold_up_others(monitor, peer):
    m = monitor(services={"svc": {"commands": {"slow": "sleep 3; echo slow", "fast": "echo fast"}}})
    p = peer(m)
    slow, fast = command_message("svc", "slow"), command_message("svc", "fast")
    p.send(m.command_topic, slow)
    p.send(m.command_topic, fast)
    assert p.result_for(m.result_topic, fast["task_id"])["message"] == "fast"
    assert all(r["task_id"] != slow["task_id"] for r in p.results(m.result_topic))
    assert p.result_for(m.result_topic, slow["task_id"])["message"] == "slow"


def test_wrong_password_is_refused_and_right_one_works(monitor, broker, certs):
    m = monitor(
        {
            "Host": f"127.0.0.1:{broker.password_port}",
            "User": broker.user,
            "Password": broker.password,
        }
    )
    args = [
        "--host",
        f"127.0.0.1:{broker.password_port}",
        "--topic",
        m.command_topic,
        "--result-topic",
        m.result_topic,
    ]
    bad = cli("send-command", "hello", "exec", *args, "--user", broker.user, "--password", "wrong")
    assert bad.returncode == 4
    assert "refused" in bad.stderr
    good = cli(
        "send-command", "hello", "exec", *args, "--user", broker.user, "--password", broker.password
    )
    assert good.returncode == 0, good.stderr
    assert broker.password not in m.log()


def test_plugin_with_wrong_password_logs_refusal_without_the_password(monitor, broker):
    secret = "not-the-password-" + uuid.uuid4().hex[:6]
    m = monitor(
        {
            "Host": f"127.0.0.1:{broker.password_port}",
            "User": broker.user,
            "Password": secret,
            "LogLevel": "debug",
        },
        wait_connected=False,
    )
    m.collectd.wait_log("refused us")
    assert secret not in m.log()
    assert m.collectd.pid() is not None


def test_tls_with_trusted_ca_works_and_untrusted_is_refused(monitor, broker, certs):
    m = monitor({"Host": f"127.0.0.1:{broker.tls_port}", "Secure": True, "CAFile": str(certs.ca)})
    args = [
        "--host",
        f"127.0.0.1:{broker.tls_port}",
        "--topic",
        m.command_topic,
        "--result-topic",
        m.result_topic,
    ]
    good = cli("send-command", "hello", "exec", *args, "--ca-file", str(certs.ca))
    assert good.returncode == 0, good.stderr
    bad = cli("send-command", "hello", "exec", *args, "--ca-file", str(certs.other_ca))
    assert bad.returncode == 4
    assert "certificate" in bad.stderr.lower()

    untrusting = monitor(
        {"Host": f"127.0.0.1:{broker.tls_port}", "Secure": True, "CAFile": str(certs.other_ca)},
        wait_connected=False,
    )
    untrusting.collectd.wait_log("certificate verify failed")
    assert "connected to" not in untrusting.log()


def test_mutual_tls(monitor, broker, certs):
    tls = {"Host": f"127.0.0.1:{broker.mtls_port}", "Secure": True, "CAFile": str(certs.ca)}
    m = monitor({**tls, "CertFile": str(certs.client_cert), "KeyFile": str(certs.client_key)})
    args = [
        "--host",
        f"127.0.0.1:{broker.mtls_port}",
        "--topic",
        m.command_topic,
        "--result-topic",
        m.result_topic,
        "--ca-file",
        str(certs.ca),
    ]
    good = cli(
        "send-command",
        "hello",
        "exec",
        *args,
        "--cert-file",
        str(certs.client_cert),
        "--key-file",
        str(certs.client_key),
    )
    assert good.returncode == 0, good.stderr
    without_cert = cli("send-command", "hello", "exec", *args)
    assert without_cert.returncode == 4


def test_cli_connection_failure_and_timeout_exit_codes(monitor):
    m = monitor()
    from collectd_monitor.testing.sandbox import free_port

    nobody = cli("send-command", "hello", "exec", "--host", f"127.0.0.1:{free_port()}")
    assert nobody.returncode == 4
    assert "cannot connect" in nobody.stderr
    silent = cli(
        "send-command",
        "hello",
        "exec",
        "--host",
        m.broker.host,
        "--topic",
        "test/nobody/listens",
        "--result-topic",
        "test/nobody/answers",
        "--timeout",
        "0.5",
    )
    assert silent.returncode == 3
    assert "no result" in silent.stderr


def test_broker_restart_then_next_command_is_served(monitor, fresh_broker, peer):
    m = monitor(broker=fresh_broker)
    fresh_broker.restart(down_for=0.5)
    m.collectd.wait_log(r"connected to .* \(again\)", timeout=20)
    done = cli("send-command", "hello", "exec", *send_args(m))
    assert done.returncode == 0, done.stderr + m.log()
    assert "lost connection" in m.log()


def test_missing_config_file_leaves_collectd_running_and_plugin_idle(monitor, tmp_path):
    missing = tmp_path / "nope.json"
    m = monitor(
        modules={"collectd_monitor.remote": {"MonitorConfigPath": str(missing)}},
        wait_connected=False,
    )
    m.collectd.wait_log("plugin stays idle")
    assert f"{missing}: file not found" in m.log()
    assert m.collectd.pid() is not None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "invalid JSON at line 1"),
        ('{"QoS": 5}', "key 'QoS': must be 0, 1 or 2"),
        ('{"Services": {"hello": {"commands": {"exec": 3}}}}', "Services.hello.commands.exec"),
    ],
)
def test_invalid_config_names_file_and_key(monitor, tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    m = monitor(
        modules={"collectd_monitor.remote": {"MonitorConfigPath": str(path)}}, wait_connected=False
    )
    line = m.collectd.wait_log(".*plugin stays idle").group(0)
    assert str(path) in line and expected in line
    assert m.collectd.pid() is not None


def test_module_block_options_are_merged_and_json_wins(monitor, broker, peer):
    m = monitor(
        {"QoS": 1},
        module_options={"QoS": 0, "CommandTimeout": 0.5},
        services={"svc": {"commands": {"hang": "sleep 30"}}},
    )
    p = peer(m)
    message = command_message("svc", "hang")
    p.send(m.command_topic, message)
    assert (
        p.result_for(m.result_topic, message["task_id"], 20)["code"] == ResultCode.COMMAND_TIMEOUT
    )


def test_prompt_shutdown_ends_running_commands_and_reports_them(monitor, peer):
    marker = f"cm-shutdown-{uuid.uuid4().hex[:8]}"
    m = monitor(services={"svc": {"commands": {"hang": f"sleep 200; echo {marker}"}}})
    p = peer(m)
    message = command_message("svc", "hang")
    p.send(m.command_topic, message)
    wait_for(lambda: pids_of(marker), 10, what="the command to start")
    m.collectd.stop(timeout=10)
    assert m.collectd.proc is None
    result = p.result_for(m.result_topic, message["task_id"])
    assert result["code"] == ResultCode.COMMAND_ABORTED
    assert "shutting down" in result["message"]
    wait_for(lambda: not pids_of(marker), 5, what="the command to be gone")
    assert "Exiting normally" in m.log()


def test_many_commands_at_once_are_all_answered(monitor, peer):
    m = monitor({"MaxConcurrentCommands": 2, "MaxQueuedCommands": 200})
    p = peer(m)
    ids = [next_task_id() for _ in range(50)]
    for task_id in ids:
        p.send(m.command_topic, command_message("hello", "exec", task_id), qos=1)
    wait_for(lambda: len(p.results(m.result_topic)) >= 50, 30, what="50 results")
    assert sorted(r["task_id"] for r in p.results(m.result_topic)) == sorted(ids)


def test_config_push_without_the_replacer_is_not_implemented(monitor, peer):
    m = monitor({"AllowConfigReplace": False})
    p = peer(m)
    task_id = next_task_id()
    p.send(
        m.command_topic,
        {"task_id": task_id, "timestamp": format_timestamp(), "config": "LoadPlugin cpu\n"},
    )
    result = p.result_for(m.result_topic, task_id)
    assert result["code"] == ResultCode.NOT_IMPLEMENTED
    assert m.collectd.pid() is not None


def test_the_demo_shows_the_whole_loop_and_leaves_nothing_running():
    done = cli("demo", timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert '"message": "Hello World!", "code": 0' in done.stdout
    assert "hello/exec ended with code 0 (success)" in said  # the task's end line
    assert "collectd stopped in" in said and "mosquitto stopped" in said
    match = re.search(r"collectd running \(pid (\d+)\)", said)
    assert match is not None, said
    assert not Path(f"/proc/{match[1]}").exists()
