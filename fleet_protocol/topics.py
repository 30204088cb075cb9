"""The versioned MQTT topic namespace: builders, the parser, subscriptions and broker ACL rules.

Every topic string of the system is made here and nowhere else. A device owns exactly the subtree
``roadsign/v1/devices/<device_id>/``; the server reaches all devices through wildcard subscriptions,
shared (MQTT v5 ``$share/<group>/...``) so that several ingestion replicas split the load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NamedTuple

from fleet_protocol.exceptions import TopicError

TOPIC_ROOT = "roadsign"
TOPIC_VERSION = "v1"
DEVICES_PREFIX = f"{TOPIC_ROOT}/{TOPIC_VERSION}/devices"
FLEET_READINGS_TOPIC = f"{TOPIC_ROOT}/{TOPIC_VERSION}/fleet/readings"
"""Where the server republishes cleaned, de-duplicated readings of the whole fleet."""

DEFAULT_SHARE_GROUP = "fleet-ingest"

# Letters, digits, '.', '_' and '-' only: a device id is one topic level and one Mosquitto user
# name, so '/', '+', '#', '$', whitespace and control characters could escape a device's subtree.
_DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHARE_GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""The same rule as a JSON-schema pattern, for message models and the AsyncAPI document."""

MAX_TOPIC_BYTES = 65535  # the MQTT limit on a UTF-8 string


class MessageKind(StrEnum):
    """What a topic carries; its value is the topic's suffix under the device's subtree."""

    STATUS = "status"
    READINGS = "readings"
    HEALTH = "health"
    OTA_COMMAND = "ota/command"
    OTA_STATUS = "ota/status"
    CONFIG_DESIRED = "config/desired"
    CONFIG_REPORTED = "config/reported"


class Direction(StrEnum):
    """Who publishes on a topic."""

    DEVICE_TO_SERVER = "device_to_server"
    SERVER_TO_DEVICE = "server_to_device"


@dataclass(frozen=True, slots=True)
class KindSpec:
    """How a message kind travels: its direction, MQTT QoS and retain flag."""

    direction: Direction
    qos: Literal[0, 1, 2]
    retain: bool
    description: str


KIND_SPECS: dict[MessageKind, KindSpec] = {
    MessageKind.STATUS: KindSpec(
        Direction.DEVICE_TO_SERVER,
        1,
        True,
        "Birth (online) on connect and the last will (offline) the broker publishes when the "
        "device vanishes; retained so a new subscriber sees every device's current state.",
    ),
    MessageKind.READINGS: KindSpec(
        Direction.DEVICE_TO_SERVER,
        1,
        False,
        "One message per physical sign passed: the tracked, de-duplicated reading.",
    ),
    MessageKind.HEALTH: KindSpec(
        Direction.DEVICE_TO_SERVER,
        1,
        False,
        "Periodic health report: throughput, latencies, resources, outbox, model.",
    ),
    MessageKind.OTA_COMMAND: KindSpec(
        Direction.SERVER_TO_DEVICE,
        1,
        False,
        "Tells the device to install (or roll back to) a signed model version from the TUF "
        "repository.",
    ),
    MessageKind.OTA_STATUS: KindSpec(
        Direction.DEVICE_TO_SERVER,
        1,
        False,
        "Progress and outcome of an OTA command on the device.",
    ),
    MessageKind.CONFIG_DESIRED: KindSpec(
        Direction.SERVER_TO_DEVICE,
        1,
        True,
        "Settings the fleet wants the device to run with; retained so a device that reconnects "
        "gets the latest.",
    ),
    MessageKind.CONFIG_REPORTED: KindSpec(
        Direction.DEVICE_TO_SERVER,
        1,
        False,
        "What the device did with the desired settings: applied or refused, and why.",
    ),
}


class DeviceTopic(NamedTuple):
    """A parsed device topic."""

    device_id: str
    kind: MessageKind


def validate_device_id(device_id: object) -> str:
    """Return `device_id` if it can be one topic level and one broker user name, else raise."""
    if not isinstance(device_id, str):
        raise TopicError(f"device id must be a string, got {type(device_id).__name__}")
    if _DEVICE_ID_RE.fullmatch(device_id) is None:
        bad = sorted({c for c in device_id if not (c.isascii() and (c.isalnum() or c in "._-"))})
        detail = f"forbidden characters {bad!r}" if bad else "must start with a letter or digit"
        if not device_id:
            detail = "it is empty"
        elif len(device_id) > 64:
            detail = f"it is {len(device_id)} characters long, the limit is 64"
        raise TopicError(
            f"invalid device id {device_id!r}: {detail}; "
            "allowed are 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit"
        )
    return device_id


