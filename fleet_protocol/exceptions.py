"""The one exception tree of the wire protocol.

Every way bytes or topics from the network can be wrong raises a subclass of `ProtocolError`,
so a receive loop needs exactly one ``except ProtocolError`` to count and drop bad input.
Each subclass carries a short, stable `reason` code that receivers use as a metrics label.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """Bytes, topics or messages that do not follow the RoadSign wire protocol."""

    reason: str = "invalid"


class TopicError(ProtocolError):
    """A topic string (or a device id going into one) is not part of our namespace."""

    reason = "bad_topic"


class PayloadTooLargeError(ProtocolError):
    """A payload is over the size limit; it was rejected before any parsing."""

    reason = "too_large"


class MalformedPayloadError(ProtocolError):
    """A payload is not a UTF-8 JSON object."""

    reason = "malformed"


class UnsupportedSchemaVersionError(ProtocolError):
    """A payload declares a schema version this code does not speak."""

    reason = "unsupported_version"


class SchemaError(ProtocolError):
    """A payload is JSON but does not match the message model; the text names each bad field."""

    reason = "schema"


class DeviceMismatchError(ProtocolError):
    """The device id in the payload is not the device the topic belongs to."""

    reason = "device_mismatch"


class ConfigFileError(ValueError):
    """A configuration file is missing, unparsable or invalid; the text names field and line."""
