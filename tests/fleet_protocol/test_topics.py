"""Topic building and parsing, subscriptions, and broker rules that keep a device in its subtree."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_protocol.exceptions import ProtocolError, TopicError
from fleet_protocol.topics import (
    DEVICES_PREFIX,
    FLEET_READINGS_TOPIC,
    KIND_SPECS,
    Direction,
    MessageKind,
    device_broker_rules,
    device_subscriptions,
    device_topic,
    parse_device_topic,
    server_broker_rules,
    server_subscriptions,
    status_snapshot_filter,
    validate_device_id,
)


@pytest.mark.parametrize("kind", list(MessageKind))
def test_built_topic_parses_back_to_its_device_and_kind(kind: MessageKind) -> None:
    topic = device_topic("rsu-a9.km12_b", kind)
    assert topic == f"roadsign/v1/devices/rsu-a9.km12_b/{kind.value}"
    assert parse_device_topic(topic) == ("rsu-a9.km12_b", kind)


@pytest.mark.parametrize(
    "device_id",
    [
        "veh/0042",  # would climb into another level
        "veh+",  # single-level wildcard
        "#",  # multi-level wildcard
        "veh-#",
        "$SYS",  # broker-internal topics
        "",
        "a b",
        "veh\x00",
        "-starts-with-dash",
        "über",  # non-ASCII
        "x" * 65,
        "..",
    ],
)
def test_device_ids_that_could_escape_their_subtree_are_refused(device_id: str) -> None:
    with pytest.raises(TopicError, match="invalid device id"):
        device_topic(device_id, MessageKind.READINGS)


def test_refusal_names_the_forbidden_characters() -> None:
    with pytest.raises(TopicError, match=r"forbidden characters \['#', '\+', '/'\]"):
        validate_device_id("a/b+c#")


def test_non_string_device_id_is_a_topic_error() -> None:
    with pytest.raises(TopicError, match="must be a string"):
        validate_device_id(42)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("roadsign/v1/devices/veh-1", "no message kind"),
        ("roadsign/v1/devices/veh-1/", "unknown message kind"),
        ("roadsign/v1/devices/veh-1/readings/extra", "unknown message kind"),
        ("roadsign/v1/devices/veh-1/ota", "unknown message kind"),
        ("roadsign/v2/devices/veh-1/readings", "is not under"),
        ("roadsign/v1/devices/+/readings", "invalid device id"),
        ("roadsign/v1/devices/#", "no message kind"),
        ("roadsign/v1/devices//readings", "invalid device id"),
        ("other/topic", "is not under"),
        ("", "is not under"),
    ],
)
def test_foreign_or_malformed_topics_raise_topic_error(topic: str, reason: str) -> None:
    with pytest.raises(TopicError, match=reason):
        parse_device_topic(topic)


def test_overlong_and_non_string_topics_raise() -> None:
    with pytest.raises(TopicError, match="65535"):
        parse_device_topic("roadsign/v1/devices/" + "a" * 70000)
    with pytest.raises(TopicError, match="must be a string"):
        parse_device_topic(b"roadsign/v1/devices/a/readings")


@given(st.text(max_size=200))
def test_parser_never_raises_anything_but_protocol_errors(topic: str) -> None:
    try:
        device_id, kind = parse_device_topic(topic)
    except ProtocolError:
        return
    assert device_topic(device_id, kind) == topic


def test_server_subscribes_shared_to_everything_devices_publish() -> None:
    filters = server_subscriptions("ingest-a")
    uplink = [k for k, spec in KIND_SPECS.items() if spec.direction is Direction.DEVICE_TO_SERVER]
    assert filters == [f"$share/ingest-a/{DEVICES_PREFIX}/+/{kind.value}" for kind in uplink]
    assert MessageKind.OTA_COMMAND.value not in " ".join(filters)
    assert server_subscriptions(None) == [f.split("/", 2)[2] for f in filters]
    assert status_snapshot_filter() == f"{DEVICES_PREFIX}/+/status"


@pytest.mark.parametrize("group", ["", "a/b", "g+", "g#"])
def test_share_group_that_breaks_the_filter_is_refused(group: str) -> None:
    with pytest.raises(TopicError, match="shared-subscription group"):
        server_subscriptions(group)


def test_device_subscribes_only_to_messages_addressed_to_it() -> None:
    assert device_subscriptions("veh-1") == [
        "roadsign/v1/devices/veh-1/ota/command",
        "roadsign/v1/devices/veh-1/config/desired",
    ]


def test_device_may_send_its_uplinks_and_hear_its_downlinks_only() -> None:
    rules = device_broker_rules("veh-1")
    kinds = {d: {k for k, spec in KIND_SPECS.items() if spec.direction is d} for d in Direction}
    assert set(rules.publish) == {
        device_topic("veh-1", k) for k in kinds[Direction.DEVICE_TO_SERVER]
    }
    assert set(rules.subscribe) == set(rules.receive) == set(device_subscriptions("veh-1"))
    for topic in (*rules.publish, *rules.subscribe, *rules.receive):
        assert topic.startswith(f"{DEVICES_PREFIX}/veh-1/")
        assert not {"+", "#", "$"} & set(topic)  # no wildcard, no shared group


def test_only_the_server_may_join_its_shared_group() -> None:
    server = server_broker_rules("ingest-g")
    shared = [f for f in server.subscribe if f.startswith("$share/")]
    assert shared == server_subscriptions("ingest-g")
    assert status_snapshot_filter() in server.subscribe  # retained statuses are never shared
    assert set(server_subscriptions(None)) <= set(server.receive)
    assert FLEET_READINGS_TOPIC in server.publish
    for kind, spec in KIND_SPECS.items():  # downlinks to every device, uplinks of none
        downlink = f"{DEVICES_PREFIX}/+/{kind.value}"
        assert (downlink in server.publish) is (spec.direction is Direction.SERVER_TO_DEVICE)


def test_fleet_feed_is_outside_every_device_subtree() -> None:
    assert not FLEET_READINGS_TOPIC.startswith(DEVICES_PREFIX)
    with pytest.raises(TopicError):
        parse_device_topic(FLEET_READINGS_TOPIC)


def test_status_and_desired_config_are_retained_and_readings_are_not() -> None:
    assert KIND_SPECS[MessageKind.STATUS].retain
    assert KIND_SPECS[MessageKind.CONFIG_DESIRED].retain
    assert not KIND_SPECS[MessageKind.READINGS].retain
    assert all(spec.qos == 1 for spec in KIND_SPECS.values())
