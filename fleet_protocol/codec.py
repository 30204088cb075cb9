"""Encoding and decoding of wire messages, with a size limit and one error type for bad bytes.

Payloads are compact UTF-8 JSON objects. `decode_device_message` is what a receive loop calls: it
checks the topic, the size, the JSON, the schema and that the payload's device is the topic's,
and raises a `ProtocolError` subclass whose `reason` names what was wrong.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from fleet_protocol.exceptions import (
    DeviceMismatchError,
    MalformedPayloadError,
    PayloadTooLargeError,
    SchemaError,
    UnsupportedSchemaVersionError,
)
from fleet_protocol.messages import MESSAGE_MODELS, SCHEMA_VERSION, Envelope
from fleet_protocol.topics import DeviceTopic, MessageKind, parse_device_topic

MAX_PAYLOAD_BYTES = 64 * 1024
"""Default limit on an encoded message; a reading with its largest crop stays well under it."""

_MAX_REPORTED_ERRORS = 5

M = TypeVar("M", bound=Envelope)


def encode(message: Envelope, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> bytes:
    """Serialise `message` to compact JSON; raise `PayloadTooLargeError` over `max_bytes`.

    Null fields are left out: receivers fill them with their defaults.
    """
    payload = message.model_dump_json(exclude_none=True).encode("utf-8")
    if len(payload) > max_bytes:
        raise PayloadTooLargeError(
            f"{type(message).__name__} encodes to {len(payload)} bytes, the limit is {max_bytes}"
        )
    return payload


def _describe(error: ValidationError, model: type[Envelope]) -> str:
    problems = []
    for item in error.errors(include_url=False)[:_MAX_REPORTED_ERRORS]:
        where = ".".join(str(part) for part in item["loc"]) or "(message)"
        problems.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(problems)
    suffix = f"; and {more} more" if more > 0 else ""
    return f"invalid {model.__name__}: " + "; ".join(problems) + suffix


def decode_as(model: type[M], payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> M:
    """Parse `payload` as one `model` message or raise a `ProtocolError` saying what is wrong."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise MalformedPayloadError(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > max_bytes:
        raise PayloadTooLargeError(f"payload is {len(payload)} bytes, the limit is {max_bytes}")
    try:
        return model.model_validate_json(bytes(payload))
    except ValidationError as e:
        errors = e.errors(include_url=False)
        first = errors[0] if errors else None
        if first is not None and first["type"] == "json_invalid":
            raise MalformedPayloadError(f"payload is not valid UTF-8 JSON: {first['msg']}") from e
        if first is not None and first["type"] == "model_type" and first["loc"] == ():
            raise MalformedPayloadError("payload is JSON but not an object") from e
        for item in errors:
            if item["loc"] == ("schema_version",) and item["type"] == "literal_error":
                raise UnsupportedSchemaVersionError(
                    f"schema_version {item['input']!r} is not supported; this side speaks "
                    f"{SCHEMA_VERSION}"
                ) from e
        raise SchemaError(_describe(e, model)) from e


def decode(kind: MessageKind, payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Envelope:
    """Parse `payload` as the message model of `kind`."""
    return decode_as(MESSAGE_MODELS[MessageKind(kind)], payload, max_bytes=max_bytes)


def decode_device_message(
    topic: str, payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES
) -> tuple[DeviceTopic, Envelope]:
    """Parse a message received on a device topic; the payload's device must be the topic's.

    The device check is what stops a device that got hold of another's topic from speaking for it
    even where a broker ACL is misconfigured.
    """
    where = parse_device_topic(topic)
    message = decode(where.kind, payload, max_bytes=max_bytes)
    if message.device_id != where.device_id:
        raise DeviceMismatchError(
            f"payload says device {message.device_id!r} but arrived on the topic of "
            f"{where.device_id!r}"
        )
    return where, message
