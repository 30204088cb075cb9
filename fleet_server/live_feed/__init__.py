"""New readings as their transactions commit, for the live feed: one backend per database.

A reading's id is not its commit order: two workers take ids from one sequence and may commit
the other way round (a transaction with ids 11-20 after one with 21-30), so asking for ids above
the last one sent misses rows. On PostgreSQL each transaction that stores readings announces
their ids (NOTIFY, `fleet_server.announcements`); the server delivers an announcement only if and
when its transaction commits, in commit order, once to every listener
(`postgresql.ListeningFeed`). SQLite lets one writer in at a time, so there ids do commit in
order and asking for ids above the last one is exact (`sqlite.PollingFeed`).

An API process follows its database once, however many streams are open: `fanout.LiveFeed`
hands what its one `ReadingFeed` reports to every stream's subscription.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from fleet_server.exceptions import StorageError
from fleet_server.live_feed.fanout import LiveFeed, ReadingFeed, Subscription
from fleet_server.live_feed.postgresql import ListeningFeed
from fleet_server.live_feed.sqlite import PollingFeed

__all__ = ["FEEDS", "LiveFeed", "ReadingFeed", "Subscription", "live_feed", "reading_feed"]

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


def live_feed(engine: Engine, *, max_streams: int) -> LiveFeed:
    """The process's live feed on `engine`'s database: one source, at most `max_streams` streams.

    Nothing is opened until the first stream subscribes.
    """
    return LiveFeed(lambda: reading_feed(engine), max_streams=max_streams)
