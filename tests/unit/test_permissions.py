"""Permission checks of the files that decide what runs as root (real files, real owners)."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from collectd_monitor.config import load_config
from collectd_monitor.permissions import check_all, collectd_conf_path
from collectd_monitor.security_config import ed25519_module

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
SECRET = "a-shared-secret-of-enough-length"


def nobody() -> int:
    return pwd.getpwnam("nobody").pw_uid


def write_config(tmp_path: Path, extra: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"Services": {}, **(extra or {})}))
    path.chmod(0o600)
    return path


def findings(path: Path, **kwargs: Any) -> list[str]:
    config = load_config({"MonitorConfigPath": str(path)}, hostname="test")
    return [str(f) for f in check_all(config, **kwargs)]


def public_key_text() -> str:
    import base64

    from cryptography.hazmat.primitives import serialization

    key = ed25519_module().Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def test_a_tidy_setup_has_no_findings(tmp_path):
    (tmp_path / "ops.pub").write_text(public_key_text())
    (tmp_path / "ops.pub").chmod(0o644)
    (tmp_path / "central.secret").write_text(SECRET)
    (tmp_path / "central.secret").chmod(0o600)
    rules = tmp_path / "rules"
    rules.mkdir(mode=0o755)
    (rules / "disk.py").write_text("metric_handlers = {}\n")
    (rules / "disk.py").chmod(0o644)
    path = write_config(
        tmp_path,
        {
            "LocalMonitorConfigDir": str(rules),
            "Security": {
                "Ed25519Keys": {"ops": {"File": "ops.pub"}},
                "HmacKeys": {"central": {"File": "central.secret"}},
            },
        },
    )
    assert findings(path) == []


@needs_root
def test_a_config_owned_by_another_user(tmp_path):
    path = write_config(tmp_path)
    os.chown(path, nobody(), -1)
    (found,) = findings(path)
    assert f"owned by uid {nobody()}" in found and f"chown root:root {path}" in found


def test_a_readable_config_with_a_password(tmp_path):
    path = write_config(tmp_path, {"Password": "pw"})
    path.chmod(0o644)
    (found,) = findings(path)
    assert str(path) in found and f"chmod 600 {path}" in found and "pw" not in found.split()


def test_a_world_writable_public_key_file(tmp_path):
    key = tmp_path / "ops.pub"
    key.write_text(public_key_text())
    key.chmod(0o666)
    path = write_config(tmp_path, {"Security": {"Ed25519Keys": {"ops": {"File": "ops.pub"}}}})
    (found,) = findings(path)
    assert "public key" in found and "mode 0666" in found and f"chmod go-w {key}" in found


def test_an_hmac_secret_file_readable_by_others(tmp_path):
    secret = tmp_path / "central.secret"
    secret.write_text(SECRET)
    secret.chmod(0o644)
    path = write_config(
        tmp_path, {"Security": {"HmacKeys": {"central": {"File": "central.secret"}}}}
    )
    (found,) = findings(path)
    assert "HMAC secret" in found and f"chmod 600 {secret}" in found


def test_rule_files_and_their_folder_writable_by_others(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    rules.chmod(0o777)
    (rules / "disk.py").write_text("metric_handlers = {}\n")
    (rules / "disk.py").chmod(0o664)
    path = write_config(tmp_path, {"LocalMonitorConfigDir": str(rules)})
    found = findings(path)
    assert len(found) == 2
    assert "code run as root" in found[0] and f"chmod go-w {rules}" in found[0]
    assert f"chmod go-w {rules / 'disk.py'}" in found[1]


@needs_root
def test_a_rule_file_owned_by_another_user(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir(mode=0o755)
    (rules / "disk.py").write_text("metric_handlers = {}\n")
    os.chown(rules / "disk.py", nobody(), -1)
    path = write_config(tmp_path, {"LocalMonitorConfigDir": str(rules)})
    (found,) = findings(path)
    assert f"owned by uid {nobody()}" in found and "chown root:root" in found


def test_a_password_in_a_world_readable_collectd_conf(tmp_path):
    conf = tmp_path / "collectd.conf"
    conf.write_text('<Module "collectd_monitor.remote">\n  Password "pw"\n</Module>\n')
    conf.chmod(0o644)
    path = write_config(tmp_path)
    block = {"MonitorConfigPath": str(path), "Password": "pw"}
    (found,) = findings(path, module_options=block, collectd_conf=str(conf))
    assert "readable by others" in found and f"chmod o-r {conf}" in found
    conf.chmod(0o640)
    assert findings(path, module_options=block, collectd_conf=str(conf)) == []
    conf.chmod(0o644)
    no_secret = {"MonitorConfigPath": str(path)}
    assert findings(path, module_options=no_secret, collectd_conf=str(conf)) == []


def test_collectd_conf_comes_from_the_command_line():
    assert collectd_conf_path(["collectd", "-C", "/x.conf", "-f"]) == "/x.conf"
    assert collectd_conf_path(["collectd", "-C/y.conf"]) == "/y.conf"
    assert collectd_conf_path(["python3", "-m", "pytest"]) == "/etc/collectd/collectd.conf"
