"""Keeps the repository's online metadata fresh: a background task of each API process.

Every ``tuf.refresh_interval_s`` it runs `service.refresh_timestamp_if_due` (under the
repository's advisory lock, so of several replicas one re-signs and the rest find nothing due).
A failure is logged and tried again next time: a timestamp has two thirds of its lifetime left
when it becomes due, many intervals.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import Engine

from fleet_server.db import session_scope
from fleet_server.exceptions import FleetError
from fleet_server.repository.service import refresh_timestamp_if_due
from fleet_server.settings import ServerSettings

log = logging.getLogger(__name__)


def refresh_once(engine: Engine, settings: ServerSettings) -> list[str]:
    """One check, in its own transaction; the roles it re-signed."""
    with session_scope(engine) as session:
        return refresh_timestamp_if_due(session, settings)


async def _refresh_forever(engine: Engine, settings: ServerSettings) -> None:
    while True:
        try:
            resigned = await asyncio.to_thread(refresh_once, engine, settings)
        except FleetError as e:
            log.warning("TUF metadata refresh failed; trying again later: %s", e)
        else:
            if resigned:
                log.info("re-signed TUF metadata before it expires: %s", ", ".join(resigned))
        await asyncio.sleep(settings.tuf.refresh_interval_s)


def start_timestamp_refresher(
    engine: Engine, settings: ServerSettings
) -> asyncio.Task[None] | None:
    """The refresh task, started; None where this process holds no online key."""
    if settings.tuf.online_key_file is None:
        return None
    return asyncio.create_task(_refresh_forever(engine, settings), name="tuf-refresher")
