"""Which devices the worker admits: a decommissioning takes effect within the list's TTL.

With an open broker and no broker files managed by the server, the worker's own device list is
all that stops a retired device: here it is re-read at least every `known_devices_ttl_s`.
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr

from fleet_protocol.topics import MessageKind
from fleet_server.api.main import create_app
from fleet_server.settings import AuthSettings, DatabaseSettings
from tests.conftest import make_health, make_reading
from tests.fleet_server.ingest_rig import FAST, Rig, enrol, ingest_rig
from tests.waiting import wait_until

ADMIN = "rsf_devices-admin-token"
TTL_S = 1.0
REJECTED = "roadsign_ingest_rejected_total"


def _stored_or_rejected(rig: Rig, seq: int, rejected_before: float) -> str:
    """Publish reading `seq` of veh-1 and wait until the worker stored or rejected it."""
    rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=seq))

    def outcome() -> str:
        if rig.value(REJECTED, reason="decommissioned") > rejected_before:
            return "rejected"
        with rig.engine.connect() as connection:
            stored = connection.exec_driver_sql(
                "SELECT count(*) FROM reading WHERE device_id = 'veh-1' AND seq = %(seq)s",
                {"seq": seq},
            ).scalar_one()
        return "stored" if stored else ""

    return wait_until(outcome, 10, f"reading {seq} stored or rejected")


def test_a_decommissioned_devices_next_messages_are_rejected_within_the_ttl(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    ingest = FAST.model_copy(update={"known_devices_ttl_s": TTL_S})
    with ingest_rig(database, tmp_path, ingest=ingest, devices=["veh-1", "veh-2"]) as rig:
        for seq in range(3):
            rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=seq))
        wait_until(lambda: rig.count("reading") == 3, 10, "veh-1's first readings stored")

        settings = rig.settings.model_copy(
            update={"auth": AuthSettings(bootstrap_admin_token=SecretStr(ADMIN))}
        )
        assert settings.enrolment.password_file is None  # the broker's files are not managed
        with TestClient(create_app(settings, rig.engine)) as api:
            retired = api.post(
                "/api/v1/devices/veh-1/decommission", headers={"Authorization": f"Bearer {ADMIN}"}
            )
        assert retired.status_code == 200
        decommissioned_at = time.monotonic()

        # Readings published from now on may still be stored while the worker's list is within
        # its TTL; each is awaited (stored or rejected) before the next, until one is rejected.
        seq = 3
        while _stored_or_rejected(rig, seq, 0) == "stored":
            assert time.monotonic() - decommissioned_at < TTL_S + 3, "never rejected"
            seq += 1
        assert time.monotonic() - decommissioned_at < TTL_S + 3
        stored = rig.count("reading")

        # From then on every message of the device is rejected, by that reason; others go on.
        for later in range(seq + 1, seq + 4):
            rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=later))
        rig.publish(MessageKind.HEALTH, make_health(device_id="veh-1", seq=seq + 4))
        rig.publish(MessageKind.READINGS, make_reading(device_id="veh-2", seq=1))
        rig.publish(MessageKind.READINGS, make_reading(device_id="ghost-7", seq=1))
        wait_until(
            lambda: (
                rig.value(REJECTED, reason="decommissioned") == 5
                and rig.value(REJECTED, reason="unknown_device") == 1
                and rig.count("reading") == stored + 1
            ),
            10,
            "veh-1's later messages rejected as decommissioned, ghost-7's as unknown",
        )
        assert rig.count("healthsample") == 0
        assert rig.value("roadsign_ingested_total", kind="readings") == stored + 1


def test_a_device_enrolled_after_the_worker_started_is_admitted_at_once(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    # A long TTL: only the look-up of a device missing from the list can let it in, and it
    # publishes at once (a refresh on a miss at most once a second used to reject it).
    ingest = FAST.model_copy(update={"known_devices_ttl_s": 3600})
    with ingest_rig(database, tmp_path, ingest=ingest, devices=["veh-1"]) as rig:
        rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=1))
        wait_until(lambda: rig.count("reading") == 1, 10, "veh-1's reading stored")
        enrol(rig.engine, "veh-new")
        rig.publish(MessageKind.READINGS, make_reading(device_id="veh-new", seq=1))
        wait_until(lambda: rig.count("reading") == 2, 10, "the new device's reading stored")
        assert rig.value(REJECTED, reason="unknown_device") == 0
