"""The wire protocol: command, config and result messages (JSON over MQTT).

Field names and types are the original project's and stay compatible with its
senders::

    command  {"task_id": int, "timestamp": "2020-11-26T00:41:19Z", "service": str, "command": str}
    config   {"task_id": int, "timestamp": "...", "config": str}
    result   {"task_id": int, "timestamp": "...", "message": str, "code": int}

A command's result also carries ``"stderr": str`` (its standard error, capped
like ``message``, which stays its standard output); the original's senders
ignore fields they do not know.

Decoding never raises anything but :class:`ProtocolError`, whose ``code`` is
the result code to answer with and whose ``task_id`` is the id to answer to
(``None`` when the message carries none; such a message is only logged).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collectd_monitor.codes import ResultCode
from collectd_monitor.errors import ProtocolError
from collectd_monitor.logsetup import clip, quote

TaskId = int | str

_SALVAGE_TASK_ID = re.compile(rb'"task_id"\s*:\s*(\d{1,20})\b')


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_timestamp(moment: dt.datetime | None = None) -> str:
    """ISO 8601 UTC with a ``Z``, to the second, as the original stamps messages."""
    moment = moment or utc_now()
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> dt.datetime:
    """Parse ISO 8601; a time without zone is taken as UTC."""
    moment = dt.datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment


@dataclass(frozen=True)
class Request:
    """A decoded message on a command topic."""

    task_id: int
    timestamp: str
    fields: Mapping[str, Any] = field(repr=False, compare=False)
    """The decoded JSON object as received (signature checks need all of it)."""

    @property
    def sent_at(self) -> dt.datetime:
        return parse_timestamp(self.timestamp)


@dataclass(frozen=True)
class CommandRequest(Request):
    """Run a service's command."""

    service: str = ""
    command: str = ""


@dataclass(frozen=True)
class ConfigRequest(Request):
    """Replace collectd.conf."""

    config: str = field(default="", repr=False)


@dataclass(frozen=True)
class Result:
    """A message on a result topic."""

    task_id: TaskId
    code: int
    message: str
    timestamp: str = field(default_factory=format_timestamp)
    stderr: str | None = None
    """A command's standard error; None (no field on the wire) for other results."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": self.task_id,
            "timestamp": self.timestamp,
            "message": self.message,
            "code": int(self.code),
        }
        if self.stderr is not None:
            data["stderr"] = self.stderr
        return data

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8")

    @classmethod
    def decode(cls, payload: bytes | str) -> Result:
        """Read a result (the sender's side). Raises ``ValueError`` when it is not one."""
        data = json.loads(payload)
        if not isinstance(data, dict) or "task_id" not in data or "code" not in data:
            raise ValueError("not a result message")
        code = data["code"]
        if isinstance(code, bool) or not isinstance(code, int):
            raise ValueError("result code is not an integer")
        return cls(
            task_id=data["task_id"],
            code=code,
            message=str(data.get("message", "")),
            timestamp=str(data.get("timestamp", "")),
            stderr=data["stderr"] if isinstance(data.get("stderr"), str) else None,
        )


def _echo_task_id(data: Mapping[str, Any]) -> TaskId | None:
    """The task_id to answer a refused message with, if it has a usable one."""
    value = data.get("task_id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value:
        return clip(value, 64)
    return None


def decode_request(payload: bytes) -> CommandRequest | ConfigRequest:
    try:
        data = json.loads(payload.decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of over 4300 digits
        match = _SALVAGE_TASK_ID.search(payload)
        raise ProtocolError(
            ResultCode.MALFORMED_JSON,
            f"malformed message: {clip(str(exc))}",
            int(match.group(1)) if match else None,
        ) from None
    except RecursionError:
        raise ProtocolError(
            ResultCode.MALFORMED_JSON, "malformed message: nested too deep"
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError(
            ResultCode.MALFORMED_JSON, f"message is a JSON {type(data).__name__}, not an object"
        )
    task_id = _echo_task_id(data)
    raw_task_id = data.get("task_id")
    if "task_id" not in data:
        raise ProtocolError(ResultCode.MISSING_FIELD, "message has no task_id")
    if isinstance(raw_task_id, bool) or not isinstance(raw_task_id, int):
        raise ProtocolError(
            ResultCode.INVALID_FIELD,
            f"task_id must be an integer, got {type(raw_task_id).__name__}",
            task_id,
        )

    def field_of(name: str, kind: type, what: str) -> Any:
        if name not in data:
            raise ProtocolError(ResultCode.MISSING_FIELD, f"message has no {name}", task_id)
        value = data[name]
        if not isinstance(value, kind):
            raise ProtocolError(
                ResultCode.INVALID_FIELD,
                f"{name} must be {what}, got {type(value).__name__}",
                task_id,
            )
        return value

    timestamp = field_of("timestamp", str, "a string")
    try:
        parse_timestamp(timestamp)
    except ValueError:
        raise ProtocolError(
            ResultCode.INVALID_FIELD, f"timestamp {quote(timestamp, 40)} is not ISO 8601", task_id
        ) from None

    has_config = "config" in data
    has_command = "service" in data or "command" in data
    if has_config and has_command:
        raise ProtocolError(
            ResultCode.INVALID_FIELD,
            "message has both config and service/command; send one or the other",
            task_id,
        )
    if has_config:
        config = field_of("config", str, "a string")
        return ConfigRequest(task_id=raw_task_id, timestamp=timestamp, fields=data, config=config)
    service = field_of("service", str, "a string")
    command = field_of("command", str, "a string")
    for name, value in (("service", service), ("command", command)):
        if not value:
            raise ProtocolError(ResultCode.INVALID_FIELD, f"{name} is empty", task_id)
    return CommandRequest(
        task_id=raw_task_id, timestamp=timestamp, fields=data, service=service, command=command
    )


def encode_command(
    task_id: int, service: str, command: str, timestamp: str | None = None
) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "timestamp": timestamp or format_timestamp(),
        "service": service,
        "command": command,
    }


def encode_config(task_id: int, config: str, timestamp: str | None = None) -> dict[str, Any]:
    return {"task_id": task_id, "timestamp": timestamp or format_timestamp(), "config": config}
