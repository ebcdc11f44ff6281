"""``Security``: which keys may sign commands, how fresh a message must be.

Parsed with the rest of the config at load time, so the shared core needs no
part of the remote-command package. ``cryptography`` is imported only when an
Ed25519 key is actually read. The checks that use these settings live in
:mod:`collectd_monitor.commands.security`.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectd_monitor.errors import ConfigError
from collectd_monitor.schema import Section, as_bool, number

DEFAULT_MAX_AGE = 300.0
DEFAULT_MAX_SKEW = 60.0
MIN_HMAC_BYTES = 16

_KEYS = (
    "Ed25519Keys",
    "HmacKeys",
    "RequireSignature",
    "MaxMessageAge",
    "MaxClockSkew",
    "StrictPermissions",
    "AnswerUnsigned",
)


def ed25519_module() -> Any:
    """``cryptography``'s Ed25519 module, imported on first use."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - cryptography is a dependency
        raise ConfigError("Ed25519 keys need the 'cryptography' package") from exc
    return ed25519


def load_public_key(text: str) -> Any:
    """A PEM public key, or the raw 32-byte key in base64."""
    from cryptography.hazmat.primitives import serialization

    ed25519 = ed25519_module()
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(stripped.encode())
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    raw = base64.b64decode(stripped, validate=True)
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class SecuritySettings:
    ed25519_keys: Mapping[str, Any] = field(default_factory=dict, repr=False)
    hmac_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    require_signature: bool = False
    max_message_age: float = DEFAULT_MAX_AGE
    max_clock_skew: float = DEFAULT_MAX_SKEW
    strict_permissions: bool = False
    ed25519_files: tuple[str, ...] = ()
    """Public key files (``{"File": ...}``): checked for who may change them."""
    hmac_files: tuple[str, ...] = ()
    """HMAC secret files: checked for who may read them."""
    answer_unsigned: bool = False
    """With signatures required, answer unsigned and badly signed messages (0x1201/0x1202)
    instead of dropping them silently (counted and logged, rate-limited)."""

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(key.decode(errors="replace") for key in self.hmac_keys.values())

    @property
    def has_keys(self) -> bool:
        return bool(self.ed25519_keys or self.hmac_keys)


def _read_key_material(keys: Section, key_id: str, value: Any, base: Path, files: list[str]) -> str:
    """Inline text, or ``{"File": path}`` relative to config.json (the path goes to ``files``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        name = keys.child(key_id, value).raw("File")
        if isinstance(name, str):
            path = base / name
            files.append(str(path))
            try:
                return path.read_text()
            except OSError as exc:
                raise keys.error(f"cannot read {path}: {exc.strerror}", key_id) from None
    raise keys.error('expected a key string or {"File": "path"}', key_id)


_seconds = number(minimum=0)


def parse_security(value: Any, *, source: str | None) -> SecuritySettings:
    if value is None:
        return SecuritySettings()
    section = Section.of(value, source=source, path="Security")
    section.reject_unknown(_KEYS, "unknown option")
    base = Path(source).parent if source else Path(".")
    ed25519_keys: dict[str, Any] = {}
    ed25519_files: list[str] = []
    hmac_files: list[str] = []
    keys = section.section_or_empty("Ed25519Keys")
    for key_id, material in keys.items():
        text = _read_key_material(keys, key_id, material, base, ed25519_files)
        try:
            ed25519_keys[key_id] = load_public_key(text)
        except (ValueError, binascii.Error) as exc:
            raise keys.error(f"not an Ed25519 public key ({exc})", key_id) from None
    hmac_keys: dict[str, bytes] = {}
    keys = section.section_or_empty("HmacKeys")
    for key_id, material in keys.items():
        secret = _read_key_material(keys, key_id, material, base, hmac_files).strip().encode()
        if len(secret) < MIN_HMAC_BYTES:
            raise keys.error(f"an HMAC secret needs at least {MIN_HMAC_BYTES} bytes", key_id)
        hmac_keys[key_id] = secret
    has_keys = bool(ed25519_keys or hmac_keys)
    require = section.get("RequireSignature", as_bool, has_keys)
    if require and not has_keys:
        raise section.error("RequireSignature needs Ed25519Keys or HmacKeys", "RequireSignature")
    return SecuritySettings(
        ed25519_keys=ed25519_keys,
        hmac_keys=hmac_keys,
        require_signature=require,
        max_message_age=section.get("MaxMessageAge", _seconds, DEFAULT_MAX_AGE),
        max_clock_skew=section.get("MaxClockSkew", _seconds, DEFAULT_MAX_SKEW),
        strict_permissions=section.get("StrictPermissions", as_bool, False),
        ed25519_files=tuple(ed25519_files),
        hmac_files=tuple(hmac_files),
        answer_unsigned=section.get("AnswerUnsigned", as_bool, False),
    )


def check_permissions(path: str | None, has_secrets: bool) -> str | None:
    """A warning when a config file holding secrets is readable by group or others."""
    if not path or not has_secrets:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{path} holds a password or key but is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    return None
