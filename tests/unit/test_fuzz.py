"""Property-based fuzzing of the message decoder: thousands of hostile inputs."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectd_monitor.commands.protocol import CommandRequest, ConfigRequest, decode_request
from collectd_monitor.errors import ProtocolError

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.integers(min_value=0, max_value=2**64),
    st.sampled_from(["2026-11-23T10:00:00Z", "2026-11-23T10:00:00+02:00", "nope", ""]),
)
messages = st.dictionaries(
    st.sampled_from(["task_id", "timestamp", "service", "command", "config", "signature", "x"]),
    field_values,
    max_size=7,
)


def decode_or_refuse(payload: bytes) -> None:
    try:
        request = decode_request(payload)
    except ProtocolError as exc:
        assert isinstance(exc.code, int) and exc.code > 0
        assert exc.task_id is None or isinstance(exc.task_id, int | str)
        return
    assert isinstance(request, CommandRequest | ConfigRequest)
    assert isinstance(request.task_id, int) and not isinstance(request.task_id, bool)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes(payload):
    decode_or_refuse(payload)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_message_shaped_objects(message):
    decode_or_refuse(json.dumps(message, allow_nan=True).encode())


@settings(max_examples=1000, deadline=None)
@given(messages, st.integers(min_value=0, max_value=200))
def test_truncated_messages(message, cut):
    decode_or_refuse(json.dumps(message).encode()[:cut])
