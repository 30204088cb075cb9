"""The live feed (server-sent events) sends every committed reading once, in commit order.

Two workers take reading ids from one sequence and can commit the other way round; the feed
must not lose the rows of the transaction that commits last with the lower ids. However many
streams are open, an API process holds one listening connection, and no more streams than its
cap; a lost connection ends the streams, and the next stream listens again.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack
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
from fleet_server.live_feed.postgresql import APPLICATION_NAME
from fleet_server.migrate import upgrade
from fleet_server.settings import AuthSettings, DatabaseSettings, HttpSettings, ServerSettings
from tests.conftest import make_reading
from tests.fleet_server.ingest_rig import enrol
from tests.serving import serving
from tests.waiting import wait_until

ADMIN = "rsf_feed-admin-token"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
STREAM = "/api/v1/readings/stream"


def _settings(database: DatabaseSettings, http: HttpSettings | None = None) -> ServerSettings:
    auth = AuthSettings(bootstrap_admin_token=SecretStr(ADMIN))
    return ServerSettings(database=database, auth=auth, http=http or HttpSettings())


def _insert(session: Session, seqs: Iterable[int]) -> None:
    rows = [reading_row(make_reading(device_id="veh-1", seq=seq)) for seq in seqs]
    crud.insert_readings(session, rows=rows)


def _store(engine: Engine, seqs: Iterable[int]) -> None:
    """Readings of veh-1 with sequence numbers `seqs`, in one committed transaction."""
    with session_scope(engine) as session:
        _insert(session, seqs)


def _ids(engine: Engine, seqs: Iterable[int]) -> list[int]:
    wanted = list(seqs)
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT id FROM reading WHERE seq = ANY(:seqs) ORDER BY id"), {"seqs": wanted}
        )
        return [int(row_id) for row_id in found.scalars()]


def _listeners(engine: Engine) -> list[str]:
    """The application names of the connections to `engine`'s database that LISTEN."""
    with engine.connect() as connection:
        statement = text(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        return [str(name) for name in connection.execute(statement).scalars()]


def test_rows_committed_out_of_id_order_reach_the_stream_once_each(
    database: DatabaseSettings,
) -> None:
    engine = make_engine(database)
    enrol(engine, "veh-1")
    settings = _settings(database)
    received: list[int] = []
    event_ids: list[str | None] = []  # each event's id field, beside its data's id
    connected, done = threading.Event(), threading.Event()

    def follow(url: str) -> None:
        with httpx.stream("GET", url, headers=AS_ADMIN, timeout=30) as response:
            event_id = None
            for line in response.iter_lines():
                if line == ": connected":
                    connected.set()
                elif line.startswith("id: "):
                    event_id = line.removeprefix("id: ")
                elif line.startswith("data: "):
                    received.append(json.loads(line.removeprefix("data: "))["id"])
                    event_ids.append(event_id)
                    event_id = None
                elif not line and done.is_set():  # at the end of an event
                    return

    try:
        with serving(create_app(settings, engine)) as base:
            reader = threading.Thread(target=follow, args=(f"{base}{STREAM}",))
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
            _store(engine, [20])
            reader.join(20)
            assert not reader.is_alive()
            assert sorted(received) == _ids(engine, range(21))  # each once
            assert event_ids == [str(row_id) for row_id in received]  # each event's id: its row's
        # The app's shutdown closed the listening connection.
        wait_until(lambda: _listeners(engine) == [], 10, "the listening connection to close")
    finally:
        engine.dispose()


async def _connected(http: httpx.AsyncClient, stack: AsyncExitStack) -> AsyncIterator[str]:
    """The lines of a new stream, past its ": connected" (kept open until `stack` closes)."""
    response = await stack.enter_async_context(http.stream("GET", STREAM))
    assert response.status_code == 200
    lines = response.aiter_lines()
    assert await anext(lines) == ": connected"
    return lines


async def _reading_ids(lines: AsyncIterator[str], count: int) -> list[int]:
    """The ids of the next `count` readings of a stream."""
    ids: list[int] = []
    async with asyncio.timeout(20):
        async for line in lines:
            if line.startswith("data: "):
                ids.append(json.loads(line.removeprefix("data: "))["id"])
                if len(ids) == count:
                    return ids
    raise AssertionError(f"the stream ended after {ids}")


def test_open_streams_share_one_listening_connection_and_one_past_the_cap_gets_503(
    database: DatabaseSettings, engine: Engine
) -> None:
    cap = 3
    enrol(engine, "veh-1")
    app = create_app(_settings(database, HttpSettings(max_live_streams=cap)), engine)

    async def scenario(base: str) -> None:
        async with (
            httpx.AsyncClient(base_url=base, headers=AS_ADMIN, timeout=20) as http,
            AsyncExitStack() as streams,
        ):
            first = await streams.enter_async_context(AsyncExitStack())
            followers = [await _connected(http, first)]
            followers += [await _connected(http, streams) for _ in range(cap - 1)]
            assert await asyncio.to_thread(_listeners, engine) == [APPLICATION_NAME]
            refused = await http.get(STREAM)
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) > 0

            await asyncio.to_thread(_store, engine, range(5))
            stored = await asyncio.to_thread(_ids, engine, range(5))
            for lines in followers:
                assert await _reading_ids(lines, 5) == stored

            await first.aclose()  # one client hangs up: its place is free again
            await asyncio.to_thread(
                wait_until, lambda: app.state.live_feed.open_streams < cap, 10, "a place free"
            )
            await _connected(http, streams)
        assert await asyncio.to_thread(_listeners, engine) == [APPLICATION_NAME]

    with serving(app) as base:
        asyncio.run(scenario(base))
    wait_until(lambda: _listeners(engine) == [], 10, "the listening connection to close")


