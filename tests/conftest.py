"""Fixtures shared by every test package: repository paths and valid sample messages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleet_protocol.messages import HealthReport, ModelRef, Reading
from tests.tls import Pki, make_pki

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

MODEL = ModelRef(version="2026.11.0", sha256="ab" * 32)


def make_reading(**overrides: object) -> Reading:
    """A valid 80 km/h reading; `overrides` replace any field."""
    fields: dict[str, object] = {
        "device_id": "veh-0042",
        "seq": 7,
        "timestamp": datetime(2026, 11, 27, 9, 30, 0, 123000, tzinfo=UTC),
        "sign_type": "speed_limit",
        "gtsrb_class_id": 5,
        "value": 80,
        "unit": "km/h",
        "text": "80",
        "confidence": 0.93,
        "bbox": (412.5, 120.0, 470.0, 178.25),
        "track_id": 3,
        "frames_seen": 9,
        "model": MODEL,
    }
    fields.update(overrides)
    return Reading.model_validate(fields)


def make_health(**overrides: object) -> HealthReport:
    """A valid health report of a device doing fine; `overrides` replace any field."""
    fields: dict[str, object] = {
        "device_id": "veh-0042",
        "seq": 8,
        "timestamp": datetime(2026, 11, 27, 9, 30, 5, tzinfo=UTC),
        "agent_version": "0.1.0",
        "uptime_s": 10.0,
        "fps": 30.0,
        "cpu_percent": 50,
        "rss_mb": 200,
        "disk_free_mb": 1000,
        "camera_state": "ok",
        "outbox_depth": 0,
        "outbox_dropped": 0,
    }
    fields.update(overrides)
    return HealthReport.model_validate(fields)


@pytest.fixture
def reading() -> Reading:
    """A valid reading."""
    return make_reading()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA with a 127.0.0.1 server certificate and a client one, made once per session."""
    return make_pki(tmp_path_factory.mktemp("pki"))
