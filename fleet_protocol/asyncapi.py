"""Generates the AsyncAPI 3.0 document of the MQTT API from the topic table and message models.

``python -m fleet_protocol.asyncapi --output docs/asyncapi.yaml`` writes it; a test keeps the
committed file equal to what this produces, so the document can never drift from the code.
The document takes the fleet server's point of view: it receives what devices publish and sends
OTA commands, desired configs and the fleet-wide readings feed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from fleet_protocol.messages import MESSAGE_MODELS, SCHEMA_VERSION, Envelope, Reading
from fleet_protocol.taxonomy import SIGN_TYPE_DESCRIPTIONS
from fleet_protocol.topics import (
    DEFAULT_SHARE_GROUP,
    DEVICE_ID_PATTERN,
    DEVICES_PREFIX,
    FLEET_READINGS_TOPIC,
    KIND_SPECS,
    Direction,
    MessageKind,
)

API_VERSION = f"{SCHEMA_VERSION}.0.0"
_SCHEMA_REF = "#/components/schemas/{model}"
_MQTT_BINDING_VERSION = "0.2.0"


def _channel_id(kind: MessageKind) -> str:
    head, *rest = kind.value.split("/")
    return head + "".join(part.capitalize() for part in rest)


def _draft07(schema: Any) -> Any:
    """Rewrite pydantic's 2020-12 tuple form into the draft-07 form AsyncAPI schemas use."""
    if isinstance(schema, dict):
        out = {key: _draft07(value) for key, value in schema.items()}
        if "prefixItems" in out:
            out["items"] = out.pop("prefixItems")
            out["additionalItems"] = False
        return out
    if isinstance(schema, list):
        return [_draft07(item) for item in schema]
    return schema


def _schemas() -> dict[str, Any]:
    models: list[type[Envelope]] = list(dict.fromkeys(MESSAGE_MODELS.values()))
    _, top = models_json_schema(
        [(model, "validation") for model in models], ref_template=_SCHEMA_REF
    )
    schemas: dict[str, Any] = _draft07(top["$defs"])
    sign_type = schemas["SignType"]
    sign_type["description"] = "The sign's meaning. " + " ".join(
        f"`{kind.value}`: {text}" for kind, text in SIGN_TYPE_DESCRIPTIONS.items()
    )
    return dict(sorted(schemas.items()))


def _operation_bindings(kind: MessageKind) -> dict[str, Any]:
    spec = KIND_SPECS[kind]
    return {
        "mqtt": {"qos": spec.qos, "retain": spec.retain, "bindingVersion": _MQTT_BINDING_VERSION}
    }


def build_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document, as plain data."""
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for kind, model in MESSAGE_MODELS.items():
        spec = KIND_SPECS[kind]
        name = model.__name__
        messages[name] = {
            "name": name,
            "title": name,
            "summary": (model.__doc__ or name).strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": _SCHEMA_REF.format(model=name)},
            "bindings": {
                "mqtt": {"payloadFormatIndicator": 1, "bindingVersion": _MQTT_BINDING_VERSION}
            },
        }
        channel = _channel_id(kind)
        channels[channel] = {
            "address": f"{DEVICES_PREFIX}/{{device_id}}/{kind.value}",
            "description": spec.description,
            "parameters": {"device_id": {"$ref": "#/components/parameters/device_id"}},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        from_devices = spec.direction is Direction.DEVICE_TO_SERVER
        verb = "receive" if from_devices else "send"
        operations[f"{verb}{channel[0].upper()}{channel[1:]}"] = {
            "action": verb,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": (
                f"Devices publish {kind.value} messages; the server consumes them through the "
                f"shared subscription $share/{DEFAULT_SHARE_GROUP}/{DEVICES_PREFIX}/+/{kind.value}."
                if from_devices
                else f"The server publishes {kind.value} messages to one device, which "
                "subscribes to its own topic only."
            ),
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}],
            "bindings": _operation_bindings(kind),
        }
    reading = Reading.__name__
    channels["fleetReadings"] = {
        "address": FLEET_READINGS_TOPIC,
        "description": "Cleaned, de-duplicated readings of the whole fleet, republished by the "
        "server for telemetry subscribers.",
        "messages": {reading: {"$ref": f"#/components/messages/{reading}"}},
    }
    operations["sendFleetReadings"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/fleetReadings"},
        "summary": "The server republishes each reading once, after storing it.",
        "messages": [{"$ref": f"#/channels/fleetReadings/messages/{reading}"}],
        "bindings": _operation_bindings(MessageKind.READINGS),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "RoadSign Fleet MQTT API",
            "version": API_VERSION,
            "description": (
                "Messages between RoadSign edge agents and the fleet server over MQTT v5. "
                "Every payload is a UTF-8 JSON object of at most 64 KiB carrying schema_version, "
                "device_id, a per-device sequence number (receivers de-duplicate by device_id and "
                "seq) and a UTC timestamp. A device may publish and subscribe only under "
                f"{DEVICES_PREFIX}/<its id>/. Generated by "
                "`python -m fleet_protocol.asyncapi`; do not edit by hand."
            ),
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:1883",
                "protocol": "mqtt",
                "protocolVersion": "5",
                "description": "Development broker (Mosquitto) without TLS.",
            },
            "production": {
                "host": "{broker_host}:8883",
                "protocol": "secure-mqtt",
                "protocolVersion": "5",
                "description": "Fleet broker: TLS, per-device credentials and ACLs.",
                "variables": {
                    "broker_host": {
                        "default": "mqtt.roadsign.example",
                        "description": "Host name of the fleet's broker.",
                    }
                },
                "security": [{"$ref": "#/components/securitySchemes/deviceCredentials"}],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": _schemas(),
            "messages": messages,
            "parameters": {
                "device_id": {
                    "description": "The device's id, one topic level: it matches "
                    f"{DEVICE_ID_PATTERN} (no '/', '+', '#' or '$').",
                    "examples": ["rsu-a9-km12", "veh-0042"],
                }
            },
            "securitySchemes": {
                "deviceCredentials": {
                    "type": "userPassword",
                    "description": "Per-device user name (the device id) and password issued "
                    "at enrolment; the broker's ACL confines each to its own topics.",
                }
            },
        },
    }


def render() -> str:
    """The document as YAML text, exactly as committed in docs/asyncapi.yaml."""
    return yaml.safe_dump(build_document(), sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    """Write the document to --output, or to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    text = render()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
