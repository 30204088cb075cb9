"""``GET /api/v1/readings`` over a real PostgreSQL: each filter, and cursor pages across them.

Twelve readings differ in device, time (three share one instant), sign type, value and place
(two have none). Each case names the readings that match it by hand; the API must return
exactly those, newest first (ties by id, newest first), page by page without a gap or a repeat.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from fleet_protocol.messages import GeoPoint
from fleet_server import crud
from fleet_server.db import session_scope
from fleet_server.ingest.worker import reading_row
from tests.conftest import make_reading
from tests.fleet_server.auth_support import ADMIN
from tests.fleet_server.ingest_rig import enrol

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


class Seed(NamedTuple):
    """One stored reading: who, when (minutes after T0), what and where."""

    device_id: str
    minute: int
    sign_type: str
    value: float | None
    place: tuple[float, float] | None  # lat, lon


SEEDS = {  # by seq
    0: Seed("veh-a", 0, "speed_limit", 50, (48.10, 11.50)),
    1: Seed("veh-a", 1, "speed_limit", 80, (48.20, 11.60)),
    2: Seed("veh-b", 2, "speed_limit", 50, (48.30, 11.70)),
    3: Seed("veh-b", 3, "stop", None, (48.12, 11.52)),
    4: Seed("veh-a", 4, "stop", None, None),
    5: Seed("veh-a", 5, "speed_limit", 50, None),
    6: Seed("veh-b", 6, "speed_limit", 80, (48.15, 11.55)),
    7: Seed("veh-a", 7, "speed_limit", 50, (48.11, 11.51)),
    8: Seed("veh-a", 7, "speed_limit", 80, (48.11, 11.51)),
    9: Seed("veh-b", 7, "speed_limit", 50, (48.40, 11.80)),
    10: Seed("veh-b", 8, "yield", None, (48.13, 11.53)),
    11: Seed("veh-a", 9, "speed_limit", 120, (48.14, 11.54)),
}
# Stored out of seq order, so that ids (the tie-breaker) do not follow seq.
INSERT_ORDER = [8, 3, 11, 0, 9, 5, 1, 7, 10, 2, 6, 4]

CASES: dict[str, tuple[dict[str, str | float], set[int]]] = {
    "everything": ({}, set(SEEDS)),
    "device_id": ({"device_id": "veh-b"}, {2, 3, 6, 9, 10}),
    "since is inclusive": ({"since": (T0 + timedelta(minutes=7)).isoformat()}, {7, 8, 9, 10, 11}),
    "until is exclusive": ({"until": (T0 + timedelta(minutes=3)).isoformat()}, {0, 1, 2}),
    "since and until": (
        {
            "since": (T0 + timedelta(minutes=3)).isoformat(),
            "until": (T0 + timedelta(minutes=7)).isoformat(),
        },
        {3, 4, 5, 6},
    ),
    "sign_type": ({"sign_type": "stop"}, {3, 4}),
    "value": ({"value": 50}, {0, 2, 5, 7, 9}),
    # Edges included (7 and 8 on the south-west corner, 6 on the north-east); no place: out.
    "bbox": ({"bbox": "11.51,48.11,11.55,48.15"}, {3, 6, 7, 8, 10, 11}),
    "all at once": (
        {
            "device_id": "veh-a",
            "value": 80,
            "since": (T0 + timedelta(minutes=1)).isoformat(),
            "bbox": "11.5,48.1,11.65,48.25",
        },
        {1, 8},
    ),
    "nothing matches": ({"device_id": "veh-c"}, set()),
}


@pytest.fixture
def ids(engine: Engine) -> dict[int, int]:
    """Store the seeds; their row ids by seq."""
    enrol(engine, "veh-a", "veh-b")
    with session_scope(engine) as session:
        for seq in INSERT_ORDER:  # one at a time: ids in exactly this order
            seed = SEEDS[seq]
            speed = seed.value is not None
            reading = make_reading(
                device_id=seed.device_id,
                seq=seq,
                timestamp=T0 + timedelta(minutes=seed.minute),
                sign_type=seed.sign_type,
                gtsrb_class_id=None,
                value=seed.value,
                unit="km/h" if speed else None,
                text=None,
                location=GeoPoint(lat=seed.place[0], lon=seed.place[1]) if seed.place else None,
            )
            crud.insert_readings(session, rows=[reading_row(reading)])
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT seq, id FROM reading")).tuples().all())


def _pages(client: TestClient, params: dict[str, str | float], limit: int) -> list[list[int]]:
    """The seqs of every page, following the cursor to the end."""
    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get(
            "/api/v1/readings", params=query, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append([item["seq"] for item in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) <= len(SEEDS), "the cursor never ends"


def test_each_filter_returns_exactly_its_readings_newest_first_across_pages(
    client: TestClient, ids: dict[int, int]
) -> None:
    # One database for every case: a fresh one each would cost a second apiece.
    for case, (params, matching) in CASES.items():
        expected = sorted(matching, key=lambda seq: (SEEDS[seq].minute, ids[seq]), reverse=True)
        assert _pages(client, params, limit=1000) == [expected], case
        pages = _pages(client, params, limit=2)
        assert [seq for page in pages for seq in page] == expected, case
        # Full pages until the last; a cursor only while more remain.
        sizes = [2] * (len(expected) // 2) + ([len(expected) % 2] if len(expected) % 2 else [])
        assert [len(page) for page in pages] == (sizes or [0]), case
