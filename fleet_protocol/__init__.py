"""The wire protocol between RoadSign edge agents and the fleet server.

Topics (`topics`), message models (`messages`), the sign taxonomy (`taxonomy`), encoding with a
size limit (`codec`), the AsyncAPI document (`asyncapi`) and the strict config loader every process
uses (`config_files`). This package imports nothing else of ours; both sides import it.
"""

from fleet_protocol.codec import MAX_PAYLOAD_BYTES, decode, decode_as, decode_device_message, encode
from fleet_protocol.exceptions import ProtocolError, TopicError
from fleet_protocol.messages import (
    MESSAGE_MODELS,
    SCHEMA_VERSION,
    DesiredConfig,
    Envelope,
    HealthReport,
    ModelRef,
    OtaCommand,
    OtaStatus,
    Reading,
    ReportedConfig,
    StatusMessage,
)
from fleet_protocol.taxonomy import SignType
from fleet_protocol.topics import MessageKind, device_topic, parse_device_topic

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MESSAGE_MODELS",
    "SCHEMA_VERSION",
    "DesiredConfig",
    "Envelope",
    "HealthReport",
    "MessageKind",
    "ModelRef",
    "OtaCommand",
    "OtaStatus",
    "ProtocolError",
    "Reading",
    "ReportedConfig",
    "SignType",
    "StatusMessage",
    "TopicError",
    "decode",
    "decode_as",
    "decode_device_message",
    "device_topic",
    "encode",
    "parse_device_topic",
]
