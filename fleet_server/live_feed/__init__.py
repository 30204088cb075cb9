"""New readings as their transactions commit, for the live feed: one backend per database.

A reading's id is not its commit order: two workers take ids from one sequence and may commit
the other way round (a transaction with ids 11-20 after one with 21-30), so asking for ids above
the last one sent misses rows. On PostgreSQL each transaction that stores readings announces
their ids (NOTIFY, `fleet_server.announcements`); the server delivers an announcement only if and
when its transaction commits, in commit order, once to every listener
(`postgresql.ListeningFeed`). SQLite lets one writer in at a time, so there ids do commit in
order and asking for ids above the last one is exact (`sqlite.PollingFeed`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Engine

from fleet_server.exceptions import StorageError
from fleet_server.live_feed.postgresql import ListeningFeed
from fleet_server.live_feed.sqlite import PollingFeed


class ReadingFeed(Protocol):
    """Ids of readings as they commit, from the moment `open` returns."""

    async def open(self) -> None:
        """Start following; every reading committed from now on will be reported."""

    async def next_ids(self, timeout: float) -> list[int]:
        """Ids committed since the last call, in commit order; [] after `timeout` s of none."""

    async def close(self) -> None:
        """Stop following and release the connection."""


FEEDS: dict[str, Callable[[Engine], ReadingFeed]] = {
    "postgresql": ListeningFeed,
    "sqlite": PollingFeed,
}


def reading_feed(engine: Engine) -> ReadingFeed:
    """The feed for `engine`'s database (not yet open)."""
    make = FEEDS.get(engine.dialect.name)
    if make is None:
        raise StorageError(f"no live feed for {engine.dialect.name} databases")
    return make(engine)