def device_topic(device_id: str, kind: MessageKind) -> str:
    """Build the topic on which `kind` messages for or from `device_id` travel."""
    return f"{DEVICES_PREFIX}/{validate_device_id(device_id)}/{MessageKind(kind).value}"


_KIND_BY_SUFFIX = {kind.value: kind for kind in MessageKind}


def parse_device_topic(topic: object) -> DeviceTopic:
    """Split a concrete device topic into (device id, message kind), or raise `TopicError`."""
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a string, got {type(topic).__name__}")
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise TopicError("topic is longer than the MQTT limit of 65535 bytes")
    prefix = DEVICES_PREFIX + "/"
    if not topic.startswith(prefix):
        raise TopicError(f"topic {topic[:200]!r} is not under {prefix!r}")
    device_id, sep, suffix = topic[len(prefix) :].partition("/")
    if not sep:
        raise TopicError(f"topic {topic[:200]!r} has no message kind after the device id")
    validate_device_id(device_id)
    kind = _KIND_BY_SUFFIX.get(suffix)
    if kind is None:
        raise TopicError(
            f"topic {topic[:200]!r} has unknown message kind {suffix[:100]!r}; "
            f"known: {sorted(_KIND_BY_SUFFIX)}"
        )
    return DeviceTopic(device_id, kind)


def _validate_share_group(group: str) -> str:
    if _SHARE_GROUP_RE.fullmatch(group) is None:
        raise TopicError(
            f"invalid shared-subscription group {group!r}: use 1-64 of A-Z a-z 0-9 . _ -"
        )
    return group


def kinds_from(direction: Direction) -> list[MessageKind]:
    """The message kinds published in `direction`, in declaration order."""
    return [kind for kind, spec in KIND_SPECS.items() if spec.direction is direction]


def server_subscriptions(share_group: str | None = DEFAULT_SHARE_GROUP) -> list[str]:
    """Topic filters a server process subscribes to: everything devices publish.

    With a `share_group` the filters are MQTT v5 shared subscriptions, so each message goes to one
    replica of the group. Note that brokers do not deliver retained messages on shared
    subscriptions; a replica wanting every device's current status subscribes to
    ``status_snapshot_filter()`` without sharing.
    """
    filters = [
        f"{DEVICES_PREFIX}/+/{kind.value}" for kind in kinds_from(Direction.DEVICE_TO_SERVER)
    ]
    if share_group is None:
        return filters
    group = _validate_share_group(share_group)
    return [f"$share/{group}/{topic_filter}" for topic_filter in filters]


def status_snapshot_filter() -> str:
    """Unshared filter for every device's retained status (birth / last will)."""
    return f"{DEVICES_PREFIX}/+/{MessageKind.STATUS.value}"


def device_subscriptions(device_id: str) -> list[str]:
    """Topics a device subscribes to: the server's messages addressed to it alone."""
    return [device_topic(device_id, kind) for kind in kinds_from(Direction.SERVER_TO_DEVICE)]


class BrokerRules(NamedTuple):
    """What one broker user may do, as topic filters.

    `publish`: topics it may send to; `subscribe`: filters it may put in a SUBSCRIBE (shared ones
    with their ``$share/<group>/`` prefix, as Mosquitto's dynamic-security plugin checks them);
    `receive`: topics whose messages the broker may deliver to it.
    """

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    receive: tuple[str, ...]


def device_broker_rules(device_id: str) -> BrokerRules:
    """A device publishes what devices send, of its own id only, and hears only its own commands.

    No wildcard and no ``$share`` filter: a device cannot join the server's shared group (where
    every message it was handed would be one the server never stored), nor read another device.
    """
    own = device_subscriptions(device_id)
    sent = tuple(device_topic(device_id, kind) for kind in kinds_from(Direction.DEVICE_TO_SERVER))
    return BrokerRules(publish=sent, subscribe=tuple(own), receive=tuple(own))


def server_broker_rules(share_group: str = DEFAULT_SHARE_GROUP) -> BrokerRules:
    """The server reads every device (shared in its group, or unshared) and sends its downlinks.

    The unshared filters cover the retained status snapshot, and brokers that check a shared
    subscription without its ``$share/<group>/`` prefix.
    """
    downlinks = tuple(
        f"{DEVICES_PREFIX}/+/{kind.value}" for kind in kinds_from(Direction.SERVER_TO_DEVICE)
    )
    uplinks = tuple(server_subscriptions(None))
    return BrokerRules(
        publish=(*downlinks, FLEET_READINGS_TOPIC),
        subscribe=(*server_subscriptions(share_group), *uplinks, FLEET_READINGS_TOPIC),
        receive=(*uplinks, FLEET_READINGS_TOPIC),
    )
