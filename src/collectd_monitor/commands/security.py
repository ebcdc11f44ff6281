"""Signed and fresh messages: who may make a host act, and when.

Signature (optional; required once a host names verification keys). A signed
message carries one more field::

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
from collectd_monitor.commands.protocol import Request, utc_now
from collectd_monitor.errors import ConfigError, ProtocolError

ED25519 = "ed25519"
HMAC_SHA256 = "hmac-sha256"
DEFAULT_MAX_AGE = 300.0
DEFAULT_MAX_SKEW = 60.0


def signing_input(topic: str, fields: Mapping[str, Any]) -> bytes:
    body = {key: value for key, value in fields.items() if key != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return topic.encode("utf-8") + b"\n" + canonical.encode("ascii")


# --------------------------------------------------------------------------- keys


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - cryptography is a dependency
        raise ConfigError("Ed25519 keys need the 'cryptography' package") from exc
    return ed25519


def generate_keypair(prefix: Path) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (private, PEM, mode 0600) and ``PREFIX.pub`` (public, PEM)."""
    from cryptography.hazmat.primitives import serialization

    key = _crypto().Ed25519PrivateKey.generate()
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


def load_public_key(text: str) -> Any:
    """A PEM public key, or the raw 32-byte key in base64."""
    from cryptography.hazmat.primitives import serialization

    ed25519 = _crypto()
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(stripped.encode())
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    raw = base64.b64decode(stripped, validate=True)
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


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
            if not isinstance(key, _crypto().Ed25519PrivateKey):
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


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SecuritySettings:
    ed25519_keys: Mapping[str, Any] = field(default_factory=dict, repr=False)
    hmac_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    require_signature: bool = False
    max_message_age: float = DEFAULT_MAX_AGE
    max_clock_skew: float = DEFAULT_MAX_SKEW
    strict_permissions: bool = False

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(key.decode(errors="replace") for key in self.hmac_keys.values())


def _read_key_material(value: Any, base: Path, where: str, source: str | None) -> str:
    """Inline text, or ``{"File": path}`` (relative to config.json's directory)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        files = [v for k, v in value.items() if k.lower() == "file"]
        if len(files) == 1 and isinstance(files[0], str):
            path = base / files[0]
            try:
                return path.read_text()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read {path}: {exc.strerror}", path=source, key=where
                ) from None
    raise ConfigError('expected a key string or {"File": "path"}', path=source, key=where)


def parse_security(value: Any, *, source: str | None) -> SecuritySettings:
    if value is None:
        return SecuritySettings()
    if not isinstance(value, Mapping):
        raise ConfigError("expected an object", path=source, key="Security")
    base = Path(source).parent if source else Path(".")
    options = {key.lower(): (key, item) for key, item in value.items()}
    known = {
        "ed25519keys",
        "hmackeys",
        "requiresignature",
        "maxmessageage",
        "maxclockskew",
        "strictpermissions",
    }
    for lower, (key, _) in options.items():
        if lower not in known:
            raise ConfigError("unknown option", path=source, key=f"Security.{key}")

    def get(name: str, default: Any) -> Any:
        return options.get(name, (None, default))[1]

    ed25519_keys: dict[str, Any] = {}
    for key_id, material in (get("ed25519keys", {}) or {}).items():
        where = f"Security.Ed25519Keys.{key_id}"
        text = _read_key_material(material, base, where, source)
        try:
            ed25519_keys[key_id] = load_public_key(text)
        except (ValueError, binascii.Error) as exc:
            raise ConfigError(
                f"not an Ed25519 public key ({exc})", path=source, key=where
            ) from None
    hmac_keys: dict[str, bytes] = {}
    for key_id, material in (get("hmackeys", {}) or {}).items():
        where = f"Security.HmacKeys.{key_id}"
        secret = _read_key_material(material, base, where, source).strip().encode()
        if len(secret) < 16:
            raise ConfigError("an HMAC secret needs at least 16 bytes", path=source, key=where)
        hmac_keys[key_id] = secret
    has_keys = bool(ed25519_keys or hmac_keys)
    require = get("requiresignature", has_keys)
    if not isinstance(require, bool):
        raise ConfigError("expected true or false", path=source, key="Security.RequireSignature")
    if require and not has_keys:
        raise ConfigError(
            "RequireSignature needs Ed25519Keys or HmacKeys",
            path=source,
            key="Security.RequireSignature",
        )
    numbers = {}
    for name, key, default in (
        ("maxmessageage", "MaxMessageAge", DEFAULT_MAX_AGE),
        ("maxclockskew", "MaxClockSkew", DEFAULT_MAX_SKEW),
    ):
        number = get(name, default)
        if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
            raise ConfigError(
                "expected a number of seconds >= 0", path=source, key=f"Security.{key}"
            )
        numbers[name] = float(number)
    strict = get("strictpermissions", False)
    if not isinstance(strict, bool):
        raise ConfigError("expected true or false", path=source, key="Security.StrictPermissions")
    return SecuritySettings(
        ed25519_keys=ed25519_keys,
        hmac_keys=hmac_keys,
        require_signature=require,
        max_message_age=numbers["maxmessageage"],
        max_clock_skew=numbers["maxclockskew"],
        strict_permissions=strict,
    )


# --------------------------------------------------------------------------- checks


class SignatureCheck:
    """Refuses unsigned (when required) and badly signed messages."""

    def __init__(self, settings: SecuritySettings, topic: str) -> None:
        self.settings = settings
        self.topic = topic

    def __call__(self, request: Request) -> None:
        task_id = request.task_id
        signature = request.fields.get("signature")
        if signature is None:
            if self.settings.require_signature:
                raise ProtocolError(ResultCode.SIGNATURE_MISSING, "message is not signed", task_id)
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
                f"no {alg!r} key named {key_id!r} on this host",
                task_id,
            )
        raise ProtocolError(
            ResultCode.SIGNATURE_INVALID, f"bad {alg} signature (key {key_id!r})", task_id
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
