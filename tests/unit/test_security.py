from __future__ import annotations

import datetime as dt
import json

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import decode_request
from collectd_monitor.commands.security import (
    FreshnessCheck,
    SignatureCheck,
    Signer,
    generate_keypair,
    signing_input,
)
from collectd_monitor.errors import ConfigError, ProtocolError
from collectd_monitor.security_config import (
    SecuritySettings,
    check_permissions,
    load_public_key,
    parse_security,
)

TOPIC = "collectd-monitor/web1/command"
MESSAGE = {"task_id": 7, "timestamp": "2026-11-23T10:00:00Z", "service": "nginx", "command": "é"}


def test_signing_input_is_canonical_golden_bytes():
    shuffled = dict(reversed(list(MESSAGE.items())))
    expected = (
        b"collectd-monitor/web1/command\n"
        b'{"command":"\\u00e9","service":"nginx","task_id":7,"timestamp":"2026-11-23T10:00:00Z"}'
    )
    assert signing_input(TOPIC, MESSAGE) == expected
    assert signing_input(TOPIC, {**shuffled, "signature": {"x": 1}}) == expected


@pytest.fixture
def ed_keys(tmp_path):
    private, public = generate_keypair(tmp_path / "ops")
    return Signer.from_file(str(private)), load_public_key(public.read_text())


def check(settings: SecuritySettings, fields: dict) -> None:
    request = decode_request(json.dumps(fields).encode())
    SignatureCheck(settings, TOPIC)(request)


def refusal(settings: SecuritySettings, fields: dict) -> int:
    with pytest.raises(ProtocolError) as info:
        check(settings, fields)
    return info.value.code


def test_ed25519_round_trip_and_failures(ed_keys, tmp_path):
    signer, public = ed_keys
    settings = SecuritySettings(ed25519_keys={"ops": public}, require_signature=True)
    signed = signer.sign(TOPIC, MESSAGE)
    assert signed["signature"]["key_id"] == "ops"
    check(settings, signed)
    assert refusal(settings, MESSAGE) == ResultCode.SIGNATURE_MISSING
    assert refusal(settings, {**signed, "command": "other"}) == ResultCode.SIGNATURE_INVALID
    other, _ = generate_keypair(tmp_path / "other")
    assert refusal(settings, Signer.from_file(str(other), "ops").sign(TOPIC, MESSAGE)) == (
        ResultCode.SIGNATURE_INVALID
    )
    assert refusal(settings, signer.sign("another/topic", MESSAGE)) == ResultCode.SIGNATURE_INVALID
    bad_b64 = {**signed, "signature": {**signed["signature"], "value": "!!"}}
    assert refusal(settings, bad_b64) == ResultCode.SIGNATURE_INVALID
    assert refusal(settings, {**signed, "signature": "abc"}) == ResultCode.SIGNATURE_INVALID


def test_hmac_and_optional_signatures(tmp_path):
    secret = tmp_path / "central.secret"
    secret.write_text("0123456789abcdef0123\n")
    signer = Signer.from_file(str(secret))
    assert (signer.alg, signer.key_id) == ("hmac-sha256", "central")
    settings = SecuritySettings(hmac_keys={"central": b"0123456789abcdef0123"})
    check(settings, signer.sign(TOPIC, MESSAGE))
    check(settings, MESSAGE)  # not required: unsigned passes
    forged = Signer("hmac-sha256", "central", b"wrong-secret-wrong").sign(TOPIC, MESSAGE)
    assert refusal(settings, forged) == ResultCode.SIGNATURE_INVALID


def test_freshness_with_an_injected_clock():
    now = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.UTC)
    fresh = FreshnessCheck(300, 60, clock=lambda: now)

    def at(seconds: int):
        when = (now + dt.timedelta(seconds=seconds)).isoformat()
        return decode_request(json.dumps({**MESSAGE, "timestamp": when}).encode())

    fresh(at(-299))
    fresh(at(59))
    for seconds, code in ((-301, ResultCode.MESSAGE_EXPIRED), (61, ResultCode.MESSAGE_FROM_FUTURE)):
        with pytest.raises(ProtocolError) as info:
            fresh(at(seconds))
        assert info.value.code == code
    FreshnessCheck(0, 0, clock=lambda: now)(at(-(10**6)))  # 0 turns the check off


def test_parse_security(tmp_path, ed_keys):
    signer, _public = ed_keys
    source = str(tmp_path / "config.json")
    settings = parse_security({"Ed25519Keys": {"ops": {"File": "ops.pub"}}}, source=source)
    assert settings.require_signature and "ops" in settings.ed25519_keys
    # the key file, found relative to config.json, is the very key that signs
    check(settings, signer.sign(TOPIC, MESSAGE))
    other, _ = generate_keypair(tmp_path / "other")
    forged = Signer.from_file(str(other), "ops").sign(TOPIC, MESSAGE)
    assert refusal(settings, forged) == ResultCode.SIGNATURE_INVALID
    assert not parse_security(None, source=None).require_signature
    lax = parse_security({"HmacKeys": {"c": "x" * 16}, "RequireSignature": False}, source=source)
    assert not lax.require_signature and lax.secrets == ("x" * 16,)
    bad = [
        ({"HmacKeys": {"c": "short"}}, "Security.HmacKeys.c"),
        ({"RequireSignature": True}, "Security.RequireSignature"),
        ({"Ed25519Keys": {"k": "bm90IGEga2V5"}}, "Security.Ed25519Keys.k"),
        ({"Ed25519Keys": {"k": {"File": "missing.pub"}}}, "Security.Ed25519Keys.k"),
        ({"MaxMessageAge": -1}, "Security.MaxMessageAge"),
        ({"Bogus": 1}, "Security.Bogus"),
    ]
    for value, key in bad:
        with pytest.raises(ConfigError) as info:
            parse_security(value, source=source)
        assert info.value.key == key


def test_permission_check(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{}")
    path.chmod(0o600)
    assert check_permissions(str(path), True) is None
    path.chmod(0o644)
    assert "chmod 600" in (check_permissions(str(path), True) or "")
    assert check_permissions(str(path), False) is None
