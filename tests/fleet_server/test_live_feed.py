"""The live feed (server-sent events) sends every committed reading once, in commit order.

Two workers take reading ids from one sequence and can commit the other way round; the feed
must not lose the rows of the transaction that commits last with the lower ids.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable
from pathlib import Path

import httpx
from pydantic import SecretStr
from sqlalchemy import Engine, text
from sqlmodel import Session

from fleet_server import crud
from fleet_server.announcements import announced_ids, announcement_payloads
from fleet_server.api.main import create_app
from fleet_server.db import make_engine, session_scope
from fleet_server.ingest.worker import reading_row
from fleet_server.live_feed import reading_feed
from fleet_server.migrate import upgrade
from fleet_server.settings import AuthSettings, DatabaseSettings, ServerSettings
from tests.conftest import make_reading
from tests.fleet_server.ingest_rig import enrol
from tests.serving import serving
from tests.waiting import wait_until

ADMIN = "rsf_feed-admin-token"


def _insert(session: Session, seqs: Iterable[int]) -> None:
    rows = [reading_row(make_reading(device_id="veh-1", seq=seq)) for seq in seqs]
    crud.insert_readings(session, rows=rows)


def _ids(engine: Engine, seqs: Iterable[int]) -> list[int]:
    wanted = list(seqs)
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT id FROM reading WHERE seq = ANY(:seqs) ORDER BY id"), {"seqs": wanted}
        )
        return [int(row_id) for row_id in found.scalars()]


def _listeners(engine: Engine) -> int:
    with engine.connect() as connection:
        statement = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        return int(connection.execute(statement).scalar_one())


def test_rows_committed_out_of_id_order_reach_the_stream_once_each(
    database: DatabaseSettings,
) -> None:
    engine = make_engine(database)
    enrol(engine, "veh-1")
    settings = ServerSettings(
        database=database, auth=AuthSettings(bootstrap_admin_token=SecretStr(ADMIN))
    )
    received: list[int] = []
    connected, done = threading.Event(), threading.Event()

    def follow(url: str) -> None:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        with httpx.stream("GET", url, headers=headers, timeout=30) as response:
            for line in response.iter_lines():
                if line == ": connected":
                    connected.set()
                elif line.startswith("data: "):
                    received.append(json.loads(line.removeprefix("data: "))["id"])
                if done.is_set():
                    return

    try:
        with serving(create_app(settings, engine)) as base:
            reader = threading.Thread(target=follow, args=(f"{base}/api/v1/readings/stream",))
            reader.start()
            assert connected.wait(20), "the stream never said it was connected"
            with Session(engine) as first, Session(engine) as second:
                _insert(first, range(10))  # takes the lower ids, commits last
                _insert(second, range(10, 20))
                second.commit()
                wait_until(lambda: len(received) == 10, 20, "the second transaction's rows")
                first.commit()
            wait_until(lambda: len(received) >= 20, 20, "the first transaction's rows too")
            assert received == _ids(engine, range(10, 20)) + _ids(engine, range(10))

            done.set()  # one more reading wakes the reader, which then hangs up
            with session_scope(engine) as session:
                _insert(session, [20])
            reader.join(20)
            assert not reader.is_alive()
            assert sorted(received) == _ids(engine, range(21))  # each once
            wait_until(lambda: _listeners(engine) == 0, 20, "the stream's LISTEN to end")
    finally:
        engine.dispose()


def test_the_sqlite_feed_reports_each_reading_committed_after_it_opened_once(
    tmp_path: Path,
) -> None:
    database = DatabaseSettings(url=f"sqlite:///{tmp_path / 'fleet.sqlite3'}")
    upgrade(database)
    engine = make_engine(database)

    def insert(seqs: Iterable[int]) -> None:
        with session_scope(engine) as session:
            _insert(session, seqs)

    async def follow() -> list[list[int]]:
        feed = reading_feed(engine)
        await feed.open()
        try:
            seen = [await feed.next_ids(timeout=0.05)]
            await asyncio.to_thread(insert, range(1, 4))
            seen.append(await feed.next_ids(timeout=10))
            await asyncio.to_thread(insert, range(4, 6))
            seen.append(await feed.next_ids(timeout=10))
            seen.append(await feed.next_ids(timeout=0.05))
            return seen
        finally:
            await feed.close()

    try:
        insert([0])  # before the feed opened: not reported
        assert asyncio.run(follow()) == [[], [2, 3, 4], [5, 6], []]
    finally:
        engine.dispose()


def test_announcements_carry_every_id_in_payloads_postgresql_accepts() -> None:
    ids = [*range(1, 5000), *range(5001, 20_000, 2), 30_000]
    payloads = announcement_payloads(ids)
    assert all(len(payload.encode()) < 8000 for payload in payloads)
    assert len(payloads) > 1
    assert [i for payload in payloads for i in announced_ids(payload)] == ids
    assert announcement_payloads([7]) == ["7"]
    assert announcement_payloads([]) == []
