from __future__ import annotations

import json

import pytest

from collectd_monitor.codes import ResultCode
from collectd_monitor.commands.protocol import (
    CommandRequest,
    ConfigRequest,
    Result,
    decode_request,
    format_timestamp,
    parse_timestamp,
)
from collectd_monitor.errors import ProtocolError

ORIGINAL = (
    b'{"timestamp":"2020-11-26T00:41:19Z","service":"hello","task_id":3126260400,"command":"exec"}'
)


def refused(payload: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_request(payload)
    return info.value


def test_original_command_message():
    request = decode_request(ORIGINAL)
    assert isinstance(request, CommandRequest)
    assert (request.task_id, request.service, request.command) == (3126260400, "hello", "exec")
    assert request.sent_at.year == 2020


def test_config_message():
    request = decode_request(
        b'{"task_id": 1, "timestamp": "2021-01-03T04:45:09Z", "config": "x\\n"}'
    )
    assert isinstance(request, ConfigRequest)
    assert request.config == "x\n"


def test_result_encoding_is_the_original_shape():
    result = Result(
        task_id=3126260400, code=0, message="Hello World!", timestamp="2020-11-26T00:41:19Z"
    )
    assert json.loads(result.encode()) == {
        "task_id": 3126260400,
        "timestamp": "2020-11-26T00:41:19Z",
        "message": "Hello World!",
        "code": 0,
    }
    assert Result.decode(result.encode()) == result


@pytest.mark.parametrize(
    ("payload", "code", "task_id"),
    [
        (b"{", ResultCode.MALFORMED_JSON, None),
        (b'{"task_id": 9, "service"', ResultCode.MALFORMED_JSON, 9),
        (b"\xff", ResultCode.MALFORMED_JSON, None),
        (b"[]", ResultCode.MALFORMED_JSON, None),
        (b"{}", ResultCode.MISSING_FIELD, None),
        (b'{"task_id": true, "timestamp": "2020-11-26T00:41:19Z"}', ResultCode.INVALID_FIELD, None),
        (b'{"task_id": 1.5, "timestamp": "2020-11-26T00:41:19Z"}', ResultCode.INVALID_FIELD, None),
        (b'{"task_id": "7"}', ResultCode.INVALID_FIELD, "7"),
        (b'{"task_id": 1}', ResultCode.MISSING_FIELD, 1),
        (
            b'{"task_id": 1, "timestamp": "nope", "service": "a", "command": "b"}',
            ResultCode.INVALID_FIELD,
            1,
        ),
        (
            b'{"task_id": 1, "timestamp": "2020-11-26T00:41:19Z", "service": "a"}',
            ResultCode.MISSING_FIELD,
            1,
        ),
        (
            b'{"task_id": 1, "timestamp": "2020-11-26T00:41:19Z", "service": "", "command": "b"}',
            ResultCode.INVALID_FIELD,
            1,
        ),
        (
            b'{"task_id": 1, "timestamp": "2020-11-26T00:41:19Z", "service": ["a"], '
            b'"command": "b"}',
            ResultCode.INVALID_FIELD,
            1,
        ),
        (
            b'{"task_id": 1, "timestamp": "2020-11-26T00:41:19Z", "config": 5}',
            ResultCode.INVALID_FIELD,
            1,
        ),
        (
            b'{"task_id": 1, "timestamp": "2020-11-26T00:41:19Z", "config": "", "service": "a"}',
            ResultCode.INVALID_FIELD,
            1,
        ),
    ],
)
def test_refusals_carry_code_and_task_id(payload, code, task_id):
    error = refused(payload)
    assert error.code == code
    assert error.task_id == task_id


def test_deep_nesting_is_malformed_not_a_crash():
    assert refused(b"[" * 100_000 + b"]" * 100_000).code == ResultCode.MALFORMED_JSON


def test_timestamps():
    assert format_timestamp(parse_timestamp("2020-11-26T00:41:19Z")) == "2020-11-26T00:41:19Z"
    assert parse_timestamp("2020-11-26T01:41:19+01:00") == parse_timestamp("2020-11-26T00:41:19Z")
    assert parse_timestamp("2020-11-26T00:41:19").tzinfo is not None
