"""A stopping worker fits its grace period: `stop` is bounded by ``ingest.stop_timeout_s`` and
does not wait for a batch that can no longer be acknowledged; what it leaves is redelivered.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from fleet_protocol.messages import Reading
from fleet_protocol.topics import MessageKind
from fleet_server.ingest.worker import LEAVE_TIMEOUT_S, Pending
from fleet_server.settings import DatabaseSettings
from tests.conftest import make_reading
from tests.fleet_server.ingest_rig import FAST, ingest_rig, successor
from tests.waiting import wait_until


def _blocked_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        statement = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(connection.execute(statement).scalar_one()) > 0


def test_a_batch_the_flushers_last_guard_caught_does_not_hold_up_stop(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ingest_rig(database, tmp_path, devices=["veh-1"]) as rig:
        store = rig.worker._store
        failures = 1

        def failing_once(items: list[Pending]) -> list[Reading]:
            nonlocal failures
            if failures:
                failures -= 1
                raise RuntimeError("a bug outside the retried store")
            return store(items)

        monkeypatch.setattr(rig.worker, "_store", failing_once)  # our own worker's seam
        rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=0))
        wait_until(
            lambda: rig.value("roadsign_ingest_flush_errors_total", stage="flush") == 1,
            10,
            "the flusher's last guard to catch the error",
        )
        stopping = time.monotonic()
        rig.worker.stop()
        # The batch is not acknowledged and never will be in this session: nothing to wait for.
        assert time.monotonic() - stopping < LEAVE_TIMEOUT_S - 1
        assert rig.count("reading") == 0

        with successor(rig):
            wait_until(lambda: rig.count("reading") == 1, 20, "the broker to redeliver the batch")


def test_stop_returns_within_its_timeout_while_a_commit_hangs_and_loses_nothing(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    timeout_s = 2.0
    ingest = FAST.model_copy(update={"stop_timeout_s": timeout_s})
    with ingest_rig(database, tmp_path, ingest=ingest, devices=["veh-1"]) as rig:
        stopping = threading.Thread(target=rig.worker.stop)
        with rig.engine.connect() as blocker:
            # Another transaction holds the table: the worker's insert waits for it, unbounded.
            blocker.execute(text("LOCK TABLE reading IN SHARE MODE"))
            rig.publish(MessageKind.READINGS, make_reading(device_id="veh-1", seq=0))
            wait_until(lambda: _blocked_on_a_lock(rig.engine), 10, "the worker's insert to wait")
            started = time.monotonic()
            stopping.start()
            stopping.join(timeout_s + 1.5)
            took = time.monotonic() - started
            blocker.rollback()
        assert not stopping.is_alive(), f"stop() still running after {took:.1f} s"
        assert took >= timeout_s - 0.1  # it did wait for the batch, as long as it was allowed
        # The insert goes through once the table is free: stored once, nothing lost.
        wait_until(lambda: rig.count("reading") == 1, 10, "the blocked batch to be stored")