def test_a_lost_listening_connection_ends_the_streams_and_the_next_stream_listens_again(
    database: DatabaseSettings, engine: Engine
) -> None:
    enrol(engine, "veh-1")

    def terminate_listener() -> None:
        with engine.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = :name"
                ),
                {"name": APPLICATION_NAME},
            )

    async def scenario(base: str) -> None:
        async with httpx.AsyncClient(base_url=base, headers=AS_ADMIN, timeout=20) as http:
            async with AsyncExitStack() as first:
                lines = await _connected(http, first)
                await asyncio.to_thread(terminate_listener)
                async with asyncio.timeout(20):  # the stream ends: it missed what came meanwhile
                    assert [line async for line in lines if line.startswith("data: ")] == []
            async with AsyncExitStack() as second:
                lines = await _connected(http, second)
                assert await asyncio.to_thread(_listeners, engine) == [APPLICATION_NAME]
                await asyncio.to_thread(_store, engine, range(3))
                assert await _reading_ids(lines, 3) == await asyncio.to_thread(
                    _ids, engine, range(3)
                )

    with serving(create_app(_settings(database), engine)) as base:
        asyncio.run(scenario(base))


def test_on_sqlite_every_open_stream_gets_each_reading_once(tmp_path: Path) -> None:
    database = DatabaseSettings(url=f"sqlite:///{tmp_path / 'fleet.sqlite3'}")
    upgrade(database)
    engine = make_engine(database)
    enrol(engine, "veh-1")

    async def scenario(base: str) -> None:
        async with (
            httpx.AsyncClient(base_url=base, headers=AS_ADMIN, timeout=20) as http,
            AsyncExitStack() as streams,
        ):
            followers = [await _connected(http, streams) for _ in range(2)]
            await asyncio.to_thread(_store, engine, range(3))
            for lines in followers:
                assert await _reading_ids(lines, 3) == [1, 2, 3]

    try:
        with serving(create_app(_settings(database), engine)) as base:
            asyncio.run(scenario(base))
    finally:
        engine.dispose()


def test_the_sqlite_feed_reports_each_reading_committed_after_it_opened_once(
    tmp_path: Path,
) -> None:
    database = DatabaseSettings(url=f"sqlite:///{tmp_path / 'fleet.sqlite3'}")
    upgrade(database)
    engine = make_engine(database)

    async def follow() -> list[list[int]]:
        feed = reading_feed(engine)
        await feed.open()
        try:
            seen = [await feed.next_ids(timeout=0.05)]
            await asyncio.to_thread(_store, engine, range(1, 4))
            seen.append(await feed.next_ids(timeout=10))
            await asyncio.to_thread(_store, engine, range(4, 6))
            seen.append(await feed.next_ids(timeout=10))
            seen.append(await feed.next_ids(timeout=0.05))
            return seen
        finally:
            await feed.close()

    try:
        _store(engine, [0])  # before the feed opened: not reported
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
