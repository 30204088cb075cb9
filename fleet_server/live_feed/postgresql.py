"""The live feed on PostgreSQL: LISTEN for the reading ids each committed transaction announces.

The listening connection is its own (autocommit, outside the engine's pool): it lives as long
as the API process does, one per process whatever the number of open streams
(`fanout.LiveFeed`), and must not hold one of the pool's few connections. It names itself
(`APPLICATION_NAME`) so that it can be told apart in ``pg_stat_activity``.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy import Engine

from fleet_server.announcements import READINGS_CHANNEL, announced_ids
from fleet_server.exceptions import StorageError

APPLICATION_NAME = "roadsign-fleet-live-feed"
"""The listening connection's ``application_name``."""
CONNECT_TIMEOUT_S = 10
"""Longest wait for the database while opening (streams wait behind it)."""
# An idle listener never sends: without TCP keepalives a silently dead link (a NAT or a failover
# that forgot it) would look like a quiet feed for ever. About a minute to notice.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class ListeningFeed:
    """`ReadingFeed` through LISTEN/NOTIFY on `READINGS_CHANNEL`."""

    def __init__(self, engine: Engine) -> None:
        # The engine's URL minus SQLAlchemy's driver suffix is a libpq connection URI.
        try:
            self._conninfo = make_conninfo(
                engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                application_name=APPLICATION_NAME,
                connect_timeout=CONNECT_TIMEOUT_S,
                **KEEPALIVES,
            )
        except psycopg.Error as e:
            raise StorageError(f"cannot listen for new readings: {e}") from e
        self._connection: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def open(self) -> None:
        """Connect and LISTEN: announcements of commits from now on are queued for us."""
        try:
            self._connection = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True
            )
            await self._connection.execute(
                sql.SQL("LISTEN {}").format(sql.Identifier(READINGS_CHANNEL))
            )
        except psycopg.Error as e:
            await self.close()
            raise StorageError(f"cannot listen for new readings: {e}") from e

    async def next_ids(self, timeout: float) -> list[int]:
        """The ids of the next announcements (those that arrived together), or [] on timeout."""
        if self._connection is None:
            raise StorageError("the live feed is not open")
        ids: list[int] = []
        try:
            async for notify in self._connection.notifies(timeout=timeout, stop_after=1):
                ids.extend(announced_ids(notify.payload))
        except psycopg.Error as e:
            raise StorageError(f"lost the live feed's connection: {e}") from e
        return ids

    async def close(self) -> None:
        """Close the listening connection (LISTEN ends with it)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
