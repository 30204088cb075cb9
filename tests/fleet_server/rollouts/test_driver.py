"""The rollout driver on the real PostgreSQL and TUF repository: a staged rollout over ten
simulated devices completes stage by stage with signed assignments; a reading-quality
regression pauses it and signs rollbacks for the failing stage only; one driver steps at a
time; a driver killed between storing a step and carrying it out leaves nothing undone."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from fleet_protocol.messages import OtaAction
from fleet_server import crud
from fleet_server.db import make_engine, session_scope
from fleet_server.exceptions import RolloutConflict
from fleet_server.ingest.worker import health_row
from fleet_server.migrate import upgrade
from fleet_server.models import DeviceSelector, RolloutCreate
from fleet_server.rollouts.driver import carry_out, drive_once, step_all
from fleet_server.rollouts.requests import create_rollout
from fleet_server.rollouts.values import RolloutStatus
from fleet_server.settings import DatabaseSettings
from tests.conftest import make_health
from tests.fleet_server.rollouts.driver_support import (
    DEVICES,
    NEW_VERSION,
    RID,
    T0,
    TICK,
    Fleet,
    RecordingPublisher,
    event_kinds,
    install,
    make_fleet,
    newly_assigned,
    pending_action_count,
    report,
    signed_assignments,
    simulate,
    start_rollout,
    stored_state,
)
from tests.waiting import wait_until


@pytest.fixture
def fleet(database: DatabaseSettings, engine: Engine, tmp_path: Path) -> Fleet:
    return make_fleet(database, engine, tmp_path)


def test_a_three_stage_rollout_completes_in_order_with_every_assignment_signed(
    fleet: Fleet,
) -> None:
    start_rollout(fleet)
    publisher = RecordingPublisher()
    now = T0
    stage_of_assignment: dict[str, int] = {}
    for _ in range(12):
        drive_once(fleet.engine, fleet.settings, publisher, now)
        state = stored_state(fleet.engine, RID)
        fresh = newly_assigned(fleet, now)
        for device_id in fresh:
            stage_of_assignment[device_id] = state.stage
        install(fleet, fresh, now)
        if state.status is RolloutStatus.COMPLETED:
            break
        now += TICK
    state = stored_state(fleet.engine, RID)
    assert state.status is RolloutStatus.COMPLETED, [v.reason for v in state.verdicts]
    # Stage by stage: 2 devices, then 3 more, then the last 5.
    assert sorted(stage_of_assignment.values()) == [0] * 2 + [1] * 3 + [2] * 5
    started = [stage for kind, stage in event_kinds(fleet.engine, RID) if kind == "stage_started"]
    assert started == [0, 1, 2]
    assignments = signed_assignments(fleet.engine)
    assert set(assignments) == set(DEVICES)
    for custom in assignments.values():
        assert custom["target"] == fleet.new_target
        assert custom["rollback"] is False
        assert custom["rollout_id"] == RID
    assert pending_action_count(fleet.engine) == 0
    nudged = {c.device_id for c in publisher.sent if c.action is OtaAction.INSTALL}
    assert nudged == set(DEVICES)


def test_a_reading_quality_regression_pauses_and_rolls_back_only_the_first_stage(
    fleet: Fleet,
) -> None:
    start_rollout(fleet)
    publisher = RecordingPublisher()
    drive_once(fleet.engine, fleet.settings, publisher, T0)
    first = newly_assigned(fleet, T0)
    assert len(first) == 2
    install(fleet, first, T0, confidence=0.5)  # the new model reads signs far less surely
    drive_once(fleet.engine, fleet.settings, publisher, T0 + TICK)
    state = stored_state(fleet.engine, RID)
    assert state.status is RolloutStatus.PAUSED
    assert "mean_confidence_drop" in state.pause_reason
    assignments = signed_assignments(fleet.engine)
    assert set(assignments) == set(first)  # nobody else was ever assigned anything
    for custom in assignments.values():
        assert custom["target"] == fleet.old_target
        assert custom["rollback"] is True
    rolled_back = {c.device_id for c in publisher.sent if c.action is OtaAction.ROLLBACK}
    assert rolled_back == set(first)
    # Paused: further ticks move nothing.
    drive_once(fleet.engine, fleet.settings, publisher, T0 + 3 * TICK)
    assert set(signed_assignments(fleet.engine)) == set(first)


def test_the_after_window_starts_when_the_new_model_took_over_not_at_the_assignment(
    fleet: Fleet,
) -> None:
    start_rollout(fleet)
    publisher = RecordingPublisher()
    drive_once(fleet.engine, fleet.settings, publisher, T0)
    first = newly_assigned(fleet, T0)
    took_over = T0 + timedelta(hours=5)
    # Five hours offline or downloading, the old model reading surely all along: counted as
    # "after", they would dilute the new model's 40 minutes below the confidence gate.
    simulate(fleet, first, start=T0, end=took_over, confidence=0.9)
    report(fleet, first, state="active", rollout_id=RID, received_at=took_over)
    simulate(fleet, first, start=took_over, end=took_over + 2 * TICK, confidence=0.5)
    drive_once(fleet.engine, fleet.settings, publisher, took_over + 2 * TICK)
    state = stored_state(fleet.engine, RID)
    assert state.status is RolloutStatus.PAUSED, [v.reason for v in state.verdicts]
    assert "mean_confidence_drop" in state.pause_reason


def test_only_one_of_two_drivers_steps_while_the_other_holds_the_lock(fleet: Fleet) -> None:
    start_rollout(fleet)  # stage 1's assignments wait in the outbox
    with session_scope(fleet.engine) as holder:
        assert crud.try_lock_driver(holder)  # another replica, mid-tick
        blocked = drive_once(fleet.engine, fleet.settings, RecordingPublisher(), T0)
        assert not blocked.locked
        assert blocked.stepped == []
        assert blocked.actions_done == 0
        assert signed_assignments(fleet.engine) == {}
    publisher = RecordingPublisher()
    after = drive_once(fleet.engine, fleet.settings, publisher, T0)
    assert after.locked
    assert after.stepped == [RID]
    assert len(signed_assignments(fleet.engine)) == 2
    assert len(publisher.sent) == 2


def test_a_driver_killed_after_storing_a_step_leaves_its_actions_to_the_next(
    fleet: Fleet,
) -> None:
    start_rollout(fleet)
    drive_once(fleet.engine, fleet.settings, RecordingPublisher(), T0)
    first = newly_assigned(fleet, T0)
    install(fleet, first, T0)
    step_all(fleet.engine, fleet.settings, T0 + TICK)  # the stage soaks
    # The next step starts stage 2: the driver stores state, events and actions, and "dies"
    # before carrying them out.
    now = T0 + 2 * TICK
    stored = step_all(fleet.engine, fleet.settings, now)
    assert stored.actions_stored == 2  # assign stage 2, nudge it
    second_stage = newly_assigned(fleet, now)
    assert len(second_stage) == 3
    assert set(signed_assignments(fleet.engine)) == set(first)
    events = event_kinds(fleet.engine, RID)
    # Another driver ticks at the same moment: its step adds nothing, and it carries out what
    # the first one stored.
    publisher = RecordingPublisher()
    second = drive_once(fleet.engine, fleet.settings, publisher, now)
    assert second.actions_stored == 0
    assert second.actions_done == 2
    assert event_kinds(fleet.engine, RID) == events
    assert set(signed_assignments(fleet.engine)) == set(first) | set(second_stage)
    assert {c.device_id for c in publisher.sent} == set(second_stage)
    assert carry_out(fleet.engine, fleet.settings, publisher, now) == 0
    assert pending_action_count(fleet.engine) == 0


def test_the_demo_sqlite_store_drives_a_rollout_to_completion_without_a_lock(
    tmp_path: Path,
) -> None:
    database = DatabaseSettings(url=f"sqlite:///{tmp_path / 'fleet.sqlite3'}")
    upgrade(database)
    engine = make_engine(database)
    try:
        test_a_three_stage_rollout_completes_in_order_with_every_assignment_signed(
            make_fleet(database, engine, tmp_path)
        )
    finally:
        engine.dispose()


def test_shadow_numbers_from_health_reports_fail_the_stage_when_the_models_disagree(
    fleet: Fleet,
) -> None:
    start_rollout(fleet)
    drive_once(fleet.engine, fleet.settings, RecordingPublisher(), T0)
    first = newly_assigned(fleet, T0)
    install(fleet, first, T0)  # healthy, reading as well as before ...
    rows = [
        health_row(
            make_health(
                device_id=device_id,
                seq=10**9 + i,
                timestamp=T0 + timedelta(minutes=30, seconds=1),
                shadow={
                    "previous_model": {"version": "1.0.0", "sha256": "a" * 64},
                    "frames_compared": 1000,
                    "tracks_compared": 100,
                    "tracks_agreeing": 50,  # ... but the old model reads half the signs otherwise
                },
            )
        )
        for i, device_id in enumerate(first)
    ]
    with session_scope(fleet.engine) as session:
        crud.insert_health(session, rows=rows)
    drive_once(fleet.engine, fleet.settings, RecordingPublisher(), T0 + TICK)
    state = stored_state(fleet.engine, RID)
    assert state.status is RolloutStatus.PAUSED
    assert "shadow_agreement 0.5 < threshold 0.9" in state.pause_reason


def advisory_waiters(engine: Engine) -> int:
    with engine.connect() as connection:
        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        return int(connection.execute(text(query)).scalar_one())


def test_two_concurrent_requests_over_the_same_devices_create_one_rollout(fleet: Fleet) -> None:
    def body(rollout_id: str) -> RolloutCreate:
        return RolloutCreate(
            rollout_id=rollout_id,
            model_name="roadsign-test",
            model_version=NEW_VERSION,
            selector=DeviceSelector(device_ids=DEVICES[:2]),
        )

    outcome: list[BaseException | None] = []

    def second() -> None:
        try:
            with session_scope(fleet.engine) as session:
                create_rollout(session, body("r-second"), T0)
        except RolloutConflict as e:
            outcome.append(e)
        else:
            outcome.append(None)

    with session_scope(fleet.engine) as session:
        create_rollout(session, body("r-first"), T0)  # holds the creation lock until commit
        thread = threading.Thread(target=second)
        thread.start()
        # The second request waits for the lock instead of racing past the overlap check.
        wait_until(lambda: advisory_waiters(fleet.engine) == 1, 10, "the second to wait")
        assert thread.is_alive()
    thread.join(10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], RolloutConflict)
    assert "rollout 'r-first'" in str(outcome[0])
