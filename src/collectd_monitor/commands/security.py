"""Signed and fresh messages: who may make a host act, and when.

Signature (optional for commands; required once a host names verification
keys). A config push is root on the host, so on a host that has any key it
must be signed even when ``RequireSignature`` is false. A signed message
carries one more field::

    "signature": {"alg": "ed25519" | "hmac-sha256", "key_id": "<name>", "value": "<base64>"}

The signature covers the **signing input**: the command topic the message is
published to, a newline, then the message *without* its ``signature`` field as
canonical JSON (keys sorted, no whitespace, non-ASCII escaped)::

    collectd-monitor/web1/command
    {"command":"restart","service":"nginx","task_id":3126260400,"timestamp":"2026-11-23T10:00:00Z"}

Binding the topic stops a message signed for one host from being replayed to
another; binding ``task_id`` and ``timestamp`` lets the freshness window and the
persisted seen set stop replays to the same host.

Freshness (on by default): a message older than ``MaxMessageAge`` seconds, or
dated more than ``MaxClockSkew`` seconds in the future, is refused.

The settings (keys, limits) are read with the rest of the config, by
:mod:`collectd_monitor.security_config`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import ConfigRequest, Request, utc_now
from collectd_monitor.errors import ProtocolError
from collectd_monitor.logsetup import quote
from collectd_monitor.security_config import SecuritySettings, ed25519_module

ED25519 = "ed25519"
HMAC_SHA256 = "hmac-sha256"


def signing_input(topic: str, fields: Mapping[str, Any]) -> bytes:
    body = {key: value for key, value in fields.items() if key != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return topic.encode("utf-8") + b"\n" + canonical.encode("ascii")


# --------------------------------------------------------------------------- keys


def generate_keypair(prefix: Path) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (private, PEM, mode 0600) and ``PREFIX.pub`` (public, PEM)."""
    from cryptography.hazmat.primitives import serialization

    key = ed25519_module().Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_path, pub_path = prefix.with_suffix(".key"), prefix.with_suffix(".pub")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    pub_path.write_bytes(public)
    return key_path, pub_path


@dataclass(frozen=True)
class Signer:
    """Signs outgoing messages (the sender's side)."""

    alg: str
    key_id: str
    secret: Any = field(repr=False)

    @classmethod
    def from_file(cls, path: str, key_id: str | None = None) -> Signer:
        """An Ed25519 private key (PEM) or, for any other file, an HMAC secret."""
        data = Path(path).read_bytes()
        key_id = key_id or Path(path).stem
        if data.lstrip().startswith(b"-----BEGIN"):
            from cryptography.hazmat.primitives import serialization

            key = serialization.load_pem_private_key(data, password=None)
            if not isinstance(key, ed25519_module().Ed25519PrivateKey):
                raise ValueError(f"{path}: not an Ed25519 private key")
            return cls(ED25519, key_id, key)
        return cls(HMAC_SHA256, key_id, data.strip())

    def sign(self, topic: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        message = signing_input(topic, fields)
        if self.alg == ED25519:
            value = self.secret.sign(message)
        else:
            value = hmac.new(self.secret, message, hashlib.sha256).digest()
        signature = {
            "alg": self.alg,
            "key_id": self.key_id,
            "value": base64.b64encode(value).decode(),
        }
        return {**fields, "signature": signature}


# --------------------------------------------------------------------------- checks


class SignatureCheck:
    """Refuses unsigned (when required) and badly signed messages.

    Config pushes need a signature on any host with a key, whatever
    ``RequireSignature`` says: accepting one is equivalent to root on the host.
    """

    def __init__(self, settings: SecuritySettings, topic: str) -> None:
        self.settings = settings
        self.topic = topic

    def __call__(self, request: Request) -> None:
        task_id = request.task_id
        signature = request.fields.get("signature")
        if signature is None:
            if self.settings.require_signature:
                raise ProtocolError(ResultCode.SIGNATURE_MISSING, "message is not signed", task_id)
            if isinstance(request, ConfigRequest) and self.settings.has_keys:
                raise ProtocolError(
                    ResultCode.SIGNATURE_MISSING,
                    "config push is not signed; this host has signing keys and accepts "
                    "only signed config pushes",
                    task_id,
                )
            return
        if not isinstance(signature, Mapping) or not all(
            isinstance(signature.get(k), str) for k in ("alg", "key_id", "value")
        ):
            raise ProtocolError(
                ResultCode.SIGNATURE_INVALID,
                "signature must be an object with string alg, key_id and value",
                task_id,
            )
        alg, key_id = signature["alg"], signature["key_id"]
        try:
            value = base64.b64decode(signature["value"], validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(
                ResultCode.SIGNATURE_INVALID, "signature is not base64", task_id
            ) from None
        message = signing_input(self.topic, request.fields)
        if alg == ED25519 and key_id in self.settings.ed25519_keys:
            try:
                self.settings.ed25519_keys[key_id].verify(value, message)
                return
            except Exception:  # cryptography's InvalidSignature, or a malformed value
                pass
        elif alg == HMAC_SHA256 and key_id in self.settings.hmac_keys:
            expected = hmac.new(self.settings.hmac_keys[key_id], message, hashlib.sha256).digest()
            if hmac.compare_digest(expected, value):
                return
        else:
            raise ProtocolError(
                ResultCode.SIGNATURE_INVALID,
                f"no {quote(alg, 20)} key named {quote(key_id)} on this host",
                task_id,
            )
        raise ProtocolError(
            ResultCode.SIGNATURE_INVALID, f"bad {alg} signature (key {quote(key_id)})", task_id
        )


class FreshnessCheck:
    """Refuses messages that are too old or dated too far in the future."""

    def __init__(
        self, max_age: float, max_skew: float, clock: Callable[[], dt.datetime] = utc_now
    ) -> None:
        self.max_age = max_age
        self.max_skew = max_skew
        self.clock = clock

    def __call__(self, request: Request) -> None:
        if self.max_age <= 0:
            return
        age = (self.clock() - request.sent_at).total_seconds()
        if age > self.max_age:
            raise ProtocolError(
                ResultCode.MESSAGE_EXPIRED,
                f"message is {age:.0f} s old; this host accepts at most {self.max_age:g} s",
                request.task_id,
            )
        if -age > self.max_skew:
            raise ProtocolError(
                ResultCode.MESSAGE_FROM_FUTURE,
                f"message is dated {-age:.0f} s in the future; allowed skew is {self.max_skew:g} s",
                request.task_id,
            )
