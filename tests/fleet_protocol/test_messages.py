"""Every message kind round-trips through the codec unchanged, and models refuse incoherent data."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest
from pydantic import ValidationError

from fleet_protocol.codec import decode, encode
from fleet_protocol.messages import (
    MAX_CROP_BYTES,
    MESSAGE_MODELS,
    CameraState,
    DesiredConfig,
    DeviceState,
    Envelope,
    GeoPoint,
    HealthReport,
    LatencyStats,
    OtaAction,
    OtaCommand,
    OtaState,
    OtaStatus,
    PipelineStage,
    Reading,
    ReportedConfig,
    StatusMessage,
)
from fleet_protocol.topics import MessageKind
from tests.conftest import MODEL, make_reading

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"
COMMAND_ID = UUID("3f0e8d4c-8a57-4d8e-9a1e-0a2b4c6d8e10")

SAMPLES: dict[MessageKind, Envelope] = {
    MessageKind.STATUS: StatusMessage(
        device_id="rsu-1",
        seq=0,
        timestamp=NOW,
        state=DeviceState.ONLINE,
        reason="connected",
        agent_version="0.1.0",
        profile="roadside-intel",
        model=MODEL,
    ),
    MessageKind.READINGS: make_reading(
        location=GeoPoint(lat=48.1, lon=11.5, accuracy_m=4.0),
        crop_jpeg=JPEG,
        sources_disagree=True,
    ),
    MessageKind.HEALTH: HealthReport(
        device_id="rsu-1",
        seq=12,
        timestamp=NOW,
        agent_version="0.1.0",
        model=MODEL,
        uptime_s=3600.5,
        fps=61.2,
        frames_dropped=3,
        stage_latency_ms={
            PipelineStage.DETECT: LatencyStats(p50_ms=9.1, p95_ms=12.0),
            PipelineStage.OCR: LatencyStats(p50_ms=2.0, p95_ms=3.5),
        },
        cpu_percent=140.0,
        rss_mb=210.0,
        temperature_c=61.5,
        disk_free_mb=20480.0,
        camera_state=CameraState.OK,
        outbox_depth=0,
        outbox_dropped=0,
    ),
    MessageKind.OTA_COMMAND: OtaCommand(
        device_id="rsu-1",
        seq=1,
        timestamp=NOW,
        command_id=COMMAND_ID,
        action=OtaAction.INSTALL,
        model_version="2026.12.0",
        target_path="models/roadsign-detector/2026.12.0/bundle.tar.gz",
        rollout_id="canary-1",
    ),
    MessageKind.OTA_STATUS: OtaStatus(
        device_id="rsu-1",
        seq=2,
        timestamp=NOW,
        command_id=COMMAND_ID,
        state=OtaState.ROLLED_BACK,
        model_version="2026.12.0",
        detail="health gate: fps 4.1 < 20",
        running_model=MODEL,
    ),
    MessageKind.CONFIG_DESIRED: DesiredConfig(
        device_id="rsu-1",
        seq=3,
        timestamp=NOW,
        config_version=4,
        settings={"reporting": {"health_interval_s": 15}, "camera": {"fps_cap": 10.5}},
    ),
    MessageKind.CONFIG_REPORTED: ReportedConfig(
        device_id="rsu-1",
        seq=4,
        timestamp=NOW,
        config_version=4,
        applied=False,
        errors=["camera.fps_cap: Input should be greater than 0"],
    ),
}


def test_every_kind_has_a_sample() -> None:
    assert set(SAMPLES) == set(MessageKind)


@pytest.mark.parametrize("kind", list(MessageKind))
def test_message_round_trips_through_bytes_unchanged(kind: MessageKind) -> None:
    message = SAMPLES[kind]
    assert isinstance(message, MESSAGE_MODELS[kind])
    payload = encode(message)
    decoded = decode(kind, payload)
    assert decoded == message
    assert encode(decoded) == payload


def test_wire_form_is_compact_json_with_utc_z_and_base64_crop() -> None:
    message = SAMPLES[MessageKind.READINGS]
    assert isinstance(message, Reading)
    wire = json.loads(encode(message))
    assert wire["schema_version"] == 1
    assert wire["timestamp"] == "2026-11-27T09:30:00.123000Z"
    assert wire["bbox"] == [412.5, 120.0, 470.0, 178.25]
    assert wire["crop_jpeg"].startswith("/9j/")  # base64 of FF D8 FF
    assert message.crop_jpeg == JPEG
    assert b" " not in encode(make_reading())


def test_null_fields_are_left_off_the_wire() -> None:
    wire = json.loads(encode(make_reading()))
    assert "location" not in wire
    assert "crop_jpeg" not in wire


def test_timestamps_with_offsets_are_normalised_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    reading = make_reading(timestamp=datetime(2026, 11, 27, 11, 0, tzinfo=cet))
    assert reading.timestamp == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert reading.timestamp.utcoffset() == timedelta(0)


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        make_reading(timestamp=datetime(2026, 11, 27, 10, 0))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"value": 50, "unit": None}, "value and unit come together"),
        ({"value": None, "unit": "mph"}, "value and unit come together"),
        ({"sign_type": "stop", "gtsrb_class_id": 14}, "carries no numeric value"),
        ({"bbox": (10, 10, 5, 20)}, "x1 < x2"),
        ({"bbox": (-1, 0, 5, 20)}, "x1 < x2"),
        ({"bbox": (0, 0, 5)}, "bbox.3\n  Field required"),
        ({"confidence": 1.5}, "less than or equal to 1"),
        ({"confidence": float("nan")}, "finite"),
        ({"value": 0}, "greater than 0"),
        ({"gtsrb_class_id": 43}, "less than 43"),
        ({"frames_seen": 0}, "greater than or equal to 1"),
        ({"seq": -1}, "greater than or equal to 0"),
        ({"seq": 2**63}, "less than or equal to"),
        ({"device_id": "veh/1"}, "should match pattern"),
        ({"sign_type": "zebra"}, "Input should be"),
        ({"crop_jpeg": b"\x89PNG\r\n\x1a\n"}, "not a JPEG"),
        ({"crop_jpeg": b"\xff\xd8\xff" + b"\0" * MAX_CROP_BYTES}, "the limit is"),
        ({"text": "x" * 257}, "at most 256"),
        ({"speed": 80}, "Extra inputs are not permitted"),
    ],
)
def test_incoherent_reading_is_refused_with_the_reason(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        make_reading(**overrides)


def test_any_speed_value_in_either_unit_is_accepted() -> None:
    assert make_reading(value=25, unit="mph", gtsrb_class_id=None).value == 25
    assert make_reading(value=110, gtsrb_class_id=None).unit == "km/h"
    end = make_reading(sign_type="end_of_speed_limit", gtsrb_class_id=6, value=80)
    assert end.sign_type == "end_of_speed_limit"


def test_status_state_must_agree_with_reason() -> None:
    with pytest.raises(ValidationError, match="contradicts"):
        StatusMessage(
            device_id="a",
            seq=0,
            timestamp=NOW,
            state=DeviceState.ONLINE,
            reason="connection_lost",
            agent_version="0.1.0",
        )
    will = StatusMessage(
        device_id="a",
        seq=0,
        timestamp=NOW,
        state=DeviceState.OFFLINE,
        reason="connection_lost",
        agent_version="0.1.0",
    )
    assert will.state == "offline"


@pytest.mark.parametrize(
    "path", ["../etc/passwd", "/abs/bundle", "models/./x", "models//x", "a/../b", "m/x y"]
)
def test_ota_target_must_be_a_plain_relative_path(path: str) -> None:
    sample = SAMPLES[MessageKind.OTA_COMMAND]
    with pytest.raises(ValidationError, match="plain relative path"):
        OtaCommand.model_validate({**sample.model_dump(), "target_path": path})


def test_messages_are_immutable(reading: Reading) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        reading.seq = 8  # type: ignore[misc]
