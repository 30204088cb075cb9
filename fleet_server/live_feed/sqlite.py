"""The live feed on SQLite (the demo's store): poll for ids above the last one reported.

Exact there, unlike on PostgreSQL: SQLite admits one writing transaction at a time, so a
transaction that commits later also took its ids later.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import Engine

from fleet_server import crud
from fleet_server.db import session_scope

POLL_S = 0.5
"""How often the database is asked for new readings, seconds."""
PAGE = 1000


class PollingFeed:
    """`ReadingFeed` by polling `crud.reading_ids_after`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._last_id = 0

    def _max_id(self) -> int:
        with session_scope(self._engine) as session:
            return crud.max_reading_id(session)

    def _ids_after(self) -> list[int]:
        with session_scope(self._engine) as session:
            return crud.reading_ids_after(session, after_id=self._last_id, limit=PAGE)

    async def open(self) -> None:
        """Start after the newest reading stored now."""
        self._last_id = await asyncio.to_thread(self._max_id)

    async def next_ids(self, timeout: float) -> list[int]:
        """Ids stored since the last call, polled every `POLL_S`, or [] after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            ids = await asyncio.to_thread(self._ids_after)
            if ids:
                self._last_id = ids[-1]
                return ids
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            await asyncio.sleep(min(POLL_S, left))

    async def close(self) -> None:
        """Nothing to release: each poll uses a pooled connection briefly."""
