"""Bad bytes never get past the codec: each raises a ProtocolError subclass saying what is wrong."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet_protocol.codec import MAX_PAYLOAD_BYTES, decode, decode_as, decode_device_message, encode
from fleet_protocol.exceptions import (
    DeviceMismatchError,
    MalformedPayloadError,
    PayloadTooLargeError,
    ProtocolError,
    SchemaError,
    TopicError,
    UnsupportedSchemaVersionError,
)
from fleet_protocol.messages import HealthReport, Reading
from fleet_protocol.topics import MessageKind, device_topic
from tests.conftest import make_reading

GOOD = json.loads(encode(make_reading()))


def _payload(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


@pytest.mark.parametrize(
    ("payload", "error", "says"),
    [
        (b"", MalformedPayloadError, "not valid UTF-8 JSON"),
        (b"\xff\xfe\x00garbage", MalformedPayloadError, "not valid UTF-8 JSON"),
        (b'{"device_id": "veh-0042",', MalformedPayloadError, "not valid UTF-8 JSON"),
        (b"[1, 2, 3]", MalformedPayloadError, "not an object"),
        (b'"a string"', MalformedPayloadError, "not an object"),
        (b"null", MalformedPayloadError, "not an object"),
        (_payload(schema_version=2), UnsupportedSchemaVersionError, "schema_version 2"),
        (_payload(seq="7"), SchemaError, "seq: Input should be a valid integer"),
        (_payload(confidence="high"), SchemaError, "confidence"),
        (_payload(bbox=[1, 2, 3]), SchemaError, "bbox"),
        (_payload(timestamp="yesterday"), SchemaError, "timestamp"),
        (_payload(timestamp="2026-11-27T10:00:00"), SchemaError, "timezone"),
        (_payload(extra_field=1), SchemaError, "extra_field: Extra inputs"),
        (_payload(crop_jpeg="not base64!"), SchemaError, "not valid base64"),
        (b'{"value": NaN}', SchemaError, "value"),
    ],
)
def test_bad_payload_raises_the_error_that_names_the_problem(
    payload: bytes, error: type[ProtocolError], says: str
) -> None:
    with pytest.raises(error, match=says) as caught:
        decode(MessageKind.READINGS, payload)
    assert isinstance(caught.value, ProtocolError)
    assert caught.value.reason == error.reason


def test_missing_fields_are_all_named_up_to_a_limit() -> None:
    with pytest.raises(SchemaError) as caught:
        decode(MessageKind.READINGS, b"{}")
    text = str(caught.value)
    assert text.startswith("invalid Reading: device_id: Field required; seq: Field required")
    assert "and 4 more" in text


def test_oversized_payload_is_refused_before_parsing() -> None:
    huge = b"{" + b" " * MAX_PAYLOAD_BYTES + b"}"
    with pytest.raises(PayloadTooLargeError, match=f"the limit is {MAX_PAYLOAD_BYTES}"):
        decode(MessageKind.READINGS, huge)
    with pytest.raises(PayloadTooLargeError, match="the limit is 10"):
        decode_as(Reading, encode(make_reading()), max_bytes=10)


def test_encoder_refuses_what_receivers_would_refuse() -> None:
    with pytest.raises(PayloadTooLargeError, match="Reading encodes to"):
        encode(make_reading(), max_bytes=100)


def test_non_bytes_payload_is_malformed() -> None:
    with pytest.raises(MalformedPayloadError, match="must be bytes"):
        decode_as(Reading, "{}")  # type: ignore[arg-type]


def test_payload_of_the_wrong_kind_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="invalid HealthReport"):
        decode(MessageKind.HEALTH, encode(make_reading()))
    with pytest.raises(SchemaError):
        decode_as(HealthReport, encode(make_reading()))


def test_device_message_is_accepted_from_its_own_topic() -> None:
    reading = make_reading(device_id="veh-7")
    where, message = decode_device_message(
        device_topic("veh-7", MessageKind.READINGS), encode(reading)
    )
    assert where == ("veh-7", MessageKind.READINGS)
    assert message == reading


def test_device_speaking_for_another_is_refused() -> None:
    payload = encode(make_reading(device_id="veh-7"))
    with pytest.raises(DeviceMismatchError, match="payload says device 'veh-7'") as caught:
        decode_device_message(device_topic("veh-8", MessageKind.READINGS), payload)
    assert caught.value.reason == "device_mismatch"


def test_message_on_a_foreign_topic_is_a_topic_error() -> None:
    with pytest.raises(TopicError):
        decode_device_message("roadsign/v1/devices/veh-7/nope", encode(make_reading()))


def test_reasons_are_distinct_labels() -> None:
    errors = [
        TopicError,
        PayloadTooLargeError,
        MalformedPayloadError,
        UnsupportedSchemaVersionError,
        SchemaError,
        DeviceMismatchError,
    ]
    assert len({e.reason for e in errors}) == len(errors)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_only_ever_raise_protocol_errors(payload: bytes) -> None:
    for kind in MessageKind:
        try:
            decode(kind, payload)
        except ProtocolError:
            continue


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(GOOD)), _json, max_size=6))
def test_mutated_readings_either_decode_coherently_or_raise_protocol_errors(
    changes: dict[str, object],
) -> None:
    try:
        payload = json.dumps({**GOOD, **changes}).encode()
    except ValueError:
        return
    try:
        reading = decode_as(Reading, payload)
    except ProtocolError:
        return
    assert reading.bbox[0] < reading.bbox[2]
    assert (reading.value is None) == (reading.unit is None)
    assert decode_as(Reading, encode(reading)) == reading
